"""Run one node (or a small graph of nodes) in a real Session: feed frames, collect outputs.

Like pipecat's ``run_test``: a feeder node plays a script into chosen input ports and a
collector is attached to every output port, so a test sees what each node emitted (with the
arrival time) and every event the session published.

A script is a sequence of steps, consumed lazily (a generator can create frames just in
time, so their ``t_ns`` is the moment they are fed):

- ``(target, frame)``: emit ``frame`` into ``target`` ("port" for :func:`run_node`,
  "node.port" for :func:`run_graph`);
- a number: sleep that many seconds;
- an async callable: awaited with the feeder's
  :class:`~flowvoice.runtime.session.NodeContext` (e.g. ``lambda c: c.new_turn("barge-in")``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from flowvoice.frames import AudioFrame, Frame
from flowvoice.graph.registry import get_node_type
from flowvoice.graph.spec import LoadedEdge, LoadedGraph, LoadedNode, ServerSpec
from flowvoice.node import Node, Port
from flowvoice.runtime.session import NodeContext, Session

Step = tuple[str, Frame] | float | Callable[[NodeContext], Awaitable[Any]]


@dataclass
class Received:
    """A frame a collector received, with the monotonic arrival time."""

    frame: Frame
    t_ns: int


@dataclass
class Result:
    """What a run produced: frames per output ("node.port"), events, and the session."""

    session: Session
    received: dict[str, list[Received]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def frames(self, output: str) -> list[Frame]:
        """Frames emitted on ``output`` ("node.port", or "port" after :func:`run_node`)."""
        return [r.frame for r in self.received[output]]

    def events_of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]


async def wait_for_mark(context: NodeContext, turn: int, stage: str, timeout: float = 20) -> None:
    """Return once the latency trace of ``turn`` has ``stage`` (e.g. "first_token")."""
    with anyio.fail_after(timeout):
        while not ((trace := context.trace(turn)) and stage in trace.marks):
            await anyio.sleep(0.005)


def audio_steps(
    target: str,
    samples: np.ndarray,
    sample_rate: int,
    frame_ms: float = 20,
    realtime: bool = False,
) -> Iterator[Step]:
    """Steps feeding ``samples`` as AudioFrames of ``frame_ms``, paced in real time if asked."""
    step = max(1, int(sample_rate * frame_ms / 1000))
    start = time.monotonic()
    for index, offset in enumerate(range(0, len(samples), step)):
        if realtime:
            yield max(0.0, start + index * step / sample_rate - time.monotonic())
        yield target, AudioFrame(samples=samples[offset : offset + step], sample_rate=sample_rate)


def _feeder_type(targets: list[str], script: Iterable[Step]) -> type[Node]:
    ports = {target: f"out{i}" for i, target in enumerate(targets)}

    class Feeder(Node):
        outputs = {port: Port(Frame) for port in ports.values()}

        async def run(self) -> None:
            for step in script:
                if isinstance(step, (int, float)):
                    await anyio.sleep(step)
                elif callable(step):
                    await step(self.context)
                else:
                    target, frame = step
                    await self.emit(ports[target], frame)

    Feeder.type_name = "harness.feed"
    return Feeder


def _collector_type(sink: list[Received]) -> type[Node]:
    class Collector(Node):
        inputs = {"frames": Port(Frame)}

        async def process(self, port: str, frame: Frame) -> None:
            sink.append(Received(frame, time.monotonic_ns()))

    Collector.type_name = "harness.collect"
    return Collector


async def run_graph(
    nodes: dict[str, tuple[str, dict[str, Any]]],
    edges: Iterable[str],
    script: Iterable[Step],
    inputs: Iterable[str],
    timeout: float = 60.0,
    stall_timeouts: dict[str, float] | None = None,
) -> Result:
    """Run ``nodes`` ({name: (type, params)}) wired by ``edges`` ("a.out -> b.in").

    ``inputs`` are the "node.port" targets the script feeds. Every output port of every node
    is collected. Raises TimeoutError if the graph has not ended within ``timeout`` seconds.
    ``stall_timeouts``: a node's ``stall_timeout_s``, by name.
    """
    loaded: dict[str, LoadedNode] = {}
    for name, (type_name, params) in nodes.items():
        node_type = get_node_type(type_name)
        assert node_type is not None, f"unknown node type {type_name}"
        loaded[name] = LoadedNode(
            name,
            type_name,
            node_type,
            node_type.Params.model_validate(params),
            None,
            (stall_timeouts or {}).get(name),
        )
    targets = list(inputs)
    feeder = _feeder_type(targets, script)
    loaded["_feed"] = LoadedNode("_feed", feeder.type_name, feeder, feeder.Params(), None)

    wires = [tuple(part.strip().split(".") for part in e.split("->")) for e in edges]
    wires += [(["_feed", f"out{i}"], t.split(".")) for i, t in enumerate(targets)]
    received: dict[str, list[Received]] = {}
    for name, node in list(loaded.items()):
        if name == "_feed":
            continue
        for port in node.node_type.outputs:
            sink = received.setdefault(f"{name}.{port}", [])
            collector = _collector_type(sink)
            cname = f"_collect_{name}_{port}"
            loaded[cname] = LoadedNode(
                cname, collector.type_name, collector, collector.Params(), None
            )
            wires.append(([name, port], [cname, "frames"]))

    graph_edges = [
        LoadedEdge(src, sport, dst, dport, 256, "block", Frame, None)
        for (src, sport), (dst, dport) in wires
    ]
    graph = LoadedGraph("<harness>", "harness", "", ServerSpec(), loaded, graph_edges)
    session = Session(graph)
    result = Result(session, received)
    session.subscribe(result.events.append)
    with anyio.fail_after(timeout):
        await session.run()
    return result


async def run_node(
    type_name: str,
    params: dict[str, Any] | None = None,
    script: Iterable[Step] = (),
    timeout: float = 60.0,
    stall_timeout_s: float | None = None,
) -> Result:
    """Run one node of ``type_name``: the script feeds its input ports ("port" targets)."""
    node_type = get_node_type(type_name)
    assert node_type is not None, f"unknown node type {type_name}"
    script = ((f"node.{s[0]}", s[1]) if isinstance(s, tuple) else s for s in script)
    result = await run_graph(
        {"node": (type_name, params or {})},
        [],
        script,
        [f"node.{port}" for port in node_type.inputs],
        timeout,
        {"node": stall_timeout_s} if stall_timeout_s else None,
    )
    result.received = {key.split(".", 1)[1]: value for key, value in result.received.items()}
    return result


async def transcribe(
    samples: np.ndarray,
    sample_rate: int,
    realtime: bool = False,
    vad: dict[str, Any] | None = None,
    stt: dict[str, Any] | None = None,
) -> Result:
    """Run ``samples`` through vad.silero -> stt.whisper; outputs "vad.events", "stt.transcript"."""
    nodes = {
        "vad": ("vad.silero", {"min_silence_ms": 400, **(vad or {})}),
        "stt": ("stt.whisper", {"partial_interval_ms": 0, **(stt or {})}),
    }
    edges = ["vad.audio -> stt.audio", "vad.events -> stt.vad"]
    steps = audio_steps("vad.audio", samples, sample_rate, realtime=realtime)
    return await run_graph(nodes, edges, steps, ["vad.audio"], timeout=120)


def final_texts(result: Result) -> list[str]:
    """The final transcripts of a :func:`transcribe` run."""
    return [t.text for t in result.frames("stt.transcript") if t.final]  # type: ignore[attr-defined]
