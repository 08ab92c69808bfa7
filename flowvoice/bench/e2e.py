"""``flowvoice bench e2e``: spoken questions through a real graph, latency per stage.

The questions are spoken by espeak-ng into one WAV with long pauses, fed in real time as the
microphone (the graph's WebSocket nodes swapped for file nodes, as ``flowvoice chat`` does),
and every turn's latency trace is collected: end of speech -> final transcript -> committed
turn -> first LLM token -> first sentence -> first TTS audio -> first audio out.
"""

from __future__ import annotations

import multiprocessing
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import anyio
import numpy as np

from flowvoice.chat import ChatTurn, run_chat, with_file_io
from flowvoice.graph.spec import load_graph
from flowvoice.nodes.audio import Resampler, read_wav, write_wav
from flowvoice.nodes.text import SentenceSplitter
from flowvoice.runtime.trace import STAGES

QUESTIONS = (
    "What is the capital of France?",
    "What color is the sky?",
    "How many legs does a dog have?",
    "What is the opposite of hot?",
    "Can you name a big animal?",
)
#: Asked instead with ``--requests``: in a conversation of their own gemma3-270m answers these
#: in two sentences, and the first one's synthesis competes with the LLM's next tokens for the
#: CPU (flowvoice.conversation.first_audio). After the one-sentence answers to ``QUESTIONS`` it
#: answers in one sentence too.
REQUESTS = ("Tell me about the moon.", "Describe a cat.", "Tell me about the ocean.")

RATE = 16000
#: What the user waits for: end of their speech -> the reply's first audio leaving the server.
VOICE_TO_VOICE = "first_audio_sent"


def speak(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(
            "bench e2e speaks its questions with espeak-ng: apt-get install espeak-ng"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text], check=True, timeout=30
        )
        samples, rate = read_wav(path)
    return Resampler(rate, RATE)(samples, last=True) if rate != RATE else samples


def conversation(questions: tuple[str, ...], gap_s: float) -> np.ndarray:
    """The questions with ``gap_s`` of silence after each (time for the reply)."""
    silence = np.zeros(int(gap_s * RATE), np.int16)
    parts = [np.zeros(RATE // 2, np.int16)]
    for question in questions:
        parts += [speak(question), silence]
    return np.concatenate(parts)


def percentile_table(turns: list[ChatTurn]) -> list[tuple[str, float, float, int]]:
    """(stage, p50 ms, max ms, samples) for every stage after speech end."""
    rows = []
    for stage in STAGES[1:]:
        values = [t.latency_ms[stage] for t in turns if stage in t.latency_ms]
        if values:
            rows.append((stage, float(np.percentile(values, 50)), max(values), len(values)))
    return rows


def first_sentence_to_audio_ms(turns: list[ChatTurn]) -> list[float]:
    """First sentence -> first audio of each reply of two sentences or more: the first
    sentence's synthesis, which an LLM still generating competes with on a CPU."""
    return [
        t.latency_ms["first_audio"] - t.latency_ms["first_sentence"]
        for t in turns
        if {"first_audio", "first_sentence"} <= t.latency_ms.keys() and _sentences(t.assistant) >= 2
    ]


def _sentences(reply: str) -> int:
    """How many sentences the graph's splitter (``text.sentences``) finds in ``reply``."""
    splitter = SentenceSplitter()
    return len(splitter.feed(reply)) + bool(splitter.flush())


def measure(
    graph_path: str,
    asked: tuple[str, ...],
    gap_s: float = 7.0,
    overrides: list[str] | None = None,
) -> tuple[list[ChatTurn], float]:
    """Say ``asked`` to the graph; return the answered turns and the process's peak RSS in
    MB."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "questions.wav"
        write_wav(wav, conversation(asked, gap_s), RATE)
        graph = with_file_io(load_graph(graph_path, overrides), str(wav), realtime=True)
        result = anyio.run(run_chat, graph)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result.turns, rss_mb


def measure_apart(graph_path: str, asked: tuple[str, ...]) -> tuple[list[ChatTurn], float]:
    """:func:`measure` in a fresh process, as ``flowvoice run`` would serve the graph alone:
    graphs measured in one process share its loaded engines, and two llama.cpp models there
    (the old graph's and the new one's) each keep a thread pool, which made every token ~2x
    slower on two cores."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as process:
        return process.submit(measure, graph_path, asked).result()


def main(
    graph_paths: list[str] | None = None,
    questions: int = 5,
    markdown: bool = False,
    rounds: int = 1,
    requests: bool = False,
) -> int:
    """Time each graph on the same spoken questions (``REQUESTS`` with ``requests``), each run
    in a process of its own; with several graphs, ``rounds`` rounds take them in turn (so load
    on the machine falls on all alike) and a table compares them."""
    graph_paths = graph_paths or ["default"]
    asked = REQUESTS if requests else QUESTIONS[:questions]
    questions = len(asked)
    turns: dict[str, list[ChatTurn]] = {path: [] for path in graph_paths}
    rss_mb = 0.0
    for round_ in range(1, max(1, rounds) + 1):
        for path in graph_paths:
            print(f"{path}: round {round_} of {max(1, rounds)} ...", file=sys.stderr, flush=True)
            answered, rss_mb = measure_apart(path, asked)
            turns[path] += answered
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    if len(graph_paths) > 1:
        print(compare_table(turns, questions * max(1, rounds), machine, markdown))
        return 0 if all(turns.values()) else 1
    path, answered = graph_paths[0], turns[graph_paths[0]]
    rows = percentile_table(answered)
    header = (
        f"e2e benchmark: {path}, {len(answered)} answered of {questions} spoken questions, "
        f"{machine}, {date.today()}"
    )
    if markdown:
        print(f"{header}\n\n| from end of speech to | p50 ms | max ms | turns |\n|---|---|---|---|")
        for stage, p50, peak, n in rows:
            print(f"| {stage} | {p50:.0f} | {peak:.0f} | {n} |")
        print(f"| peak RSS | {rss_mb:.0f} MB | | |")
    else:
        print(header)
        for stage, p50, peak, n in rows:
            print(f"  {stage:<18} p50 {p50:6.0f} ms   max {peak:6.0f} ms   ({n} turns)")
        print(f"  peak RSS {rss_mb:.0f} MB")
    for turn in answered:
        print(f"  [{turn.turn}] {turn.user!r} -> {turn.assistant.strip()!r}")
    return 0 if answered else 1


def compare_table(
    turns: dict[str, list[ChatTurn]], spoken: int, machine: str, markdown: bool
) -> str:
    """p50 per stage, one column per graph, and each graph's voice-to-voice (first audio
    sent) p50 as a share of the first graph's."""
    paths = list(turns)
    p50 = {path: {stage: p for stage, p, _, _ in percentile_table(turns[path])} for path in paths}
    rows = [["from end of speech to", *paths]]
    for stage in STAGES[1:]:
        if any(stage in p50[path] for path in paths):
            rows.append([f"{stage} p50 ms", *(_ms(p50[path].get(stage)) for path in paths)])
    synthesis = {path: first_sentence_to_audio_ms(turns[path]) for path in paths}
    if any(synthesis.values()):
        rows.append(
            [
                "first_sentence -> first_audio p50 ms (2+ sentence replies)",
                *(_ms(float(np.median(v))) if v else "-" for v in synthesis.values()),
            ]
        )
    base = p50[paths[0]].get(VOICE_TO_VOICE)
    rows.append(
        [
            f"{VOICE_TO_VOICE} vs {paths[0]}",
            *(_ratio(p50[path].get(VOICE_TO_VOICE), base) for path in paths),
        ]
    )
    rows.append(["answered", *(f"{len(turns[path])}/{spoken}" for path in paths)])
    header = f"e2e benchmark, same questions, graphs in turn: {machine}, {date.today()}"
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([header, "", *lines])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"
