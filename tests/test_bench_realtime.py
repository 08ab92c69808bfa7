"""``flowvoice bench realtime``'s parts that need no speech: reading the server's trace from
/metrics, the encoding timer, and the question audio."""

from __future__ import annotations

from pathlib import Path

from serving import running_server

from flowvoice.bench.realtime import RATE, encoding_us, question_audio, server_first_audio
from flowvoice.graph.spec import load_graph
from flowvoice.server import create_app

ROOT = Path(__file__).resolve().parents[1]


def test_server_first_audio_reads_the_metrics_histogram() -> None:
    app = create_app(load_graph(ROOT / "graphs" / "echo.yaml"))
    app.state.server.metrics.observe_event(
        {"type": "metrics", "turn": 1, "latency_ms": {"first_audio_sent": 640.0}}
    )
    with running_server(app) as server:
        total_ms, count = server_first_audio(server.port)
    assert count == 1 and abs(total_ms - 640.0) < 0.01


def test_encoding_times_both_protocols() -> None:
    timings = encoding_us(str(ROOT / "graphs" / "default.yaml"), slices=20)
    assert set(timings) == {"/ws", "/v1/realtime"}
    assert all(0 < us < 100_000 for us in timings.values())


def test_question_audio_ends_its_speech_before_the_silence() -> None:
    samples, speech_end = question_audio("What is the capital of France?")
    assert 0.3 * RATE < speech_end < len(samples)
    assert not samples[speech_end:].any()
    assert abs(samples[:speech_end].astype(int)).max() > 1000
