"""``flowvoice bench whisper``: time and word error rate of stt.whisper's encoder windows.

Spoken sentences (espeak-ng), each with several amounts of silence before and after (as the
VAD's cut and the node's padding vary), transcribed by the shipped tiny.en the way
``stt.whisper`` does it, once per encoder window: ms per utterance (median, max) and mean
word error rate.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import date

import numpy as np

from flowvoice.bench.bargein import INTERRUPTIONS
from flowvoice.bench.e2e import QUESTIONS, RATE, speak
from flowvoice.bench.wer import wer
from flowvoice.nodes.stt import _Whisper, resolve_model

SENTENCES = (
    *QUESTIONS,
    *INTERRUPTIONS[:2],
    "Please turn on the lights in the kitchen and close the window.",
    "I would like to book a table for two people tomorrow evening.",
    "Tell me a short joke about cats.",
)
LEADS_S = (0.3, 0.5, 0.7)
TAILS_S = (0.1, 0.2, 0.35)


def clips() -> list[tuple[str, np.ndarray]]:
    """(sentence, audio) for every sentence, lead and tail."""
    out = []
    for sentence in SENTENCES:
        speech = speak(sentence)
        for lead in LEADS_S:
            for tail in TAILS_S:
                pad = [np.zeros(int(s * RATE), np.int16) for s in (lead, tail)]
                out.append((sentence, np.concatenate([pad[0], speech, pad[1]])))
    return out


def measure(windows: list[float], threads: int) -> list[tuple[float, float, float, float]]:
    """(window s, median ms, max ms, mean WER) per encoder window."""
    whisper = _Whisper(resolve_model("tiny.en"), "cpu", "int8", threads)
    audio = clips()
    rows = []
    for window in windows:
        times, errors = [], []
        for sentence, samples in audio:
            start = time.perf_counter()
            text = whisper.transcribe(samples, 1, "en", window_s=window)
            times.append(1000 * (time.perf_counter() - start))
            errors.append(wer(sentence, text))
        rows.append((window, float(np.median(times)), max(times), float(np.mean(errors))))
    return rows


def main(windows: list[float] | None = None, threads: int = 0, markdown: bool = False) -> int:
    threads = threads or min(4, os.cpu_count() or 1)
    rows = measure(windows or [30, 15, 10], threads)
    title = (
        f"whisper benchmark: tiny.en int8, {threads} thread(s), {len(SENTENCES)} sentences x "
        f"{len(LEADS_S) * len(TAILS_S)} paddings, {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, {date.today()}"
    )
    print(title)
    if markdown:
        print("\n| encoder window | ms per utterance p50 / max | mean WER |\n|---|---|---|")
        for window, p50, worst, error in rows:
            print(f"| {window:g} s | {p50:.0f} / {worst:.0f} | {error:.3f} |")
    else:
        for window, p50, worst, error in rows:
            print(
                f"  {window:>4g} s window: {p50:5.0f} ms p50, {worst:5.0f} ms max, WER {error:.3f}"
            )
    return 0
