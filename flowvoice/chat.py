"""Headless conversations: run a graph with a WAV file as the microphone.

The graph's live I/O nodes (``websocket.source`` / ``websocket.sink``) are swapped for
``audio.file_source`` / ``audio.file_sink``, so the same graph file serves the browser and
the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from flowvoice.graph.registry import get_node_type
from flowvoice.graph.spec import LoadedGraph, LoadedNode
from flowvoice.nodes.audio import FileSink
from flowvoice.runtime.session import Session

SOURCE_TYPES = ("websocket.source", "audio.file_source", "bench.scripted_mic")
SINK_TYPES = ("websocket.sink", "audio.file_sink")


@dataclass
class ChatTurn:
    """One exchange: what the user said, what the assistant answered, and how fast."""

    turn: int
    user: str = ""
    assistant: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class ChatResult:
    turns: list[ChatTurn]
    audio: np.ndarray
    sample_rate: int
    session: Session
    events: list[dict[str, Any]]


def _swap(node: LoadedNode, type_name: str, params: dict[str, Any]) -> LoadedNode:
    node_type = get_node_type(type_name)
    assert node_type is not None
    return replace(
        node, type_name=type_name, node_type=node_type, params=node_type.Params(**params)
    )


def with_file_io(
    graph: LoadedGraph, input_path: str, output_path: str = "", realtime: bool = True
) -> LoadedGraph:
    """A copy of ``graph`` whose audio source reads ``input_path`` and whose sink writes a WAV."""
    source = {"path": input_path, "realtime": realtime, "tail_silence_ms": 2000}
    # Real-time input plays the reply in real time too, so barge-in cuts it as it would live.
    sink = {"path": output_path, "lead_ms": 250 if realtime else 0}
    return replace_io(graph, ("audio.file_source", source), ("audio.file_sink", sink))


def replace_io(
    graph: LoadedGraph, source: tuple[str, dict[str, Any]], sink: tuple[str, dict[str, Any]]
) -> LoadedGraph:
    """A copy of ``graph`` with its audio source and sink replaced by ``(type, params)``."""
    nodes = dict(graph.nodes)
    sources = [n for n in nodes.values() if n.type_name in SOURCE_TYPES]
    sinks = [n for n in nodes.values() if n.type_name in SINK_TYPES]
    if len(sources) != 1 or len(sinks) != 1:
        raise ValueError(
            f"{graph.path}: needs exactly one audio source ({' or '.join(SOURCE_TYPES)}) "
            f"and one sink ({' or '.join(SINK_TYPES)}); found {len(sources)} and {len(sinks)}"
        )
    nodes[sources[0].name] = _swap(sources[0], *source)
    nodes[sinks[0].name] = _swap(sinks[0], *sink)
    return replace(graph, nodes=nodes)


async def run_chat(
    graph: LoadedGraph, on_event: Callable[[dict[str, Any]], None] | None = None
) -> ChatResult:
    """Run a file-I/O graph to the end; collect each turn's text, latency and reply audio."""
    session = Session(graph)
    turns: dict[int, ChatTurn] = {}

    def collect(event: dict[str, Any]) -> None:
        turn = event.get("turn")
        if turn is None:
            return
        entry = turns.setdefault(turn, ChatTurn(turn))
        kind = event["type"]
        if kind == "user_turn":
            entry.user = event["text"]
        elif kind == "assistant_text":
            entry.assistant += event["text"]
        elif kind == "metrics":
            entry.latency_ms = event["latency_ms"]

    events: list[dict[str, Any]] = []
    session.subscribe(collect)
    session.subscribe(events.append)
    if on_event is not None:
        session.subscribe(on_event)
    await session.run()
    sink = next(n for n in session.nodes.values() if isinstance(n, FileSink))
    answered = [t for t in sorted(turns.values(), key=lambda t: t.turn) if t.user]
    return ChatResult(answered, sink.audio(), sink.rate or 16000, session, events)
