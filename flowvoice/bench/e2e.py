"""``flowvoice bench e2e``: spoken questions through a real graph, latency per stage.

The questions are spoken by espeak-ng into one WAV with long pauses, fed in real time as the
microphone (the graph's WebSocket nodes swapped for file nodes, as ``flowvoice chat`` does),
and every turn's latency trace is collected: end of speech -> final transcript -> committed
turn -> first LLM token -> first sentence -> first TTS audio -> first audio out.
"""

from __future__ import annotations

import platform
import resource
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path

import anyio
import numpy as np

from flowvoice.chat import ChatTurn, run_chat, with_file_io
from flowvoice.graph.spec import load_graph
from flowvoice.nodes.audio import Resampler, read_wav, write_wav
from flowvoice.runtime.trace import STAGES

QUESTIONS = (
    "What is the capital of France?",
    "What color is the sky?",
    "How many legs does a dog have?",
    "What is the opposite of hot?",
    "Can you name a big animal?",
)
RATE = 16000


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


def measure(
    graph_path: str, questions: int, gap_s: float = 7.0, overrides: list[str] | None = None
) -> tuple[list[ChatTurn], float]:
    """Run the conversation; return the answered turns and the process's peak RSS in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "questions.wav"
        write_wav(wav, conversation(QUESTIONS[:questions], gap_s), RATE)
        graph = with_file_io(load_graph(graph_path, overrides), str(wav), realtime=True)
        result = anyio.run(run_chat, graph)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result.turns, rss_mb


def main(
    graph_path: str = "graphs/default.yaml", questions: int = 5, markdown: bool = False
) -> int:
    turns, rss_mb = measure(graph_path, min(questions, len(QUESTIONS)))
    rows = percentile_table(turns)
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    header = (
        f"e2e benchmark: {graph_path}, {len(turns)} answered of {questions} spoken questions, "
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
    for turn in turns:
        print(f"  [{turn.turn}] {turn.user!r} -> {turn.assistant.strip()!r}")
    return 0 if turns else 1
