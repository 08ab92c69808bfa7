"""The assistant's voice: real-time pacing, and holding it while a possible barge-in is checked.

Sinks send assistant audio at most ``lead_s`` ahead of real time instead of as fast as TTS
makes it. The listener's buffer then holds only that lead, so an interrupt stops the voice
within it, a pause (the user started talking, maybe just a cough) holds the voice at once,
and a resume continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from flowvoice.conversation.playback import PlaybackLedger


class SpeakerGate:
    """Session-wide switch: paused while the turn detector checks whether speech is a barge-in.

    The playback ledger is told too, so its estimate of what the user heard holds still, and
    ``on_change(paused)`` (the conversation publishes ``voice_paused`` / ``voice_resumed``, so
    a browser holds the lead it has already received too).
    """

    def __init__(
        self, playback: PlaybackLedger, on_change: Callable[[bool], None] | None = None
    ) -> None:
        self._playback = playback
        self._on_change = on_change
        self._resumed = anyio.Event()
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def pause(self) -> None:
        if not self.paused:
            self._resumed = anyio.Event()
            self._playback.pause()
            if self._on_change is not None:
                self._on_change(True)

    def resume(self) -> None:
        if self.paused:
            self._resumed.set()
            self._playback.resume()
            if self._on_change is not None:
                self._on_change(False)

    async def wait_resumed(self) -> None:
        await self._resumed.wait()


class SpeakerClock:
    """One sink's playback clock: how far its sent audio is ahead of real time."""

    def __init__(self, lead_s: float):
        self.lead_s = lead_s
        self._turn: int | None = None
        self._start = 0.0
        self._sent_s = 0.0

    async def pace(self, turn: int, seconds: float, gate: SpeakerGate) -> None:
        """Wait until ``seconds`` more audio of ``turn`` may be sent, then count it as sent."""
        now = anyio.current_time()
        if turn != self._turn or now > self._start + self._sent_s:
            self._turn, self._start, self._sent_s = turn, now, 0.0  # a new stretch of speech
        ahead = self._start + self._sent_s - now
        if ahead > self.lead_s:
            await anyio.sleep(ahead - self.lead_s)
        if gate.paused:
            held_from = anyio.current_time()
            await gate.wait_resumed()
            self._start += anyio.current_time() - held_from
        self._sent_s += seconds
