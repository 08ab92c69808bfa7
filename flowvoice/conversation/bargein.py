"""Barge-in: does speech that starts while the assistant speaks interrupt it?

Speech that starts during the reply pauses the assistant's voice at once. Once it has lasted
``barge_in_min_speech_ms`` (plus ``barge_in_confirm_ms``, and with ``barge_in_min_words`` in
the partial transcript) it is a barge-in: the turn is raised, which stops the LLM, TTS and
every queued frame of the reply and makes the sinks tell the listener to flush. Speech that
ends sooner (a cough, "mm-hm") is a false alarm: the voice resumes where it paused and its
transcript never becomes a user turn. The browser's echo cancellation keeps the assistant's
own voice out of the microphone; the minimum speech time is the server-side guard against
what leaks through.
"""

from __future__ import annotations

import time

from pydantic import Field

from flowvoice.conversation.state import Conversation
from flowvoice.frames import VADEvent
from flowvoice.node import NodeParams


class BargeInParams(NodeParams):
    """When speech during the assistant's reply interrupts it."""

    barge_in: bool = Field(True, description="Let the user interrupt the assistant by speaking.")
    barge_in_min_speech_ms: int = Field(
        400,
        ge=0,
        le=5000,
        description="Speech must last this long while the assistant speaks to interrupt it "
        "(coughs and 'mm-hm' do not; also the guard against echo the browser lets through).",
    )
    barge_in_confirm_ms: int = Field(
        250,
        ge=0,
        le=5000,
        description="Extra wait before deciding, so speech that already stopped can be seen to "
        "have stopped: set it to the VAD's min_silence_ms (the assistant is paused meanwhile).",
    )
    barge_in_min_words: int = Field(
        0, ge=0, le=20, description="Words the partial transcript must also hold (0: any)."
    )
    resume_false_interruption: bool = Field(
        True,
        description="Pause the assistant when speech starts and resume it if the speech ends "
        "before it qualifies as a barge-in.",
    )


class BargeIn:
    """One session's barge-in decisions, fed the VAD's speech starts and ends."""

    def __init__(self, conversation: Conversation, params: BargeInParams):
        self._conversation = conversation
        self._params = params
        self._start: VADEvent | None = None  # speech that may interrupt the assistant
        self._words = 0
        self._false_alarm_finals = 0  # finals of false alarms still to come

    @property
    def pending(self) -> bool:
        """Speech during the reply is being checked."""
        return self._start is not None

    def speech_started(self, start: VADEvent) -> None:
        """Speech began: while the assistant speaks, pause its voice and start checking."""
        self._words = 0
        conversation, p = self._conversation, self._params
        if p.barge_in and conversation.playback.is_playing(conversation.turn):
            self._start = start
            if p.resume_false_interruption:
                conversation.voice.pause()

    def words_heard(self, words: int) -> None:
        """The partial transcript of the current speech holds ``words`` words."""
        self._words = words

    def due_ns(self) -> int | None:
        """When the speech being checked qualifies as a barge-in; None if none is checked."""
        start, p = self._start, self._params
        if start is None or self._words < p.barge_in_min_words:
            return None
        return start.t_ns + (p.barge_in_min_speech_ms + p.barge_in_confirm_ms) * 1_000_000

    def speech_ended(self) -> None:
        """Speech ended before it qualified: a false alarm; the voice resumes."""
        if self._start is None:
            return
        self._start = None
        self._false_alarm_finals += 1  # "hmm" must not become a user turn either
        self._conversation.voice.resume()

    def is_false_alarm(self) -> bool:
        """Take the next final transcript: True if it is a false alarm's, to be ignored."""
        if not self._false_alarm_finals:
            return False
        self._false_alarm_finals -= 1
        return True

    async def interrupt(self) -> None:
        """The speech qualified: raise the turn, preempting the reply, and announce it."""
        self._start = None
        session_turn = self._conversation.turn
        decided_ns = time.monotonic_ns()
        await self._conversation.new_turn("barge-in")
        self._conversation.publish("barge_in", turn=session_turn, decided_ns=decided_ns)
