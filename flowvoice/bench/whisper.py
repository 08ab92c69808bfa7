"""``flowvoice bench whisper``: time and word error rate of stt.whisper's decoding options.

Spoken sentences made here with espeak-ng (several voices, three speeds, varied silence
before and after as the VAD's cut and the node's padding vary), transcribed by the shipped
tiny.en the way ``stt.whisper`` does it: each whole utterance (a final transcript) and its
first 1, 2 and 3 s (partial transcripts of the growing utterance, cut mid-word as they are
while the user speaks; most of faster-whisper's temperature fallbacks happen on these). Once
per configuration, all on the same clips: faster-whisper's default decoding as stt.whisper
used it first (fallback up to temperature 1.0, no token budget, no deadline; fixed 15 s
window), a capped fallback with a deadline, greedy decoding with a fixed 15 s window (the
default until the window was fitted), today's default (greedy, token budget, deadline,
window fitted to the utterance, repeats dropped), and greedy decoding with other fixed
windows. Reports ms per transcription (p50, p90, p99, max; nearest rank) over all clips and
the finals' mean word error rate.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np

from flowvoice.bench.wer import wer
from flowvoice.nodes.audio import Resampler, read_wav
from flowvoice.nodes.stt import (
    FIXED_WINDOW,
    RATE,
    UNBOUNDED,
    Decoding,
    _Whisper,
    resolve_model,
)

#: Conversational sentences unlike the e2e questions: requests, numbers, names, a long one.
SENTENCES = (
    "What is the capital of France?",
    "Tell me a short joke about cats.",
    "Please turn on the lights in the kitchen and close the window.",
    "I would like to book a table for two people tomorrow evening.",
    "How far is the moon from the earth?",
    "Set a timer for fifteen minutes.",
    "Can you remind me to call my sister at six o'clock?",
    "What's the weather going to be like this weekend?",
    "My phone number is five five five, one two three four.",
    "Play some quiet music while I read.",
    "Why do leaves change color in the autumn?",
    "Could you explain how a rainbow forms?",
    "I think I left my keys somewhere in the living room.",
    "How many days are there until Christmas?",
    "Translate good morning into Spanish, please.",
    "Which is bigger, a whale or an elephant?",
    "Add milk, eggs and bread to my shopping list.",
    "What time does the train to Boston leave?",
    "Stop, that's not what I asked.",
    "Give me a recipe for a quick vegetable soup.",
    "Who wrote the novel Pride and Prejudice?",
    "Actually, never mind, let's talk about something else.",
    "The meeting moved from Tuesday to Thursday afternoon at three thirty.",
    "When I was younger we used to spend every summer at my grandmother's house by the "
    "lake, swimming and fishing until it got dark.",
)
#: espeak-ng voices (with variants) and speeds (words per minute).
VOICES = ("en-us", "en-gb-x-rp+m3", "en-us+f3", "en-gb-scotland+f2", "en-029", "en-us-nyc+m5")
SPEEDS = (140, 175, 210)
#: Partial transcripts: the first this many seconds of speech (shorter utterances only).
PARTIALS_S = (1.0, 2.0, 3.0)
LEADS_S = (0.3, 0.5, 0.7)
TAILS_S = (0.1, 0.2, 0.35)
#: Decoding configurations: the first, a capped fallback, the fixed window, today's default.
BEFORE = ("before: fallback 0-1.0, unbounded", UNBOUNDED)
CAPPED = ("fallback [0, 0.4], budget, 1 s deadline", Decoding(temperature=(0.0, 0.4)))
FIXED = ("greedy, budget, 1 s deadline", FIXED_WINDOW)
DEFAULT = ("default: greedy, budget, 1 s deadline, repeats dropped", Decoding())


@dataclass
class Clip:
    text: str  # the whole sentence
    voice: str
    speed: int
    audio: np.ndarray
    final: bool = True  # the whole utterance (else its beginning, for a partial transcript)


@dataclass
class Row:
    label: str
    window: str  # e.g. "15 s", "10 s, +5 s"
    times_ms: list[float]
    mean_wer: float

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the times."""
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def speak(text: str, voice: str, speed: int) -> np.ndarray:
    """``text`` spoken by espeak-ng at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("bench whisper speaks its sentences with espeak-ng: apt-get install it")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
            check=True,
            timeout=30,
        )
        samples, rate = read_wav(path)
    return Resampler(rate, RATE)(samples, last=True) if rate != RATE else samples


def clips() -> list[Clip]:
    """Every sentence at each speed, in a voice and with a padding that vary with both: the
    whole utterance, then its beginnings (PARTIALS_S, if at least 0.3 s shorter)."""
    out = []
    for i, sentence in enumerate(SENTENCES):
        for j, speed in enumerate(SPEEDS):
            voice = VOICES[(i + 2 * j) % len(VOICES)]
            lead, tail = LEADS_S[(i + j) % len(LEADS_S)], TAILS_S[(i + 2 * j) % len(TAILS_S)]
            pad = [np.zeros(int(s * RATE), np.int16) for s in (lead, tail)]
            speech = speak(sentence, voice, speed)
            out.append(Clip(sentence, voice, speed, np.concatenate([pad[0], speech, pad[1]])))
            for seconds in PARTIALS_S:
                if (seconds + 0.3) * RATE <= len(speech):
                    audio = np.concatenate([pad[0], speech[: int(seconds * RATE)]])
                    out.append(Clip(sentence, voice, speed, audio, final=False))
    return out


def configs(windows: list[float]) -> list[tuple[str, Decoding]]:
    """Before, capped fallback, fixed 15 s and default, then fixed ``windows`` other than 15."""
    label, fixed = FIXED
    out = [BEFORE, CAPPED, FIXED, DEFAULT]
    return out + [(label, replace(fixed, window_s=w)) for w in windows if w != fixed.window_s]


def window_label(decoding: Decoding) -> str:
    """The encoder window of ``decoding`` in words: "15 s" (fixed) or "10 s, +5 s" (fitted)."""
    fitted = f", +{decoding.padding_s:g} s" if decoding.padding_s else ""
    return f"{decoding.window_s:g} s{fitted}"


def measure(windows: list[float], threads: int, audio: list[Clip] | None = None) -> list[Row]:
    """One row per configuration (see ``configs``), all on the same clips. Each clip is
    transcribed with every configuration in turn, so other load on the machine falls on all
    of them alike."""
    whisper = _Whisper(resolve_model("tiny.en"), "cpu", "int8", threads)
    audio = clips() if audio is None else audio
    chosen = configs(windows)
    times: list[list[float]] = [[] for _ in chosen]
    errors: list[list[float]] = [[] for _ in chosen]
    for clip in audio:
        for i, (_, decoding) in enumerate(chosen):
            start = time.perf_counter()
            text = whisper.transcribe(clip.audio, decoding)
            times[i].append(1000 * (time.perf_counter() - start))
            if clip.final:
                errors[i].append(wer(clip.text, text))
    return [
        Row(label, window_label(decoding), times[i], float(np.mean(errors[i])))
        for i, (label, decoding) in enumerate(chosen)
    ]


def main(windows: list[float] | None = None, threads: int = 0, markdown: bool = False) -> int:
    threads = threads or min(4, os.cpu_count() or 1)
    audio = clips()
    rows = measure(windows or [30], threads, audio)
    finals = sum(c.final for c in audio)
    title = (
        f"whisper benchmark: tiny.en int8, {threads} thread(s), {len(audio)} clips: {finals} "
        f"utterances ({len(SENTENCES)} sentences x {len(SPEEDS)} speeds, {len(VOICES)} "
        f"voices) and {len(audio) - finals} of their beginnings, "
        f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {date.today()}"
    )
    print(title)
    if markdown:
        print(
            "\n| decoding | encoder window | ms p50 | p90 | p99 | max | mean WER (finals) |"
            "\n|---|---|---|---|---|---|---|"
        )
        for r in rows:
            print(
                f"| {r.label} | {r.window} | {r.percentile(50):.0f} | "
                f"{r.percentile(90):.0f} | {r.percentile(99):.0f} | {max(r.times_ms):.0f} | "
                f"{r.mean_wer:.3f} |"
            )
    else:
        for r in rows:
            print(
                f"  {r.label:<54} {r.window:>9}: p50 {r.percentile(50):5.0f}, "
                f"p90 {r.percentile(90):5.0f}, p99 {r.percentile(99):5.0f}, "
                f"max {max(r.times_ms):5.0f} ms, WER {r.mean_wer:.3f}"
            )
    return 0
