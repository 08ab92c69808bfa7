"""Headless conversations: run a graph with a WAV file as the microphone.

The graph's live I/O nodes (``websocket.source`` / ``websocket.sink``) are swapped for
``audio.file_source`` / ``audio.file_sink``, so the same graph file serves the browser and
the command line. The audio source is the node with no inputs and an audio output, the sink
the speaker node (a :class:`~flowvoice.nodes.speaker.SpeakerSink`), whatever their types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from flowvoice.frames import AudioFrame
from flowvoice.graph.registry import get_node_type, node_types
from flowvoice.graph.spec import LoadedGraph, LoadedNode
from flowvoice.node import Node
from flowvoice.nodes.audio import FileSink
from flowvoice.nodes.speaker import SpeakerSink
from flowvoice.runtime.session import Session


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


def is_audio_source(node_type: type[Node]) -> bool:
    """A microphone: no inputs, and an audio output."""
    return not node_type.inputs and any(
        issubclass(port.frame_type, AudioFrame) for port in node_type.outputs.values()
    )


def is_audio_sink(node_type: type[Node]) -> bool:
    """A speaker: plays the assistant's audio (and tells the session what was heard)."""
    return issubclass(node_type, SpeakerSink)


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
    sources = [n for n in nodes.values() if is_audio_source(n.node_type)]
    sinks = [n for n in nodes.values() if is_audio_sink(n.node_type)]
    if len(sources) != 1 or len(sinks) != 1:
        raise ValueError(f"{graph.path}: {_io_problem(sources, sinks)}")
    nodes[sources[0].name] = _swap(sources[0], *source)
    nodes[sinks[0].name] = _swap(sinks[0], *sink)
    return replace(graph, nodes=nodes)


def _io_problem(sources: list[LoadedNode], sinks: list[LoadedNode]) -> str:
    def found(nodes: list[LoadedNode]) -> str:
        return ", ".join(f"{n.name} ({n.type_name})" for n in nodes) or "none"

    def kinds(test: Callable[[type[Node]], bool]) -> str:
        return " or ".join(name for name, cls in node_types().items() if test(cls))

    return (
        "needs exactly one audio source (a node with no inputs and an audio output: "
        f"{kinds(is_audio_source)}) and one audio sink ({kinds(is_audio_sink)}); "
        f"found sources: {found(sources)}; sinks: {found(sinks)}"
    )


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
