"""Synthetic speech for tests: espeak-ng sentences, conversations with gaps, WAV I/O and WER."""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import soxr

from flowvoice.bench.wer import normalize_text, wer  # noqa: F401  (tests import them here)


@functools.lru_cache(maxsize=64)
def _speak_22k(text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text],
            check=True,
            timeout=30,
        )
        samples, rate = read_wav(path)
    assert rate == 22050, rate
    return samples


def speak(text: str, sample_rate: int = 16000) -> np.ndarray:
    """``text`` spoken by espeak-ng (en-us, 160 wpm) as mono int16 at ``sample_rate``."""
    samples = _speak_22k(text)
    if sample_rate == 22050:
        return samples.copy()
    return soxr.resample(samples, 22050, sample_rate).astype(np.int16)


def speech_bounds(
    samples: np.ndarray, sample_rate: int, threshold: float = 0.02
) -> tuple[int, int]:
    """First and last sample whose amplitude exceeds ``threshold`` of full scale."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold * 32768)
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, 0)


def conversation(
    texts: list[str],
    gap_s: float | list[float] = 1.5,
    sample_rate: int = 16000,
    noise_db: float | None = None,
    lead_s: float = 0.5,
    tail_s: float = 1.5,
    seed: int = 0,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Utterances separated by ``gap_s`` of silence (or white noise at ``noise_db`` dBFS).

    ``gap_s`` is one gap for all, or a list with the gap after each utterance but the last.
    Returns the int16 samples and each utterance's audible (start_s, end_s): espeak's leading
    and trailing near-silence is trimmed so the gaps and bounds are exact.
    """
    parts = [np.zeros(int(lead_s * sample_rate), np.int16)]
    bounds: list[tuple[float, float]] = []
    gaps = list(gap_s) if isinstance(gap_s, list) else [gap_s] * (len(texts) - 1)
    position = len(parts[0])
    for i, text in enumerate(texts):
        speech = speak(text, sample_rate)
        first, last = speech_bounds(speech, sample_rate)
        speech = speech[first:last]
        bounds.append((position / sample_rate, (position + len(speech)) / sample_rate))
        gap = gaps[i] if i < len(texts) - 1 else tail_s
        parts += [speech, np.zeros(int(gap * sample_rate), np.int16)]
        position += len(speech) + len(parts[-1])
    samples = np.concatenate(parts)
    if noise_db is not None:
        rng = np.random.default_rng(seed)
        noise = rng.normal(0, 32768 * 10 ** (noise_db / 20), len(samples))
        samples = np.clip(samples + noise, -32768, 32767).astype(np.int16)
    return samples, bounds


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and sample rate of a PCM16 WAV file."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(
            np.int16
        ), wav.getframerate()


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write mono int16 samples as a PCM16 WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(samples, "<i2").tobytes())
