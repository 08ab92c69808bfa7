"""The node contract: typed ports, a params model, and async hooks the runtime calls.

A node type is a subclass of :class:`Node` registered under a dotted name::

    @register("text.upper")
    class Upper(Node):
        \"\"\"Upper-cases sentences.\"\"\"
        inputs = {"text": Port(Sentence)}
        outputs = {"text": Port(Sentence)}

        async def process(self, port: str, frame: Frame) -> None:
            await self.emit("text", Sentence(text=frame.text.upper()))

The runtime builds one instance per session, calls :meth:`setup` once, :meth:`run` as the
node's own task (sources produce frames there), :meth:`process` for every input frame,
:meth:`end_of_stream` when every connected input has ended, and :meth:`on_interrupt` when
the session's turn is raised. Heavy engine imports belong in :meth:`setup`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from flowvoice.frames import UNSTAMPED, Frame

if TYPE_CHECKING:
    from flowvoice.runtime.channel import Channel
    from flowvoice.runtime.session import NodeContext, StallWatch


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
        self._out: dict[str, list[Channel]] = {port: [] for port in self.outputs}
        #: Turn of the frame being processed; stamps what this node emits meanwhile.
        self.current_turn: int = UNSTAMPED
        #: Set by the runtime while a frame is processed under a stall timeout.
        self.stall_watch: StallWatch | None = None

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
    async def emit(self, port: str, frame: Frame) -> None:
        """Send ``frame`` to every edge connected to output ``port``.

        An unstamped frame takes the turn of the frame being processed, else the session's
        current turn. A preemptible node's frames of an older turn are dropped here.
        """
        if frame.turn == UNSTAMPED:
            frame.turn = self.current_turn if self.current_turn != UNSTAMPED else self.context.turn
        if self.preemptible and frame.turn < self.context.turn:
            return
        if self.stall_watch is not None:
            self.stall_watch.progress()
        for channel in self._out[port]:
            await channel.send(frame)

    def is_connected(self, port: str) -> bool:
        """True when output ``port`` has at least one edge."""
        return bool(self._out.get(port))

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the background until this node ends."""
        self.context.start_soon(fn, *args)
