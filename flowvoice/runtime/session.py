"""One session: node instances and bounded channels built from a validated graph, run to the end.

Each node runs as a task in the session's task group. Input frames are delivered to
:meth:`Node.process` one at a time; a node with several inbound edges reads them
concurrently but processes them one by one. ``EndOfStream`` on every inbound edge ends a
node, which then forwards ``EndOfStream`` downstream. A node error ends the session with a
:class:`SessionError` that names the node.

Turns and preemption: :meth:`Session.new_turn` raises the session's turn. Preemptible
nodes have the frame they are processing cancelled (a cancel scope per dispatch), drop
frames of older turns on read and on emit, every node's ``on_interrupt`` hook runs, then
every turn hook (:meth:`Session.on_new_turn`).

The session knows nothing of voices or conversations: layers above keep their per-session
state in objects the session hands out (:meth:`Session.shared`) or was given (``services``).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

from flowvoice.frames import UNSTAMPED, EndOfStream, Frame
from flowvoice.graph.spec import LoadedGraph
from flowvoice.node import Node, NodeStalled
from flowvoice.runtime.channel import Channel, ChannelClosed, Overflow
from flowvoice.runtime.resources import ResourceCache, shared_resources
from flowvoice.runtime.trace import Tracer, TurnTrace

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("flowvoice.session")
_session_ids = itertools.count(1)

T = TypeVar("T")
EventListener = Callable[[dict[str, Any]], None]
TurnHook = Callable[[int], None]


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
    """The runtime's :class:`flowvoice.node.NodeContext`: one node's outputs and its session."""

    def __init__(self, session: Session, node_name: str, preemptible: bool):
        self._session = session
        self.node_name = node_name
        self._preemptible = preemptible
        self.outputs: dict[str, list[Channel[Frame]]] = {}
        #: Turn of the frame being processed; stamps what the node emits meanwhile.
        self.processing_turn = UNSTAMPED
        #: Set while a frame is processed under a stall timeout.
        self.stall_watch: StallWatch | None = None
        self.task_group: TaskGroup | None = None

    @property
    def turn(self) -> int:
        return self._session.turn

    @property
    def frame_turn(self) -> int:
        """Turn of the frame being processed, else the session's current turn."""
        return self.processing_turn if self.processing_turn != UNSTAMPED else self.turn

    @property
    def resources(self) -> ResourceCache:
        return self._session.resources

    async def emit(self, port: str, frame: Frame) -> None:
        session_turn = self._session.turn
        if frame.turn == UNSTAMPED:
            processing = self.processing_turn
            frame.turn = processing if processing != UNSTAMPED else session_turn
        if self._preemptible and frame.turn < session_turn:
            return
        if self.stall_watch is not None:
            self.stall_watch.progress()
        for channel in self.outputs[port]:
            await channel.send(frame)

    def publish(self, event_type: str, **data: Any) -> None:
        self._session.publish({"type": event_type, **data})

    def mark(self, stage: str, turn: int | None = None, t_ns: int | None = None) -> None:
        self._session.tracer.mark(self.turn if turn is None else turn, stage, t_ns)

    def trace(self, turn: int) -> TurnTrace | None:
        return self._session.tracer.turns.get(turn)

    async def new_turn(self, reason: str = "turn") -> int:
        return await self._session.new_turn(reason)

    def service(self, kind: type[T]) -> T | None:
        return self._session.service(kind)

    def shared(self, kind: type[T]) -> T:
        return self._session.shared(kind)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self.task_group is None:
            raise RuntimeError("start_soon() is only available while the node runs")
        self.task_group.start_soon(fn, *args)


class Session:
    """Runs one instance of a graph until its sources end, it is cancelled, or a node fails.

    ``services`` are objects nodes look up by type (:meth:`service`), e.g. the connection's
    transport.
    """

    def __init__(
        self,
        graph: LoadedGraph,
        resources: ResourceCache | None = None,
        services: Iterable[object] = (),
    ):
        self.id = next(_session_ids)
        self.graph = graph
        self.resources = resources or shared_resources
        self.turn = 0
        self.listeners: list[EventListener] = []
        self.tracer = Tracer(on_complete=self._publish_metrics)
        self.stale_dropped = 0
        self._services: dict[type, object] = {type(s): s for s in services}
        self._shared: dict[type, object] = {}
        self._turn_hooks: list[TurnHook] = []
        self.nodes: dict[str, Node] = {}
        self._contexts: dict[str, NodeContext] = {}
        for name, spec in graph.nodes.items():
            context = NodeContext(self, name, spec.node_type.preemptible)
            context.outputs = {port: [] for port in spec.node_type.outputs}
            self.nodes[name] = spec.node_type(name, spec.params, context)
            self._contexts[name] = context
        self.edges: list[Edge] = []
        self._inbound: dict[str, list[Edge]] = {name: [] for name in self.nodes}
        for e in graph.edges:
            channel: Channel[Frame] = Channel(e.buffer, Overflow(e.overflow), name=e.name)
            edge = Edge(e.source, e.source_port, e.target, e.target_port, channel)
            self.edges.append(edge)
            self._contexts[e.source].outputs[e.source_port].append(channel)
            self._inbound[e.target].append(edge)
        self._inflight: dict[str, anyio.CancelScope] = {}

    # -- services ----------------------------------------------------------------------------
    def service(self, kind: type[T]) -> T | None:
        """The service of type ``kind`` (or a subclass) this session was started with, or None."""
        found = self._services.get(kind)
        if found is None:
            found = next((s for s in self._services.values() if isinstance(s, kind)), None)
        return found if isinstance(found, kind) else None

    def shared(self, kind: type[T]) -> T:
        """The session's one instance of ``kind``, made as ``kind(self)`` on first use."""
        found = self._shared.get(kind)
        if not isinstance(found, kind):
            found = self._shared[kind] = kind(self)  # type: ignore[call-arg]
        return found

    # -- events ------------------------------------------------------------------------------
    def subscribe(self, listener: EventListener) -> None:
        self.listeners.append(listener)

    def publish(self, event: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(event)

    def _publish_metrics(self, trace: TurnTrace) -> None:
        self.publish({"type": "metrics", "turn": trace.turn, "latency_ms": trace.latencies_ms()})

    def drops(self) -> dict[str, int]:
        """Frames dropped by each edge's overflow policy."""
        return {e.channel.name: e.channel.dropped for e in self.edges}

    # -- turns -------------------------------------------------------------------------------
    def on_new_turn(self, hook: TurnHook) -> None:
        """Call ``hook(turn)`` after every raise of the turn, once the nodes have been told."""
        self._turn_hooks.append(hook)

    async def new_turn(self, reason: str = "turn") -> int:
        """Raise the turn: cancel preemptible in-flight work and tell every node."""
        self.turn += 1
        for scope in self._inflight.values():
            scope.cancel()
        for node in self.nodes.values():
            await node.on_interrupt(self.turn)
        for hook in self._turn_hooks:
            hook(self.turn)
        log.debug("session %d: turn %d (%s)", self.id, self.turn, reason)
        return self.turn

    # -- running -----------------------------------------------------------------------------
    async def setup(self) -> None:
        """Load and warm every node's models (cached across sessions)."""
        for name, node in self.nodes.items():
            try:
                await node.setup()
            except Exception as exc:
                raise SessionError(name, node.type_name, exc) from exc

    async def teardown(self) -> None:
        """Release every node's per-session resources; a failing teardown is only logged."""
        with anyio.CancelScope(shield=True):
            for node in self.nodes.values():
                try:
                    await node.teardown()
                except Exception:
                    log.exception("teardown of node %s failed", node.name)

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
            await self.teardown()

    async def _run_node(self, node: Node) -> None:
        context = self._contexts[node.name]
        inbound = self._inbound[node.name]
        try:
            async with anyio.create_task_group() as tg:
                context.task_group = tg
                if inbound:
                    tg.start_soon(node.run)
                    await self._read_inputs(node, inbound)
                    await node.end_of_stream()
                else:
                    await node.run()
                tg.cancel_scope.cancel()
            for channels in context.outputs.values():
                for channel in channels:
                    await channel.send(EndOfStream(turn=self.turn))
        except Exception as exc:
            error = _leaf_error(exc)
            raise SessionError(node.name, node.type_name, error) from error
        finally:
            context.task_group = None

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
        context = self._contexts[node.name]
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
                await self._dispatch(node, context, port, frame)
            else:
                async with lock:
                    await self._dispatch(node, context, port, frame)

    async def _dispatch(self, node: Node, context: NodeContext, port: str, frame: Frame) -> None:
        context.processing_turn = frame.turn
        if not node.preemptible:
            await self._process(node, context, port, frame)
            return
        if frame.turn < self.turn:
            self.stale_dropped += 1
            return
        with anyio.CancelScope() as scope:
            self._inflight[node.name] = scope
            try:
                await self._process(node, context, port, frame)
            finally:
                del self._inflight[node.name]

    async def _process(self, node: Node, context: NodeContext, port: str, frame: Frame) -> None:
        timeout = self.graph.nodes[node.name].stall_timeout_s
        if timeout is None:
            await node.process(port, frame)
            return
        watch = context.stall_watch = StallWatch(timeout)
        try:
            with watch.scope:
                await node.process(port, frame)
        finally:
            context.stall_watch = None
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
