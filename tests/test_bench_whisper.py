"""``flowvoice bench whisper``: the encoder-window benchmark runs and transcribes well."""

from __future__ import annotations

from flowvoice.bench import whisper


def test_bench_whisper_times_each_window(monkeypatch, capsys):
    monkeypatch.setattr(whisper, "SENTENCES", whisper.SENTENCES[:2])
    assert whisper.main(windows=[15], threads=1, markdown=True) == 0
    out = capsys.readouterr().out
    assert "| encoder window | ms per utterance p50 / max | mean WER |" in out
    ((window, p50, worst, error),) = whisper.measure([15], threads=1)
    assert window == 15 and 0 < p50 <= worst and error <= 0.2
