"""What the assistant said, and how much of it the user actually heard.

TTS nodes record each sentence with the duration of its audio; sinks record audio sent and
the client's playback reports. When a turn is interrupted, :meth:`PlaybackLedger.heard_text`
maps the played time back onto the sentences (and words, proportionally, within the
sentence being played) so the chat history keeps only what the user heard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Client reports this close to the sent duration count as everything played.
PLAYED_TOLERANCE_S = 0.005


@dataclass
class _Spoken:
    text: str
    seconds: float = 0.0


@dataclass
class TurnPlayback:
    """One turn's assistant audio: sentences with durations, sent and played seconds."""

    sentences: list[_Spoken] = field(default_factory=list)
    sent_s: float = 0.0
    played_s: float | None = None
    first_sent_at: float | None = None
    last_sent_at: float | None = None
    #: Monotonic time the listener's queue of sent audio runs dry: audio plays in order from
    #: when it arrives, so a gap in sending stalls playback instead of advancing it.
    plays_until: float | None = None
    #: Monotonic time TTS produced the turn's first audio (whether or not it was sent).
    first_audio_at: float | None = None

    @property
    def audio_s(self) -> float:
        return sum(s.seconds for s in self.sentences)

    def heard_s(self, now: float) -> float:
        """Seconds the user has heard: the client's report, else the sent audio less what is
        still queued at the listener in real time."""
        if self.played_s is not None:
            return min(self.played_s, self.sent_s)
        if self.plays_until is None:
            return 0.0
        return max(0.0, self.sent_s - max(0.0, self.plays_until - now))


class PlaybackLedger:
    """Per-session record of assistant speech, kept for the most recent ``keep`` turns."""

    def __init__(self, keep: int = 64):
        self._turns: dict[int, TurnPlayback] = {}
        self._keep = keep
        self._paused_at: float | None = None
        self._first_audio_listeners: list[Callable[[int], None]] = []

    def on_first_audio(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(turn)`` when a turn's first audio is produced (a turn node waiting
        to release a held reply wakes up)."""
        self._first_audio_listeners.append(listener)

    def pause(self) -> None:
        """The speaker holds its audio: estimated playback stops advancing."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        """The speaker goes on: estimates resume where they stopped."""
        if self._paused_at is None:
            return
        held = time.monotonic() - self._paused_at
        self._paused_at = None
        for entry in self._turns.values():
            if entry.plays_until is not None:
                entry.plays_until += held

    def _now(self, now: float | None) -> float:
        if now is not None:
            return now
        return self._paused_at if self._paused_at is not None else time.monotonic()

    def _turn(self, turn: int) -> TurnPlayback:
        entry = self._turns.get(turn)
        if entry is None:
            entry = self._turns[turn] = TurnPlayback()
            while len(self._turns) > self._keep:
                del self._turns[next(iter(self._turns))]
        return entry

    def begin_sentence(self, turn: int, text: str) -> None:
        """TTS starts synthesizing ``text`` for ``turn``."""
        self._turn(turn).sentences.append(_Spoken(text))

    def add_audio(self, turn: int, seconds: float) -> None:
        """TTS produced ``seconds`` more audio of the current sentence."""
        entry = self._turn(turn)
        if not entry.sentences:
            entry.sentences.append(_Spoken(""))
        entry.sentences[-1].seconds += seconds
        if entry.first_audio_at is None:
            entry.first_audio_at = time.monotonic()
            for listener in self._first_audio_listeners:
                listener(turn)

    def sent(self, turn: int, seconds: float) -> None:
        """A sink sent ``seconds`` of the turn's audio to the listener."""
        entry = self._turn(turn)
        entry.last_sent_at = now = time.monotonic()
        if entry.first_sent_at is None:
            entry.first_sent_at = now
        entry.plays_until = max(entry.plays_until or now, now) + seconds
        entry.sent_s += seconds

    def played(self, turn: int, seconds: float) -> None:
        """The client reports it has played ``seconds`` of the turn's audio (cumulative).

        A report for a turn with no sent audio is ignored; one within ``PLAYED_TOLERANCE_S``
        of the sent duration counts as all of it (client rounding must not leave a finished
        reply looking cut short); an older, smaller report never lowers a newer one.
        """
        entry = self._turns.get(turn)
        if entry is None or entry.first_sent_at is None:
            return
        if seconds >= entry.sent_s - PLAYED_TOLERANCE_S:
            seconds = entry.sent_s
        if entry.played_s is None or seconds > entry.played_s:
            entry.played_s = seconds

    def is_playing(self, turn: int, now: float | None = None) -> bool:
        """True while sent audio of ``turn`` has not finished playing."""
        entry = self._turns.get(turn)
        if entry is None or entry.first_sent_at is None:
            return False
        return entry.heard_s(self._now(now)) < entry.sent_s - PLAYED_TOLERANCE_S

    def ended_statement_within(self, turn: int, now: float, within_s: float) -> bool:
        """True when ``turn``'s sent audio ran out, by its real-time estimate, less than
        ``within_s`` before ``now`` and its last sentence was not a question."""
        entry = self._turns.get(turn)
        if entry is None or entry.plays_until is None or not entry.sentences:
            return False
        since_end = self._now(now) - entry.plays_until
        return 0 <= since_end < within_s and not entry.sentences[-1].text.rstrip().endswith("?")

    def heard_seconds(self, turn: int, now: float | None = None) -> float:
        """Seconds of ``turn``'s reply the user has heard so far."""
        entry = self._turns.get(turn)
        return entry.heard_s(self._now(now)) if entry else 0.0

    def reported(self, turn: int) -> bool:
        """True once the client reported how much of ``turn``'s reply it played."""
        entry = self._turns.get(turn)
        return entry is not None and entry.played_s is not None

    def knows(self, turn: int) -> bool:
        """True once any of ``turn``'s reply was spoken (a sentence reached TTS)."""
        return turn in self._turns

    def first_audio_at(self, turn: int) -> float | None:
        """Monotonic time TTS produced ``turn``'s first audio (None if it has not)."""
        entry = self._turns.get(turn)
        return entry.first_audio_at if entry else None

    def last_sent_at(self, turn: int) -> float | None:
        """Monotonic time the last audio of ``turn`` was sent (None if none was)."""
        entry = self._turns.get(turn)
        return entry.last_sent_at if entry else None

    def heard_text(self, turn: int, now: float | None = None) -> tuple[str, bool]:
        """(text the user heard, whether that is all of it) for ``turn``."""
        entry = self._turns.get(turn)
        if entry is None:
            return "", False
        heard = entry.heard_s(self._now(now))
        words: list[str] = []
        elapsed = 0.0
        for sentence in entry.sentences:
            if heard >= elapsed + sentence.seconds:
                words += sentence.text.split()
            elif sentence.seconds > 0 and heard > elapsed:
                part = sentence.text.split()
                words += part[: int(len(part) * (heard - elapsed) / sentence.seconds + 1e-6)]
                return " ".join(words), False
            else:
                return " ".join(words), False
            elapsed += sentence.seconds
        return " ".join(words), True
