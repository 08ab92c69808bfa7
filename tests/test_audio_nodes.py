"""audio.file_source, audio.file_sink and audio.resample on real WAV files."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import anyio
import numpy as np
import pytest

from flowvoice.graph.spec import load_graph
from flowvoice.node import NodeSetupError
from flowvoice.nodes.audio import read_wav, write_wav
from flowvoice.runtime.session import Session, SessionError


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)


def run_graph(text: str) -> Session:
    session = Session(load_graph("audio.yaml", text=text))
    anyio.run(session.run)
    return session


def test_file_source_fast_then_resample_then_sink(tmp_path: Path):
    src, out = tmp_path / "in.wav", tmp_path / "out.wav"
    write_wav(src, tone(1.0, 48000), 48000)
    session = run_graph(
        f"""
nodes:
  src: {{type: audio.file_source, params: {{path: "{src}", realtime: false, frame_ms: 20}}}}
  rs: {{type: audio.resample, params: {{sample_rate: 16000}}}}
  sink: {{type: audio.file_sink, params: {{path: "{out}"}}}}
edges:
  - src.audio -> rs.audio
  - rs.audio -> sink.audio
"""
    )
    samples, rate = read_wav(out)
    assert rate == 16000
    assert abs(len(samples) - 16000) <= 2  # the filter tail is flushed at end of stream
    # The resampled tone keeps its frequency: the spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(samples[:8000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) <= 4
    assert session.nodes["sink"].turns  # audio was collected under turn 0


def test_file_source_realtime_paces_like_a_microphone(tmp_path: Path):
    src = tmp_path / "in.wav"
    write_wav(src, tone(0.6, 16000), 16000)
    start = time.perf_counter()
    session = run_graph(
        f"""
nodes:
  src: {{type: audio.file_source, params: {{path: "{src}", frame_ms: 20}}}}
  sink: {{type: test.collect}}
edges:
  - src.audio -> sink.frames
"""
    )
    elapsed = time.perf_counter() - start
    frames = session.nodes["sink"].frames
    assert len(frames) == 30
    assert all(len(f.samples) == 320 for f in frames)
    assert 0.5 <= elapsed < 5.0  # real time, generous bound
    gaps = np.diff([f.t_ns for f in frames]) / 1e6
    assert np.median(gaps) == pytest.approx(20, abs=5)


def test_stereo_wav_is_mixed_down(tmp_path: Path):
    path = tmp_path / "stereo.wav"
    left = tone(0.1, 8000)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.stack([left, left], axis=1).astype("<i2").tobytes())
    samples, rate = read_wav(path)
    assert rate == 8000
    assert np.array_equal(samples, left)


def test_non_pcm16_and_missing_files_are_clear_errors(tmp_path: Path):
    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(100))
    with pytest.raises(NodeSetupError, match="expected 16-bit PCM WAV, got 8-bit"):
        read_wav(path)
    with pytest.raises(SessionError, match="cannot read WAV file .*missing.wav"):
        run_graph(
            f"""
nodes:
  src: {{type: audio.file_source, params: {{path: "{tmp_path}/missing.wav"}}}}
  sink: {{type: test.collect}}
edges:
  - src.audio -> sink.frames
"""
        )
