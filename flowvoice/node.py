"""The node contract: typed ports, a params model, async hooks, and what a session offers.

A node type is a subclass of :class:`Node` registered under a dotted name::

    @register("text.upper")
    class Upper(Node):
        \"\"\"Upper-cases sentences.\"\"\"
        inputs = {"text": Port(Sentence)}
        outputs = {"text": Port(Sentence)}

        async def process(self, port: str, frame: Frame) -> None:
            await self.emit("text", Sentence(text=frame.text.upper()))

The runtime builds one instance per session with a :class:`NodeContext` (the node's outputs
and the session's services), calls :meth:`Node.setup` once, :meth:`Node.run` as the node's
own task (sources produce frames there), :meth:`Node.process` for every input frame,
:meth:`Node.end_of_stream` when every connected input has ended, and
:meth:`Node.on_interrupt` when the session's turn is raised. Heavy engine imports belong in
:meth:`Node.setup`.

This module sits at the bottom of the import graph: it knows frames and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from flowvoice.frames import Frame

T = TypeVar("T")


@dataclass(frozen=True)
class Port:
    """A typed input or output. ``required`` inputs must be connected in every graph."""

    frame_type: type[Frame]
    required: bool = True
    doc: str = ""


class NodeParams(BaseModel):
    """Base of every node's params model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class NodeStalled(RuntimeError):
    """A node made no progress on a frame for longer than its ``stall_timeout_s``."""


class NodeSetupError(RuntimeError):
    """A node cannot start (missing weights, missing extra, bad device): the message says why."""


class ModelCache(Protocol):
    """Process-wide cache of loaded models (``flowvoice.runtime.resources``)."""

    async def get(self, key: Hashable, load: Callable[[], T], *, label: str = "") -> T:
        """The model for ``key``, loaded by ``load()`` in a worker thread the first time."""
        ...


class TurnMarks(Protocol):
    """A turn's latency trace (``flowvoice.runtime.trace.TurnTrace``)."""

    marks: dict[str, int]

    def latencies_ms(self) -> dict[str, float]: ...


class NodeContext(Protocol):
    """What a node may ask of its session; the runtime hands one to every node it builds."""

    node_name: str

    @property
    def turn(self) -> int:
        """The session's current turn."""
        ...

    @property
    def frame_turn(self) -> int:
        """Turn of the frame being processed, else the session's current turn."""
        ...

    @property
    def resources(self) -> ModelCache:
        """The process-wide model cache."""
        ...

    async def emit(self, port: str, frame: Frame) -> None:
        """Send ``frame`` on the node's output ``port`` (see :meth:`Node.emit`)."""
        ...

    def publish(self, event_type: str, **data: Any) -> None:
        """Send an event (transcripts, errors, ...) to the session's listeners."""
        ...

    def mark(self, stage: str, turn: int | None = None, t_ns: int | None = None) -> None:
        """Record a latency-trace stage for ``turn`` (default: the current turn)."""
        ...

    def trace(self, turn: int) -> TurnMarks | None:
        """The latency trace of ``turn`` so far, if any stage was recorded."""
        ...

    async def new_turn(self, reason: str = "turn") -> int:
        """Raise the session's turn, preempting older work; returns the new turn."""
        ...

    def service(self, kind: type[T]) -> T | None:
        """The object of type ``kind`` the session was started with (e.g. its transport)."""
        ...

    def shared(self, kind: type[T]) -> T:
        """The session's one ``kind(session)``, made on first use (e.g. its conversation)."""
        ...

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the background until this node ends."""
        ...


class Node:
    """Base class of all node types."""

    type_name: ClassVar[str] = ""
    inputs: ClassVar[dict[str, Port]] = {}
    outputs: ClassVar[dict[str, Port]] = {}
    Params: ClassVar[type[NodeParams]] = NodeParams
    #: Preemptible nodes drop frames of older turns and have in-flight work cancelled.
    preemptible: ClassVar[bool] = False

    def __init__(self, name: str, params: NodeParams, context: NodeContext) -> None:
        self.name = name
        self.params = params
        self.context = context

    # -- hooks -------------------------------------------------------------------------------
    async def setup(self) -> None:
        """Load models and warm them up. Runs once per session, before any frame flows."""

    async def run(self) -> None:
        """Produce frames (sources) or run background work. Returns when done."""

    async def process(self, port: str, frame: Frame) -> None:
        """Handle one frame that arrived on input ``port``."""

    async def end_of_stream(self) -> None:
        """Every connected input has ended: flush what is buffered."""

    async def on_interrupt(self, turn: int) -> None:
        """The session moved to ``turn``; drop state of older turns."""

    async def teardown(self) -> None:
        """Release per-session resources. Called even when the session failed."""

    # -- helpers for subclasses --------------------------------------------------------------
    def emit(self, port: str, frame: Frame) -> Awaitable[None]:
        """Send ``frame`` to every edge connected to output ``port`` (await the result).

        An unstamped frame takes the turn of the frame being processed, else the session's
        current turn. A preemptible node's frames of an older turn are dropped.
        """
        return self.context.emit(port, frame)  # no coroutine of its own: one hop per frame

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the background until this node ends."""
        self.context.start_soon(fn, *args)
