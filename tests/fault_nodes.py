"""Test-only nodes for fault injection and soak runs (registered on import).

Each forwards audio frames unchanged. The fault nodes misbehave on a *fault frame* (one
whose first sample is :data:`FAULT`), so one client of a server can trigger a fault in its
own session while other sessions of the same graph keep working.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
from pydantic import Field

from flowvoice.frames import AudioFrame, Frame, UserTurn
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, Port
from flowvoice.runtime.threads import stream_from_thread

#: First sample of a frame that triggers a fault node.
FAULT = -31111

#: Set to let every node blocked in ``fault.hang_thread`` return (test teardown).
RELEASE_THREADS = threading.Event()


def is_fault(frame: Frame) -> bool:
    return isinstance(frame, AudioFrame) and len(frame.samples) > 0 and frame.samples[0] == FAULT


class EngineFault(RuntimeError):
    """The error ``fault.raise`` injects."""


class AudioNode(Node):
    """Audio in, the same audio out; subclasses act on fault frames."""

    inputs = {"audio": Port(AudioFrame)}
    outputs = {"audio": Port(AudioFrame)}

    async def process(self, port: str, frame: Frame) -> None:
        if is_fault(frame):
            await self.on_fault()
        await self.emit("audio", frame)

    async def on_fault(self) -> None:
        raise NotImplementedError


@register("fault.raise")
class RaiseOnFault(AudioNode):
    """An engine that raises mid-turn."""

    async def on_fault(self) -> None:
        raise EngineFault("injected engine failure")


@register("fault.hang")
class HangOnFault(AudioNode):
    """An engine that stops answering: awaits forever (cancellable, like a stalled socket)."""

    async def on_fault(self) -> None:
        await anyio.sleep_forever()


@register("fault.hang_thread")
class HangInThread(AudioNode):
    """An engine stuck inside a blocking call in its worker thread (a hung TTS or model),
    driven like the real engines, through :func:`stream_from_thread`; it ignores the
    ``cancelled`` flag until :data:`RELEASE_THREADS` is set."""

    async def on_fault(self) -> None:
        def produce(push: Callable[[int], None], cancelled: threading.Event) -> None:
            push(1)
            RELEASE_THREADS.wait()

        async def consume(item: int) -> None:
            pass

        await stream_from_thread(produce, consume)


class SlowParams(NodeParams):
    delay_ms: float = Field(20.0, ge=0, description="Time spent on each frame.")


@register("fault.slow")
class Slow(AudioNode):
    """A consumer that takes ``delay_ms`` per frame (real time for 20 ms frames)."""

    Params = SlowParams
    params: SlowParams

    async def process(self, port: str, frame: Frame) -> None:
        await anyio.sleep(self.params.delay_ms / 1000)
        await self.emit("audio", frame)


@register("soak.turns")
class TurnPerMark(Node):
    """A stand-in for VAD + STT + turn detection: a frame whose first sample differs from the
    previous frame's starts a new user turn (``user_turn`` event, trace marks), and the
    frames are the reply, stamped with that turn."""

    inputs = {"audio": Port(AudioFrame)}
    outputs = {"audio": Port(AudioFrame), "user_turn": Port(UserTurn, required=False)}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._mark: int | None = None

    async def process(self, port: str, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        mark = int(frame.samples[0])
        if mark != self._mark:
            self._mark = mark
            turn = await self.context.new_turn("user turn")
            self.context.mark("speech_end", turn)
            self.context.mark("turn_committed", turn)
            self.context.publish("user_turn", turn=turn, text=f"turn {mark}")
            await self.emit("user_turn", UserTurn(text=f"turn {mark}", turn=turn))
        frame.turn = self.context.turn
        await self.emit("audio", frame)
