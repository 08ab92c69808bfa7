"""Charts of ``flowvoice bench load --plot``: where a turn's time goes, and latency vs sessions.

matplotlib is imported only here, only when plotting.
"""

from __future__ import annotations

import importlib.util
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

from flowvoice.bench.load_point import Point
from flowvoice.runtime.trace import STAGES

#: Legend of each stage of the trace: what the time up to that mark was spent on.
STAGE_LABELS = {
    "final_transcript": "VAD silence hang-over + STT: final transcript",
    "turn_decided": "turn detector: its silence wait",
    "turn_committed": "commit (speculation: the held reply ready)",
    "first_token": "LLM: first token",
    "first_sentence": "LLM: first sentence",
    "first_audio": "TTS: first audio",
    "first_audio_sent": "speaker: first audio sent",
}


_CENTERED = {"textcoords": "offset points", "ha": "center", "va": "bottom", "fontsize": 8}


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def critical_path(latency_ms: dict[str, float]) -> list[float]:
    """How much later each stage's mark came than every earlier one (0 when it came first,
    e.g. a speculative reply ready before the turn committed): the pieces add up to the
    voice-to-voice latency."""
    pieces, reached = [], 0.0
    for stage in STAGES[1:]:
        mark = latency_ms.get(stage, reached)
        pieces.append(max(0.0, mark - reached))
        reached = max(reached, mark)
    return pieces


def _pyplot():  # noqa: ANN202 (matplotlib.pyplot, imported lazily)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_stages(point: Point, path: Path) -> None:
    """Stacked bars: each answered turn's voice-to-voice latency split by stage."""
    plt = _pyplot()
    turns = [e for e in point.answered if e.latency_ms]
    width = max(7.0, 1.1 * len(turns) + 4.5)
    fig, ax = plt.subplots(figsize=(width, 4.8), layout="constrained")
    labels = [f"{i + 1}\n" + textwrap.fill(e.question, 16) for i, e in enumerate(turns)]
    bottoms = [0.0] * len(turns)
    pieces = [critical_path(e.latency_ms) for e in turns]
    for index, stage in enumerate(STAGES[1:]):
        heights = [p[index] for p in pieces]
        ax.bar(labels, heights, bottom=bottoms, label=STAGE_LABELS[stage], color=f"C{index}")
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    client = [e.client_ms or 0.0 for e in turns]
    ax.plot(labels, client, "k_", markersize=30, mew=2, label="client: first reply byte")
    for x, (total, heard) in enumerate(zip(bottoms, client, strict=True)):
        top = max(total, heard)
        ax.annotate(f"{total:.0f} / {heard:.0f}", (x, top), xytext=(0, 4), **_CENTERED)
    ax.set_ylabel("ms from end of speech (labels: server / client)")
    sessions = "1 session" if point.sessions == 1 else f"{point.sessions} sessions"
    ax.set_title(f"Voice-to-voice by stage: {point.graph}, {sessions}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.tick_params(axis="x", labelsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sessions(sweeps: dict[str, Sequence[Point]], path: Path, target_ms: float) -> None:
    """p50 and p95 voice-to-voice (client) vs simultaneous sessions, one colour per graph."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    for index, (name, points) in enumerate(sweeps.items()):
        x = [p.sessions for p in points]
        for q, style in ((50, "-o"), (95, "--s")):
            y = [p.client_percentile(q) for p in points]
            ax.plot(x, y, style, color=f"C{index}", label=f"{name} p{q}")
    ax.axhline(target_ms, color="gray", linestyle=":", label=f"{target_ms / 1000:.0f} s target")
    ax.set_xlabel("simultaneous sessions")
    ax.set_ylabel("voice-to-voice, ms (client)")
    ax.set_title(f"Voice-to-voice latency vs sessions ({os.cpu_count()} CPUs)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(sweeps: dict[str, Sequence[Point]], path: str, target_ms: float) -> list[Path]:
    """``path``: latency vs sessions; ``<path stem>_stages.png``: the first graph's
    single-session turns by stage. Returns the files written."""
    target = Path(path)
    written = [target]
    plot_sessions(sweeps, target, target_ms)
    first = next(iter(sweeps.values()), [])
    single = next((p for p in first if p.sessions == 1), None)
    if single is not None and single.answered:
        stages = target.with_name(f"{target.stem}_stages{target.suffix or '.png'}")
        plot_stages(single, stages)
        written.append(stages)
    return written
