"""``flowvoice bench whisper``: the decoding benchmark runs, reports percentiles, transcribes."""

from __future__ import annotations

from flowvoice.bench import whisper


def test_bench_whisper_has_enough_clips():
    assert len(whisper.SENTENCES) * len(whisper.SPEEDS) >= 60  # finals, besides the partials


def test_bench_whisper_compares_old_and_new_decoding(monkeypatch, capsys):
    monkeypatch.setattr(whisper, "SENTENCES", whisper.SENTENCES[:2])
    monkeypatch.setattr(whisper, "SPEEDS", whisper.SPEEDS[1:2])
    assert whisper.main(windows=[15], threads=1, markdown=True) == 0
    out = capsys.readouterr().out
    assert "| decoding | encoder window | ms p50 | p90 | p99 | max | mean WER (finals) |" in out
    assert whisper.BEFORE[0] in out and whisper.DEFAULT[0] in out

    clips = whisper.clips()
    assert any(c.final for c in clips) and any(not c.final for c in clips)
    rows = whisper.measure([15, 30], threads=1, audio=clips)
    assert [(r.label, r.window) for r in rows] == [
        (whisper.BEFORE[0], "15 s"),
        (whisper.CAPPED[0], "10 s, +5 s"),
        (whisper.FIXED[0], "15 s"),
        (whisper.DEFAULT[0], "10 s, +5 s"),
        (whisper.FIXED[0], "30 s"),
    ]
    for row in rows:
        assert len(row.times_ms) == len(clips)
        assert 0 < row.percentile(50) <= row.percentile(90) <= row.percentile(99)
        assert row.percentile(99) <= max(row.times_ms) and row.mean_wer <= 0.5
