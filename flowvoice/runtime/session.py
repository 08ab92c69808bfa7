"""One conversation: node instances and bounded channels built from a validated graph.

Each node runs as a task in the session's task group. Input frames are delivered to
:meth:`Node.process` one at a time; a node with several inbound edges reads them
concurrently but processes them one by one. ``EndOfStream`` on every inbound edge ends a
node, which then forwards ``EndOfStream`` downstream. A node error ends the session with a
:class:`SessionError` that names the node.

Turns and preemption: :meth:`Session.new_turn` raises the session's turn. Preemptible
nodes have the frame they are processing cancelled (a cancel scope per dispatch), drop
frames of older turns on read, and every node's ``on_interrupt`` hook runs.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from flowvoice.frames import EndOfStream, Frame
from flowvoice.graph.spec import LoadedGraph
from flowvoice.node import Node, NodeStalled
from flowvoice.runtime.channel import Channel, ChannelClosed, Overflow
from flowvoice.runtime.playback import PlaybackLedger
from flowvoice.runtime.resources import ResourceCache, shared_resources
from flowvoice.runtime.speaker import SpeakerGate
from flowvoice.runtime.trace import Tracer, TurnTrace

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("flowvoice.session")
_session_ids = itertools.count(1)

EventListener = Callable[[dict[str, Any]], None]


class SessionError(RuntimeError):
    """A node failed; ``node`` and ``node_type`` name it and ``__cause__`` is the error."""

    def __init__(self, node: str, node_type: str, error: BaseException):
        self.node = node
        self.node_type = node_type
        self.error = error
        super().__init__(f"node '{node}' ({node_type}) failed: {type(error).__name__}: {error}")


@dataclass
class Edge:
    """A built edge: the channel between an output port and an input port."""

    source: str
    source_port: str
    target: str
    target_port: str
    channel: Channel[Frame]


class StallWatch:
    """A deadline on processing one frame that every emit pushes back."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.scope = anyio.CancelScope(deadline=anyio.current_time() + timeout_s)

    def progress(self) -> None:
        self.scope.deadline = anyio.current_time() + self.timeout_s


class NodeContext:
    """What a node may ask of its session."""

    def __init__(self, session: Session, node_name: str):
        self._session = session
        self.node_name = node_name
        self._task_group: TaskGroup | None = None

    @property
    def session_id(self) -> int:
        return self._session.id

    @property
    def turn(self) -> int:
        """The session's current turn."""
        return self._session.turn

    @property
    def resources(self) -> ResourceCache:
        return self._session.resources

    @property
    def playback(self) -> PlaybackLedger:
        """What the assistant said per turn and how much of it the user heard."""
        return self._session.playback

    @property
    def transport(self) -> Any:
        """The session's I/O endpoint (e.g. the WebSocket connection), or None."""
        return self._session.transport

    def mark(self, stage: str, turn: int | None = None, t_ns: int | None = None) -> None:
        """Record a latency-trace stage for ``turn`` (default: the current turn)."""
        self._session.tracer.mark(self.turn if turn is None else turn, stage, t_ns)

    def trace(self, turn: int) -> TurnTrace | None:
        return self._session.tracer.turns.get(turn)

    def publish(self, event_type: str, **data: Any) -> None:
        """Send an event (transcripts, errors, ...) to the session's listeners."""
        self._session.publish({"type": event_type, **data})

    async def new_turn(self, reason: str = "turn", speculative: bool = False) -> int:
        """Raise the session's turn, preempting older work; returns the new turn.

        A ``speculative`` turn's output is held by sinks until :meth:`commit` releases it.
        """
        return await self._session.new_turn(reason, speculative)

    def commit(self, turn: int) -> None:
        """Release a speculative turn: its held and future output goes out."""
        self._session.commit(turn)

    def is_committed(self, turn: int) -> bool:
        """False for a speculative turn not (or never to be) committed."""
        return self._session.is_committed(turn)

    async def wait_committed(self, turn: int) -> None:
        """Return once ``turn`` is committed (at once for ordinary turns)."""
        await self._session.wait_committed(turn)

    @property
    def speaker(self) -> SpeakerGate:
        """Pauses assistant audio while a possible barge-in is being checked."""
        return self._session.speaker

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._task_group is None:
            raise RuntimeError("start_soon() is only available while the node runs")
        self._task_group.start_soon(fn, *args)


class Session:
    """Runs one instance of a graph until its sources end, it is cancelled, or a node fails."""

    def __init__(
        self,
        graph: LoadedGraph,
        resources: ResourceCache | None = None,
        overrides: dict[str, dict[str, Any]] | None = None,
        transport: Any = None,
    ):
        self.id = next(_session_ids)
        self.graph = graph
        self.resources = resources or shared_resources
        self.transport = transport
        self.turn = 0
        self.listeners: list[EventListener] = []
        self.tracer = Tracer(on_complete=self._publish_metrics)
        self.playback = PlaybackLedger()
        self.speaker = SpeakerGate(self.playback, self._publish_voice_state)
        self._uncommitted: dict[int, anyio.Event] = {}
        self.stale_dropped = 0
        self.nodes: dict[str, Node] = {}
        self._contexts: dict[str, NodeContext] = {}
        for name, spec in graph.nodes.items():
            context = NodeContext(self, name)
            params = spec.params
            if overrides and name in overrides:
                params = spec.node_type.Params.model_validate(
                    {**params.model_dump(), **overrides[name]}
                )
            self.nodes[name] = spec.node_type(name, params, context)
            self._contexts[name] = context
        self.edges: list[Edge] = []
        self._inbound: dict[str, list[Edge]] = {name: [] for name in self.nodes}
        for e in graph.edges:
            channel: Channel[Frame] = Channel(
                e.buffer,
                Overflow(e.overflow),
                name=f"{e.source}.{e.source_port}->{e.target}.{e.target_port}",
            )
            edge = Edge(e.source, e.source_port, e.target, e.target_port, channel)
            self.edges.append(edge)
            self.nodes[e.source]._out[e.source_port].append(channel)
            self._inbound[e.target].append(edge)
        self._inflight: dict[str, anyio.CancelScope] = {}

    # -- events ------------------------------------------------------------------------------
    def subscribe(self, listener: EventListener) -> None:
        self.listeners.append(listener)

    def publish(self, event: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(event)

    def _publish_voice_state(self, paused: bool) -> None:
        self.publish({"type": "voice_paused" if paused else "voice_resumed", "turn": self.turn})

    def _publish_metrics(self, trace: TurnTrace) -> None:
        self.publish({"type": "metrics", "turn": trace.turn, "latency_ms": trace.latencies_ms()})

    def drops(self) -> dict[str, int]:
        """Frames dropped by each edge's overflow policy."""
        return {e.channel.name: e.channel.dropped for e in self.edges}

    # -- turns -------------------------------------------------------------------------------
    async def new_turn(self, reason: str = "turn", speculative: bool = False) -> int:
        """Raise the turn: cancel preemptible in-flight work and tell every node."""
        self.turn += 1
        for stale in [t for t in self._uncommitted if t < self.turn - 64]:
            del self._uncommitted[stale]
        if speculative:
            self._uncommitted[self.turn] = anyio.Event()
        for scope in self._inflight.values():
            scope.cancel()
        for node in self.nodes.values():
            await node.on_interrupt(self.turn)
        self.speaker.resume()  # after on_interrupt: a paused speaker was still speaking
        log.debug("session %d: turn %d (%s)", self.id, self.turn, reason)
        return self.turn

    def commit(self, turn: int) -> None:
        event = self._uncommitted.pop(turn, None)
        if event is not None:
            event.set()

    def is_committed(self, turn: int) -> bool:
        return turn not in self._uncommitted

    async def wait_committed(self, turn: int) -> None:
        event = self._uncommitted.get(turn)
        if event is not None:
            await event.wait()

    # -- running -----------------------------------------------------------------------------
    async def setup(self) -> None:
        """Load and warm every node's models (cached across sessions)."""
        for name, node in self.nodes.items():
            try:
                await node.setup()
            except Exception as exc:
                raise SessionError(name, node.type_name, exc) from exc

    async def run(self) -> None:
        """Set up every node, then run them all until the graph ends."""
        try:
            await self.setup()
            try:
                async with anyio.create_task_group() as tg:
                    for node in self.nodes.values():
                        tg.start_soon(self._run_node, node)
            except BaseException as exc:
                error = _first_session_error(exc)
                if error is None:
                    raise
                raise error from error.error
        finally:
            with anyio.CancelScope(shield=True):
                for node in self.nodes.values():
                    try:
                        await node.teardown()
                    except Exception:
                        log.exception("teardown of node %s failed", node.name)

    async def _run_node(self, node: Node) -> None:
        context = self._contexts[node.name]
        inbound = self._inbound[node.name]
        try:
            async with anyio.create_task_group() as tg:
                context._task_group = tg
                if inbound:
                    tg.start_soon(node.run)
                    await self._read_inputs(node, inbound)
                    await node.end_of_stream()
                else:
                    await node.run()
                tg.cancel_scope.cancel()
            for channels in node._out.values():
                for channel in channels:
                    await channel.send(EndOfStream(turn=self.turn))
        except Exception as exc:
            error = _leaf_error(exc)
            raise SessionError(node.name, node.type_name, error) from error
        finally:
            context._task_group = None

    async def _read_inputs(self, node: Node, inbound: list[Edge]) -> None:
        if len(inbound) == 1:
            await self._pump(node, inbound[0], None)
            return
        lock = anyio.Lock()
        async with anyio.create_task_group() as tg:
            for edge in inbound:
                tg.start_soon(self._pump, node, edge, lock)

    async def _pump(self, node: Node, edge: Edge, lock: anyio.Lock | None) -> None:
        channel, port = edge.channel, edge.target_port
        preemptible = node.preemptible
        while True:
            try:
                frame = await channel.receive()
            except ChannelClosed:
                return
            if type(frame) is EndOfStream:
                return
            if preemptible and frame.turn < self.turn:
                self.stale_dropped += 1
                continue
            if lock is None:
                await self._dispatch(node, port, frame)
            else:
                async with lock:
                    await self._dispatch(node, port, frame)

    async def _dispatch(self, node: Node, port: str, frame: Frame) -> None:
        node.current_turn = frame.turn
        if not node.preemptible:
            await self._process(node, port, frame)
            return
        if frame.turn < self.turn:
            self.stale_dropped += 1
            return
        with anyio.CancelScope() as scope:
            self._inflight[node.name] = scope
            try:
                await self._process(node, port, frame)
            finally:
                del self._inflight[node.name]

    async def _process(self, node: Node, port: str, frame: Frame) -> None:
        timeout = self.graph.nodes[node.name].stall_timeout_s
        if timeout is None:
            await node.process(port, frame)
            return
        watch = node.stall_watch = StallWatch(timeout)
        try:
            with watch.scope:
                await node.process(port, frame)
        finally:
            node.stall_watch = None
        if watch.scope.cancelled_caught:
            raise NodeStalled(
                f"no progress for {timeout:g} s while processing {type(frame).__name__} "
                f"(stall_timeout_s: {timeout:g})"
            )


def _leaf_error(exc: BaseException) -> BaseException:
    """The first real error inside nested exception groups (the one a user needs to see)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _first_session_error(exc: BaseException) -> SessionError | None:
    """The first SessionError inside a (possibly nested) exception group."""
    if isinstance(exc, SessionError):
        return exc
    children: Iterable[BaseException] = getattr(exc, "exceptions", ())
    for child in children:
        found = _first_session_error(child)
        if found is not None:
            return found
    return None
