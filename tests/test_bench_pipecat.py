"""``flowvoice bench pipecat``: the flowvoice side always, the comparison when pipecat is here."""

from __future__ import annotations

import importlib.util

import anyio
import pytest

from flowvoice.bench import pipecat_compare


def test_flowvoice_sink_sees_no_old_turn_frame_after_new_turn():
    result = anyio.run(pipecat_compare.flowvoice_interrupts, 2)
    assert result["late_max"] == 0
    # Generous bounds for a busy machine (the backlog an unpreempted chain would play out is
    # ~250 ms; the benchmark reports the real figures, a few ms).
    assert result["clear_max_ms"] < 200  # just the new_turn() call
    assert result["first_new_p50_ms"] < 200  # the next turn flows


def test_without_pipecat_main_says_what_to_install(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "pipecat" else real_find_spec(name, *args),
    )
    assert pipecat_compare.main(frames=10, repeats=1) == 1
    assert "pip install pipecat-ai" in capsys.readouterr().out


@pytest.mark.skipif(
    importlib.util.find_spec("pipecat") is None,
    reason="pipecat-ai is not installed (pip install pipecat-ai to run the comparison)",
)
def test_comparison_runs_with_tiny_counts(capsys):
    assert pipecat_compare.main(markdown=True, frames=50, repeats=2) == 0
    out = capsys.readouterr().out
    assert "| flowvoice |" in out
    assert out.count("| pipecat ") == 4  # defaults and lean, in both tables
