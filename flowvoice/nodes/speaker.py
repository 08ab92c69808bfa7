"""The shared behaviour of assistant-audio sinks (``websocket.sink``, ``audio.file_sink``).

A speaker sink publishes reply text as ``assistant_text`` events, holds a speculative turn's
output until the turn commits, paces audio to real time plus a small lead (so an interrupt
or a pause takes effect within that lead), records what it sent in the playback ledger and
marks ``first_audio_sent``, and publishes ``reply_done`` once the last audio of a reply
(the ``final`` frame) has been sent. Subclasses only deliver the audio.

Audio is paced by the sink's own task, fed through a short queue, so the reply's text is
published as it arrives instead of waiting behind a sentence of paced audio (the runtime
handles one input frame of a node at a time). Pacing checks the session's turn before every
slice: a preempted turn's queued or half-sent audio stops there.
"""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np
from pydantic import Field

from flowvoice.conversation import Conversation
from flowvoice.conversation.voice import SpeakerClock
from flowvoice.frames import AudioFrame, Frame, TextDelta
from flowvoice.node import Node, NodeParams, Port

#: Paced audio goes out in slices of this many ms (a TTS chunk may hold a whole sentence).
SLICE_MS = 40
#: Audio chunks queued for pacing before the sink's input blocks (backpressure).
QUEUED_CHUNKS = 2


class SpeakerParams(NodeParams):
    lead_ms: int = Field(
        250,
        ge=0,
        le=60000,
        description="How far ahead of real time audio is sent; 0 sends as fast as it is made "
        "(an interrupt then relies on the listener flushing its buffer).",
    )


class SpeakerSink(Node):
    """Base of sinks that play the assistant's reply to the user."""

    inputs = {
        "audio": Port(AudioFrame, doc="assistant audio"),
        "text": Port(TextDelta, required=False, doc="assistant text, published as events"),
    }
    Params = SpeakerParams
    params: SpeakerParams
    preemptible = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conversation = Conversation.of(self.context)
        self._clock = SpeakerClock(self.params.lead_ms / 1000)
        #: Turn of the latest audio sent.
        self.audio_turn: int | None = None
        #: Turn of a reply whose text has started but not finished.
        self.open_reply: int | None = None
        self._queue, self._queued = anyio.create_memory_object_stream[AudioFrame](QUEUED_CHUNKS)
        self._played_out = anyio.Event()
        self._playing: tuple[int, anyio.CancelScope] | None = None  # turn being delivered

    async def deliver(self, turn: int, sample_rate: int, samples: np.ndarray) -> None:
        """Send one chunk of assistant audio to the listener."""
        raise NotImplementedError

    async def process(self, port: str, frame: Frame) -> None:
        await self.conversation.wait_committed(frame.turn)
        if isinstance(frame, TextDelta):
            self.open_reply = None if frame.final else frame.turn
            self.context.publish(
                "assistant_text", turn=frame.turn, text=frame.text, final=frame.final
            )
            return
        assert isinstance(frame, AudioFrame)
        await self._queue.send(frame)

    async def run(self) -> None:
        """Pace and deliver the queued audio until the input ends."""
        async with self._queued:
            async for frame in self._queued:
                with anyio.CancelScope() as scope:
                    self._playing = (frame.turn, scope)
                    await self._play(frame)
                self._playing = None
        self._played_out.set()

    async def on_interrupt(self, turn: int) -> None:
        """Stop delivering audio of an older turn at once (a send may be waiting for room)."""
        if self._playing is not None and self._playing[0] < turn:
            self._playing[1].cancel()

    async def end_of_stream(self) -> None:
        """Let the queued audio play out."""
        await self._queue.aclose()
        await self._played_out.wait()

    async def _play(self, frame: AudioFrame) -> None:
        await self._play_samples(frame)
        if frame.final and frame.turn == self.context.turn:
            self.context.publish("reply_done", turn=frame.turn)

    async def _play_samples(self, frame: AudioFrame) -> None:
        rate, turn = frame.sample_rate, frame.turn
        step = len(frame.samples) if not self.params.lead_ms else rate * SLICE_MS // 1000
        for offset in range(0, len(frame.samples), max(step, 1)):
            piece = frame.samples[offset : offset + step]
            if self.params.lead_ms and turn >= self.context.turn:
                await self._clock.pace(turn, len(piece) / rate, self.conversation.voice)
            if turn < self.context.turn:
                return  # preempted: nothing more of this turn
            await self.deliver(turn, rate, piece)
            self.conversation.playback.sent(turn, len(piece) / rate)
            if turn != self.audio_turn:
                self.audio_turn = turn
                self.context.mark("first_audio_sent", turn)

    def speaking(self) -> bool:
        """True while a reply streams or its sent audio has not finished playing."""
        if self.open_reply is not None:
            return True
        if self.conversation.voice.paused:  # held while a barge-in was being checked
            return self.audio_turn is not None
        playback = self.conversation.playback
        return self.audio_turn is not None and playback.is_playing(self.audio_turn)
