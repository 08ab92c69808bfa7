"""``flowvoice bench load`` end to end: a real ``flowvoice run`` of the light graph, one client."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowvoice.bench.load import run_point

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(90)
def test_one_session_gets_its_spoken_question_answered_and_timed(tmp_path: Path):
    point = run_point(
        str(ROOT / "graphs" / "light.yaml"),
        sessions=1,
        questions=1,
        log_dir=tmp_path,
        warmup=False,
        start_timeout=60,
    )
    assert not point.errors, point.errors
    [exchange] = point.exchanges
    assert exchange.reply.strip(), exchange
    assert exchange.client_ms is not None and exchange.client_ms > 0, exchange
    assert exchange.latency_ms.get("first_audio_sent", 0) > 0, exchange
    assert point.answered == [exchange]
    assert point.rss_peak_mb >= point.rss_idle_mb > 0
