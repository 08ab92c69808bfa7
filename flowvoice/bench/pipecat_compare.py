"""``flowvoice bench pipecat``: flowvoice and pipecat-ai side by side, same run, same machine.

- Runtime overhead: 20 ms 16 kHz PCM16 frames through 8 passthrough stages into a sink.
  flowvoice is :func:`flowvoice.bench.runtime.measure`; pipecat is a ``Pipeline`` run by a
  ``PipelineWorker``/``WorkerRunner``, fed with ``queue_frames``. Frames/s with frames
  pushed back to back; per-hop latency with one frame in flight (end-to-end / 9 hops).
- Interrupt propagation: a TTS stand-in streams a turn's frames (one per ms) through 8
  passthroughs into a player that takes 2 ms a frame, so a backlog builds; after
  ``TURN_S`` the turn is interrupted (flowvoice ``Session.new_turn()``, pipecat
  ``broadcast_interruption()`` from a processor ahead of the producer, as its user-turn
  processor does) and the next turn starts. The player logs when it began and ended (or was
  cancelled in) each frame: the interrupt has propagated once it is done with old-turn
  frames. Each interrupt is followed by at least ``TURN_S`` of the next turn, watched too.

pipecat is measured twice: with ``PipelineWorker`` defaults (RTVI processor and observers on,
what an app gets) and lean (no RTVI, turn tracking or idle observer: its bare runtime).
"""

from __future__ import annotations

import importlib.util
import itertools
import platform
import time
from importlib.metadata import version

import anyio
import yaml

from flowvoice.bench import runtime
from flowvoice.bench.interrupt_scenario import (
    PLAY_S,
    PRODUCE_S,
    SILENCE,
    TURN_FRAMES,
    PlayerLog,
    drive_turns,
    summarize_interrupts,
)
from flowvoice.frames import AudioFrame, Frame, Sentence
from flowvoice.graph.registry import register
from flowvoice.graph.spec import load_graph
from flowvoice.node import Node, Port
from flowvoice.runtime.session import Session
from flowvoice.testing.nodes import Passthrough

#: Each runtime's label and figures, flowvoice first.
Results = list[tuple[str, dict[str, float]]]


# -- flowvoice's interrupt chain ---------------------------------------------------------------
class _Turns:
    """The session's transport: turn triggers in, the player's log out."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[int](8)
        self.played: PlayerLog = []


@register("bench.trigger")
class Trigger(Node):
    """Emits a sentence stamped with each turn the benchmark sends."""

    outputs = {"text": Port(Sentence)}

    async def run(self) -> None:
        async for turn in self.context.service(_Turns).receive:
            await self.emit("text", Sentence(text="go", turn=turn))


@register("bench.producer")
class Producer(Node):
    """A TTS stand-in: answers a sentence with audio frames, one every ``PRODUCE_S``."""

    inputs = {"text": Port(Sentence)}
    outputs = {"audio": Port(AudioFrame)}
    preemptible = True

    async def process(self, port: str, frame: Frame) -> None:
        for _ in range(TURN_FRAMES):
            await self.emit("audio", AudioFrame(samples=SILENCE, sample_rate=16000))
            await anyio.sleep(PRODUCE_S)


@register("bench.preemptible_passthrough")
class PreemptiblePassthrough(Passthrough):
    """A passthrough that drops frames of older turns (as every pipecat processor does)."""

    preemptible = True


@register("bench.player")
class Player(Node):
    """Takes ``PLAY_S`` to play each frame and logs its turn, start and end."""

    inputs = {"audio": Port(AudioFrame)}
    preemptible = True

    async def process(self, port: str, frame: Frame) -> None:
        start = time.monotonic_ns()
        try:
            await anyio.sleep(PLAY_S)
        finally:
            self.context.service(_Turns).played.append((frame.turn, start, time.monotonic_ns()))


def interrupt_yaml() -> str:
    """trigger -> producer -> 8 preemptible passthroughs -> player."""
    stages = [f"p{i}" for i in range(runtime.STAGES)]
    types = {"trigger": "bench.trigger", "producer": "bench.producer"}
    types |= {stage: "bench.preemptible_passthrough" for stage in stages}
    types["player"] = "bench.player"
    chain = ["producer", *stages, "player"]
    edges = ["trigger.text -> producer.text"]
    edges += [f"{a}.audio -> {b}.audio" for a, b in itertools.pairwise(chain)]
    graph = {"name": "bench-interrupt", "nodes": {n: {"type": t} for n, t in types.items()}}
    return yaml.safe_dump({**graph, "edges": edges}, sort_keys=False)


async def flowvoice_interrupts(repeats: int) -> dict[str, float]:
    """Interrupt propagation in flowvoice (see the module docstring)."""
    turns = _Turns()
    session = Session(load_graph("<bench>", text=interrupt_yaml()), services=[turns])
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.run)
        marks = await drive_turns(turns.send.send, session.new_turn, repeats)
        tg.cancel_scope.cancel()
    return summarize_interrupts(turns.played, marks)


# -- the comparison ----------------------------------------------------------------------------
def measure(frames: int, repeats: int) -> Results:
    """Every measurement, labelled by runtime; flowvoice first."""
    from flowvoice.bench import pipecat_chain

    latency_frames = max(1, frames // 10)
    results = [
        (
            "flowvoice",
            runtime.measure(frames, latency_frames) | anyio.run(flowvoice_interrupts, repeats),
        )
    ]
    for lean in (False, True):
        label = f"pipecat {version('pipecat-ai')}, " + ("lean worker" if lean else "defaults")
        results.append((label, pipecat_chain.measure(frames, latency_frames, repeats, lean)))
    return results


def _print_table(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print(f"\n**{title}**\n")
        for row in [header, ["---"] * len(header), *rows]:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _overhead_rows(results: Results) -> list[list[str]]:
    fv = results[0][1]
    rows = []
    for label, r in results:
        ratios = ["—"] * 3
        if r is not fv:
            ratios = [
                f"{fv['frames_per_s'] / r['frames_per_s']:.1f}x",
                f"{fv['hop_p50_us'] / r['hop_p50_us']:.2f}x",
                f"{fv['hop_p99_us'] / r['hop_p99_us']:.2f}x",
            ]
        figures = [f"{r['frames_per_s']:,.0f}", f"{r['hop_p50_us']:.1f} µs"]
        rows.append([label, *figures, f"{r['hop_p99_us']:.1f} µs", *ratios])
    return rows


def _interrupt_rows(results: Results) -> list[list[str]]:
    return [
        [
            label,
            f"{r['clear_p50_ms']:.2f} ms",
            f"{r['clear_max_ms']:.2f} ms",
            f"{r['late_max']:.0f}",
            f"{r['first_new_p50_ms']:.2f} ms",
        ]
        for label, r in results
    ]


def plot(results: Results, path: str) -> None:
    """Save bar charts of frames/s, per-hop latency and interrupt time as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label.replace(", ", "\n") for label, _ in results]
    panels = [
        ("frames/s through 8 stages (higher is better)", "frames_per_s", "{:,.0f}"),
        ("per-hop latency p50, µs", "hop_p50_us", "{:.1f}"),
        ("interrupt → sink done with old turn p50, ms", "clear_p50_ms", "{:.2f}"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4.2))
    for ax, (title, key, fmt) in zip(axes, panels, strict=True):
        values = [r[key] for _, r in results]
        bars = ax.bar(labels, values, color=["tab:green", "tab:gray", "tab:blue"])
        ax.bar_label(bars, [fmt.format(v) for v in values])
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(
    markdown: bool = False, frames: int = 20000, repeats: int = 20, plot_path: str | None = None
) -> int:
    """Run the comparison and print its tables; 1 when pipecat-ai (or matplotlib) is missing."""
    if importlib.util.find_spec("pipecat") is None:
        print("bench pipecat needs pipecat-ai in this environment: pip install pipecat-ai")
        return 1
    if plot_path and importlib.util.find_spec("matplotlib") is None:
        print("--plot needs matplotlib in this environment: pip install matplotlib")
        return 1
    results = measure(frames, repeats)
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    _print_table(
        f"Runtime overhead: {frames} frames of 20 ms through 8 passthrough stages ({machine})",
        ["runtime", "frames/s", "hop p50", "hop p99", "fv÷pc frames/s", "fv÷pc p50", "fv÷pc p99"],
        _overhead_rows(results),
        markdown,
    )
    _print_table(
        f"Interrupt propagation: {repeats} interrupts, times from the interrupt call",
        [
            "runtime",
            "sink done with old turn p50",
            "max",
            "old frames begun after (max)",
            "first new-turn frame p50",
        ],
        _interrupt_rows(results),
        markdown,
    )
    if plot_path:
        plot(results, plot_path)
        print(f"\nplot saved to {plot_path}")
    return 0
