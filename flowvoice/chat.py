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

SOURCE_TYPES = ("websocket.source", "audio.file_source")
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
    nodes = dict(graph.nodes)
    sources = [n for n in nodes.values() if n.type_name in SOURCE_TYPES]
    sinks = [n for n in nodes.values() if n.type_name in SINK_TYPES]
    if len(sources) != 1 or len(sinks) != 1:
        raise ValueError(
            f"{graph.path}: `chat` needs exactly one audio source ({' or '.join(SOURCE_TYPES)}) "
            f"and one sink ({' or '.join(SINK_TYPES)}); found {len(sources)} and {len(sinks)}"
        )
    source, sink = sources[0], sinks[0]
    nodes[source.name] = _swap(
        source,
        "audio.file_source",
        {"path": input_path, "realtime": realtime, "tail_silence_ms": 2000},
    )
    nodes[sink.name] = _swap(sink, "audio.file_sink", {"path": output_path})
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

    session.subscribe(collect)
    if on_event is not None:
        session.subscribe(on_event)
    await session.run()
    sink = next(n for n in session.nodes.values() if isinstance(n, FileSink))
    answered = [t for t in sorted(turns.values(), key=lambda t: t.turn) if t.user]
    return ChatResult(answered, sink.audio(), sink.rate or 16000)
