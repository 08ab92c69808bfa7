"""Browser I/O nodes: the microphone and the speaker of a browser session.

Both talk to the session's transport (a :class:`flowvoice.transport.BrowserTransport`: the
WebSocket of ``/ws`` or a WebRTC peer connection), which the server creates per connection;
see :mod:`flowvoice.transport` for the wire protocol.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from flowvoice.frames import AudioFrame
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, NodeSetupError, Port
from flowvoice.nodes.audio import Resampler
from flowvoice.nodes.speaker import SpeakerSink
from flowvoice.transport import BrowserTransport


def _transport(node: Node) -> BrowserTransport:
    transport = node.context.service(BrowserTransport)
    if transport is None:
        raise NodeSetupError(
            f"{node.type_name} needs a browser connection: serve the graph with "
            "`flowvoice run`, or use `flowvoice chat` to run it on a WAV file"
        )
    return transport


class SourceParams(NodeParams):
    sample_rate: int = Field(16000, ge=8000, le=48000, description="Output sample rate in Hz.")
    frame_ms: int = Field(20, ge=5, le=200, description="Duration of each emitted frame in ms.")


@register("websocket.source")
class WebSocketSource(Node):
    """The browser's microphone: PCM16 frames of ``frame_ms`` at ``sample_rate``.

    Client audio at another rate (the hello's ``sample_rate``) is resampled with soxr. Ends
    when the connection closes.
    """

    outputs = {"audio": Port(AudioFrame, doc="PCM16 mono microphone frames")}
    Params = SourceParams
    params: SourceParams

    async def run(self) -> None:
        transport = _transport(self)
        rate = self.params.sample_rate
        step = rate * self.params.frame_ms // 1000
        pending = np.zeros(0, np.int16)
        resampler: Resampler | None = None
        async for chunk in transport.audio():
            samples = chunk.samples
            if chunk.sample_rate != rate:
                if resampler is None or resampler.in_rate != chunk.sample_rate:
                    resampler = Resampler(chunk.sample_rate, rate)
                samples = resampler(samples)
            pending = np.concatenate([pending, samples]) if len(pending) else samples
            while len(pending) >= step:
                frame, pending = pending[:step], pending[step:]
                await self.emit(
                    "audio", AudioFrame(samples=frame, sample_rate=rate, t_ns=chunk.t_ns)
                )


@register("websocket.sink")
class WebSocketSink(SpeakerSink):
    """The browser's speaker: assistant audio as binary messages, reply text as events.

    Audio is paced to real time plus ``lead_ms`` and held while a possible barge-in is being
    checked; on a new turn while the assistant is still speaking it drops unsent audio and
    sends ``interrupt`` so the browser flushes its buffer.
    """

    async def deliver(self, turn: int, sample_rate: int, samples: np.ndarray) -> None:
        await _transport(self).send_audio(turn, sample_rate, samples)

    async def on_interrupt(self, turn: int) -> None:
        await super().on_interrupt(turn)
        if not self.speaking():
            return
        _transport(self).discard_audio(before_turn=turn)
        self.audio_turn = self.open_reply = None
        self.context.publish("interrupt", turn=turn)
