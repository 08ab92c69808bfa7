"""``flowvoice bench soak``: one long real-time conversation through a graph, over the WebSocket.

A client speaks questions like a microphone (20 ms frames in real time, silence between
them, :mod:`flowvoice.bench.load_client`) to the real server, here under uvicorn in a thread
of this process so the soak can look inside it. After every ``window`` turns it records the
process's RSS, threads and open files, the server's asyncio tasks, the session's llama.cpp
memory (its saved KV state) and chat history, and the answer latency of the window's turns
(end of the question's audio -> first reply audio). After warm-up the profile should be flat:
history and KV memory are bounded by the LLM's ``history_turns``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowvoice.bench.load import spoken_questions
from flowvoice.bench.load_client import Exchange, converse
from flowvoice.bench.load_point import percentile
from flowvoice.graph.spec import LoadedGraph, load_graph
from flowvoice.native_memory import keep_large_buffers_off_the_heap
from flowvoice.nodes.llm import LlamaCpp
from flowvoice.server import create_app, prewarm
from flowvoice.testing.app_server import RunningServer, running_server
from flowvoice.testing.server_process import psutil_module

#: Turns per window.
WINDOW = 20


@dataclass
class Window:
    """What one window of turns looked like, measured at its end."""

    turns: int  # turns asked so far
    latency_ms: list[float] = field(default_factory=list)  # of the answered turns
    unanswered: int = 0
    rss_mb: float = 0.0
    threads: int = 0
    fds: int = 0
    tasks: int = 0
    kv_mb: float = 0.0
    history: int = 0  # chat messages the LLM keeps


@dataclass
class Soak:
    graph: str
    windows: list[Window] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def growth(self, what: str) -> float:
        """``what`` at the last window minus at the end of warm-up: the first window in which
        the LLM's history had reached its bound."""
        if len(self.windows) < 2:
            return 0.0
        full = max(w.history for w in self.windows)
        start = next(w for w in self.windows if w.history == full)
        return getattr(self.windows[-1], what) - getattr(start, what)


async def _session_state(server: RunningServer) -> tuple[int, float, int]:
    """(asyncio tasks, KV MB, history messages) of the server, on its own loop."""
    tasks = len([t for t in asyncio.all_tasks() if not t.done()]) - 1  # less this one
    kv_bytes, history = 0, 0
    for session, _ in server.voice.live.values():
        for node in session.nodes.values():
            if isinstance(node, LlamaCpp):
                kv_bytes += node.memory_bytes
                history += len(node.history.messages)
    return tasks, kv_bytes / 2**20, history


def measure(server: RunningServer, window: Window, psutil: object) -> None:
    """Fill ``window``'s process and session figures."""
    process = psutil.Process()  # type: ignore[attr-defined]
    window.rss_mb = process.memory_info().rss / 2**20
    window.threads = threading.active_count()
    window.fds = process.num_fds() if hasattr(process, "num_fds") else 0
    window.tasks, window.kv_mb, window.history = server.call(_session_state(server))


def soak(
    graph: LoadedGraph,
    turns: int,
    window: int = WINDOW,
    on_window: Callable[[Window], None] | None = None,
) -> Soak:
    """Converse ``turns`` turns with ``graph`` and measure every ``window`` turns (each
    measured window also goes to ``on_window``)."""
    psutil = psutil_module()
    keep_large_buffers_off_the_heap()  # as flowvoice run does
    result = Soak(graph.name)
    current = Window(0)
    with running_server(create_app(graph)) as server:
        server.call(prewarm(graph), timeout=600)

        async def after_reply(exchange: Exchange) -> None:
            nonlocal current
            current.turns += 1
            if exchange.client_ms is None:
                current.unanswered += 1
            else:
                current.latency_ms.append(exchange.client_ms)
            if current.turns % window == 0:
                await asyncio.to_thread(measure, server, current, psutil)
                result.windows.append(current)
                if on_window is not None:
                    on_window(current)
                current = Window(current.turns)

        questions = spoken_questions(turns)
        _, errors = asyncio.run(
            converse(server.ws_url, questions, after_reply=after_reply, reply_max_s=60)
        )
        result.errors += errors
    return result


def table(result: Soak, markdown: bool) -> str:
    header = [
        "turns", "answered", "p50 ms", "p95 ms", "RSS MB", "threads", "fds", "tasks",
        "KV MB", "history",
    ]  # fmt: skip
    rows = [
        [
            str(w.turns),
            f"{len(w.latency_ms)}/{len(w.latency_ms) + w.unanswered}",
            f"{percentile(w.latency_ms, 50):.0f}" if w.latency_ms else "-",
            f"{percentile(w.latency_ms, 95):.0f}" if w.latency_ms else "-",
            f"{w.rss_mb:.1f}",
            str(w.threads),
            str(w.fds),
            str(w.tasks),
            f"{w.kv_mb:.2f}",
            str(w.history),
        ]
        for w in result.windows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    )


def flat_after_warmup(result: Soak, rss_mb: float = 40.0) -> Sequence[str]:
    """What grew after warm-up beyond noise (empty when the profile is flat)."""
    grew = []
    if result.growth("rss_mb") > rss_mb:
        grew.append(f"RSS +{result.growth('rss_mb'):.1f} MB")
    for what in ("threads", "fds", "tasks", "history"):
        if result.growth(what) > 2:
            grew.append(f"{what} +{result.growth(what):g}")
    if len(result.windows) >= 2 and result.windows[-1].kv_mb > 1.5 * max(
        w.kv_mb for w in result.windows[:-1]
    ):
        grew.append(f"KV memory {result.windows[-1].kv_mb:.2f} MB")
    return grew


def _progress(window: Window) -> None:
    answered = len(window.latency_ms)
    print(
        f"  {window.turns} turns: {answered} answered, RSS {window.rss_mb:.0f} MB, "
        f"KV {window.kv_mb:.2f} MB",
        file=sys.stderr,
        flush=True,
    )


def main(graph_path: str, turns: int, window: int = WINDOW, markdown: bool = False) -> int:
    """``flowvoice bench soak``: print one row per window; exit 1 when a turn went unanswered."""
    graph = load_graph(graph_path)
    print(
        f"soak: {turns} real-time turns through {graph.name} ({Path(graph.path).name}), "
        f"one session, a row every {window} turns; {os.cpu_count()} CPUs",
        flush=True,
    )
    result = soak(graph, turns, window, on_window=_progress)
    print(table(result, markdown))
    grew = flat_after_warmup(result)
    print(f"after warm-up: {'grew: ' + ', '.join(grew) if grew else 'flat'}")
    for error in result.errors:
        print(f"error: {error}")
    unanswered = sum(w.unanswered for w in result.windows)
    return 1 if unanswered or result.errors else 0
