"""``test.scripted_mic``: a microphone that speaks WAV files on cue, for barge-in runs.

It streams 20 ms frames in real time (silence between utterances) and starts each utterance
either after a pause or once the assistant has been audible for a while, so a test or a
benchmark can interrupt a reply at a chosen point whatever the engines' speed.
"""

from __future__ import annotations

import anyio
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flowvoice.conversation import Conversation
from flowvoice.frames import AudioFrame
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, Port
from flowvoice.nodes.audio import Resampler, read_wav

RATE = 16000
FRAME = RATE // 50


class Cue(BaseModel):
    """One utterance and when to say it."""

    model_config = ConfigDict(extra="forbid")
    wav: str = Field(description="PCM16 WAV to speak.")
    pause_s: float = Field(0.5, ge=0, description="Silence before it (after the previous one).")
    assistant_s: float | None = Field(
        None,
        ge=0,
        description="Also wait until the assistant's reply has played this long (barge-in).",
    )
    timeout_s: float = Field(30.0, gt=0, description="Speak anyway after this long.")


class ScriptedMicParams(NodeParams):
    script: list[Cue] = Field(description="Utterances in order.")
    tail_s: float = Field(3.0, ge=0, description="Silence after the last utterance.")


@register("test.scripted_mic")
class ScriptedMic(Node):
    """A real-time microphone that speaks WAV files on cue (after pauses or mid-reply)."""

    outputs = {"audio": Port(AudioFrame, doc="PCM16 16 kHz, 20 ms frames in real time")}
    Params = ScriptedMicParams
    params: ScriptedMicParams

    async def setup(self) -> None:
        self.clips: list[np.ndarray] = []
        for cue in self.params.script:
            samples, rate = read_wav(cue.wav)
            self.clips.append(samples if rate == RATE else Resampler(rate, RATE)(samples, True))
        #: Monotonic ns when each utterance started and ended (for tests and benchmarks).
        self.spoken: list[tuple[int, int]] = []

    async def run(self) -> None:
        self._next = anyio.current_time()
        silence = np.zeros(FRAME, np.int16)
        for cue, clip in zip(self.params.script, self.clips, strict=True):
            waited = 0.0
            while waited < cue.pause_s or not self._cued(cue, waited):
                await self._send(silence)
                waited += FRAME / RATE
            start = self._next
            for offset in range(0, len(clip), FRAME):
                await self._send(clip[offset : offset + FRAME])
            self.spoken.append((int(start * 1e9), int(self._next * 1e9)))
        for _ in range(int(self.params.tail_s * RATE / FRAME)):
            await self._send(silence)

    def _cued(self, cue: Cue, waited: float) -> bool:
        if cue.assistant_s is None or waited >= cue.timeout_s:
            return True
        playback = Conversation.of(self.context).playback
        return playback.heard_seconds(self.context.turn) >= cue.assistant_s

    async def _send(self, samples: np.ndarray) -> None:
        await anyio.sleep_until(self._next)
        self._next += len(samples) / RATE
        await self.emit("audio", AudioFrame(samples=samples, sample_rate=RATE))
