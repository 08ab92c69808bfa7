"""Barge-in: does speech that starts while the assistant speaks interrupt it?

Speech that starts during the reply pauses the assistant's voice at once. It interrupts only
when it is more than a backchannel: its transcript (a partial while it goes on, else the
final) must hold ``barge_in_min_words`` words beyond the backchannel list ("yeah", "okay",
"mm hm", "right", "I see", ...) and it must have lasted ``barge_in_min_speech_ms``; during
the reply's first ``barge_in_strict_s`` of playback, while a browser's echo canceller is
still converging, one word more is needed. An interrupt word ("wait", "stop", "no", ...)
interrupts at once. A barge-in raises the turn, which stops the LLM, TTS and every queued
frame of the reply and makes the sinks tell the listener to flush; the speech goes on to
become the user's turn. Speech that ends as a backchannel, a cough or noise is a false alarm:
the voice resumes where it paused and its transcript never becomes a user turn.
"""

from __future__ import annotations

import re
import time

from pydantic import Field

from flowvoice.conversation.state import Conversation
from flowvoice.frames import VADEvent
from flowvoice.node import NodeParams

#: Said while listening, they mean "go on".
DEFAULT_BACKCHANNELS = [
    *["yeah", "yes", "yep", "yup", "ok", "okay", "right", "sure", "alright", "all right"],
    *["uh huh", "mm", "mmm", "hm", "hmm", "mhm", "mm hm", "mm hmm", "i see", "got it"],
    *["cool", "nice", "wow", "oh", "ah", "uh", "um", "er", "great", "true", "exactly"],
    *["indeed", "really", "go on", "of course"],
    # Continuers: "and?", "and then?" ask the speaker to go on; Whisper also joins a hummed
    # "mm hm mm hm" with them ("Mm-h and Mm-h.", "Mm-h and then.").
    *["and", "and then"],
]
#: Said while the assistant speaks, they mean "stop talking": they interrupt at once.
DEFAULT_INTERRUPT_WORDS = ["wait", "stop", "no", "hold on", "hang on", "sorry", "excuse me"]
_WORD = re.compile(r"[a-z0-9']+")
#: Whisper spells a hum too many ways for a list ("Mm-hm", "Mm-h-n", "MMMM", "M-H-M"): a word
#: of only these letters is one.
_HUM = re.compile(r"[mhn]+")
MS = 1_000_000


def words_of(text: str) -> list[str]:
    """Lower-case words, with hyphenated sounds split ("Mm-hmm" -> "mm", "hmm")."""
    return _WORD.findall(text.lower().replace("-", " "))


def words_beyond(backchannels: Phrases, words: list[str]) -> int:
    """How many of ``words`` are neither part of a backchannel phrase nor a hum."""
    return backchannels.other_words([w for w in words if not _HUM.fullmatch(w)])


class Phrases:
    """A set of word sequences ("i see", "hold on") found in a transcript's words."""

    def __init__(self, phrases: list[str]):
        self._phrases = {tuple(words_of(p)) for p in phrases} - {()}
        self._longest = max((len(p) for p in self._phrases), default=0)

    def _match_at(self, words: list[str], i: int) -> int:
        for n in range(min(self._longest, len(words) - i), 0, -1):
            if tuple(words[i : i + n]) in self._phrases:
                return n
        return 0

    def found_in(self, words: list[str]) -> bool:
        return any(self._match_at(words, i) for i in range(len(words)))

    def other_words(self, words: list[str]) -> int:
        """How many of ``words`` are not part of one of the phrases."""
        count, i = 0, 0
        while i < len(words):
            matched = self._match_at(words, i)
            count += not matched
            i += matched or 1
        return count


class BargeInParams(NodeParams):
    """When speech during the assistant's reply interrupts it."""

    barge_in: bool = Field(True, description="Let the user interrupt the assistant by speaking.")
    barge_in_min_speech_ms: int = Field(
        400,
        ge=0,
        le=5000,
        description="Speech must last this long while the assistant speaks to interrupt it "
        "(coughs do not; also a guard against echo the browser lets through).",
    )
    barge_in_confirm_ms: int = Field(
        250,
        ge=0,
        le=5000,
        description="With barge_in_min_words 0 only: extra wait before deciding, so speech that "
        "already stopped can be seen to have stopped (the VAD's min_silence_ms).",
    )
    barge_in_min_words: int = Field(
        1,
        ge=0,
        le=20,
        description="Words beyond the backchannels the transcript must hold to interrupt "
        "(0: any speech of barge_in_min_speech_ms interrupts, backchannels too).",
    )
    barge_in_strict_s: float = Field(
        2.0,
        ge=0,
        le=30,
        description="During this much of the reply's playback one word more is needed "
        "(echo cancellers are still converging).",
    )
    barge_in_backchannels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BACKCHANNELS),
        description="Words that never interrupt and never make a user turn while the "
        "assistant speaks ('yeah', 'okay', 'mm hm', ...).",
    )
    barge_in_interrupt_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INTERRUPT_WORDS),
        description="Words that interrupt at once ('wait', 'stop', 'no', ...).",
    )
    resume_false_interruption: bool = Field(
        True,
        description="Pause the assistant when speech starts and resume it if the speech turns "
        "out to be no barge-in.",
    )


class BargeIn:
    """One session's barge-in decisions, fed the VAD's speech starts and ends and the STT's
    transcripts of that speech."""

    def __init__(self, conversation: Conversation, params: BargeInParams):
        self._conversation = conversation
        self._params = params
        self._backchannels = Phrases(params.barge_in_backchannels)
        self._stop_words = Phrases(params.barge_in_interrupt_words)
        self._start: VADEvent | None = None  # speech that may interrupt the assistant
        self._needed_words = params.barge_in_min_words
        self._due_ns: int | None = None  # when the speech interrupts, once it qualified
        self._spoken_ms: float | None = None  # how long it lasted, once it ended
        self._paused_ns: int | None = None  # where its current pause began, if it paused

    @property
    def pending(self) -> bool:
        """Speech during the reply is being checked."""
        return self._start is not None

    def speech_started(self, start: VADEvent) -> None:
        """Speech began: while the assistant speaks, pause its voice and start checking."""
        conversation, p = self._conversation, self._params
        if self._start is not None or not p.barge_in or not self._conversation.control.barge_in:
            return
        turn = conversation.turn
        if not conversation.reply_playing_at(start.t_ns):
            return
        self._start, self._due_ns, self._spoken_ms, self._paused_ns = start, None, None, None
        strict = conversation.playback.heard_seconds(turn) < p.barge_in_strict_s
        self._needed_words = p.barge_in_min_words + (1 if strict and p.barge_in_min_words else 0)
        if not p.barge_in_min_words:  # any speech that lasts interrupts
            self._due_ns = start.t_ns + (p.barge_in_min_speech_ms + p.barge_in_confirm_ms) * MS
        if p.resume_false_interruption:
            conversation.voice.pause()

    def speech_paused(self, pause: VADEvent | None) -> None:
        """The VAD saw silence begin (``pause``) or speech go on (None)."""
        self._paused_ns = pause.t_ns if pause is not None else None

    def transcript_heard(self, text: str) -> None:
        """A partial transcript of the speech being checked, while it goes on."""
        if self._start is None or self._due_ns is not None:
            return
        words = words_of(text)
        earliest = self._start.t_ns + self._params.barge_in_min_speech_ms * MS
        if self._stop_words.found_in(words):
            self._due_ns = time.monotonic_ns()
        elif self._enough_words(words) and (self._paused_ns is None or self._paused_ns >= earliest):
            # A sound that stopped short of barge_in_min_speech_ms waits for its final, which
            # decides with its length known (Whisper hears "That's it." in a 250 ms hum).
            self._due_ns = max(time.monotonic_ns(), earliest)

    def _enough_words(self, words: list[str]) -> bool:
        return words_beyond(self._backchannels, words) >= self._needed_words

    def due_ns(self) -> int | None:
        """When the speech being checked interrupts; None while it does not (yet)."""
        return self._due_ns if self._start is not None else None

    def speech_ended(self, end: VADEvent) -> None:
        """The speech being checked ended before it interrupted: its final transcript decides
        (the voice stays paused until then)."""
        if self._start is not None:
            self._spoken_ms = (end.t_ns - self._start.t_ns) / MS
            self._due_ns = None

    def final_heard(self, text: str) -> bool:
        """Take a final transcript; False when it must not become a user turn (a false alarm:
        a backchannel, cough or noise heard while the assistant spoke)."""
        if self._start is None or self._spoken_ms is None:
            return True
        words = words_of(text)
        long_enough = self._spoken_ms >= self._params.barge_in_min_speech_ms
        if self._stop_words.found_in(words) or (
            long_enough and words and self._enough_words(words)
        ):
            self._due_ns = time.monotonic_ns()  # a barge-in now; the text is the user's turn
            return True
        self._start = None
        self._conversation.voice.resume()
        return False

    async def interrupt(self) -> None:
        """The speech qualified: raise the turn, preempting the reply, and announce it."""
        self._start, self._due_ns = None, None
        session_turn = self._conversation.turn
        decided_ns = time.monotonic_ns()
        await self._conversation.new_turn("barge-in")
        self._conversation.publish("barge_in", turn=session_turn, decided_ns=decided_ns)
