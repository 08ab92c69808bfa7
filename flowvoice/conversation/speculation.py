"""Speculation: start the reply before the turn commits, release it the moment it does.

As soon as the user's speech pauses and the STT's ``stable`` transcript of the pause is in
(or, failing that, once the turn could commit), a held turn starts the reply while the
silence wait runs; sinks hold its output. If the user stays silent and the final text is the
same, committing releases the held reply at once; if they speak on or the text changes, the
held turn is dropped by raising the turn again (and the LLM forgets the exchange).

The silence wait is then stretched to the measured time a reply needs (end of speech to its
first audio), since waiting that long costs nothing and gives the user more time to go on;
the stretch ends as soon as the held reply's first audio exists.
"""

from __future__ import annotations

from pydantic import Field

from flowvoice.conversation.state import Conversation
from flowvoice.frames import UserTurn
from flowvoice.node import NodeParams

#: Weight of the newest measurement in the running estimate of the reply's time.
READY_SMOOTHING = 0.3


class SpeculationParams(NodeParams):
    speculate: bool = Field(
        False,
        description="Start the reply on the transcript of the pause while the silence wait "
        "runs; release it when the turn commits, cancel it if the user speaks on.",
    )


class Speculation:
    """The turn detector's speculative reply: at most one held at a time."""

    def __init__(self, conversation: Conversation):
        self._conversation = conversation
        self._held: tuple[int, str] | None = None  # (turn, text) held by the sinks
        self._ready_ms = 0.0  # measured end of speech -> first reply audio
        self._released: tuple[int, int] | None = None  # (turn, speech end ns), to measure

    @property
    def text(self) -> str | None:
        """The text of the held reply, if one is held."""
        return self._held[1] if self._held else None

    async def start(self, text: str) -> UserTurn:
        """Hold a new turn answering ``text``; returns the ``UserTurn`` to emit."""
        self._learn_ready_ms()
        turn = await self._conversation.new_held_turn("speculative")
        self._held = (turn, text)
        return UserTurn(turn=turn, text=text)

    async def cancel(self) -> bool:
        """Drop the held reply (the user goes on); whether there was one."""
        if self._held is None:
            return False
        self._held = None
        await self._conversation.new_turn("speculation cancelled")
        return True

    def release(self, text: str, speech_end_ns: int | None) -> int | None:
        """The turn commits with ``text``: release the held reply if it answers that text
        (its turn is returned), else None (the caller starts a fresh turn)."""
        held, self._held = self._held, None
        if held is None or held[1] != text:
            return None
        self._conversation.commit(held[0])
        if speech_end_ns is not None:
            self._released = (held[0], speech_end_ns)
        return held[0]

    def wait_ms(self, base_ms: int, cap_ms: int) -> int:
        """The silence wait: ``base_ms`` stretched towards the reply's measured time (at most
        ``cap_ms``) while the held reply has no audio yet."""
        if self._reply_ready():
            return base_ms
        return max(base_ms, int(min(self._ready_ms, cap_ms)))

    def _reply_ready(self) -> bool:
        if self._held is None:
            return False
        return self._conversation.playback.first_audio_at(self._held[0]) is not None

    def _learn_ready_ms(self) -> None:
        """Fold the last released reply's end-of-speech -> first-audio time into the estimate."""
        if self._released is None:
            return
        turn, end_ns = self._released
        first_audio = self._conversation.playback.first_audio_at(turn)
        if first_audio is None:
            return
        self._released = None
        ready = first_audio * 1000 - end_ns / 1e6
        if self._ready_ms:
            ready = (1 - READY_SMOOTHING) * self._ready_ms + READY_SMOOTHING * ready
        self._ready_ms = ready
