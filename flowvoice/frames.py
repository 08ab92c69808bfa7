"""Frame types that travel on graph edges.

Every frame carries ``turn`` (the conversation epoch it belongs to, ``-1`` until the runtime
stamps it on emit) and ``t_ns`` (monotonic creation time, for latency tracing). Frames are
slotted dataclasses so creating one costs about as much as a tuple.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

UNSTAMPED = -1


@dataclass(slots=True, kw_only=True)
class Frame:
    """Base of all frames."""

    turn: int = UNSTAMPED
    t_ns: int = field(default_factory=time.monotonic_ns)


@dataclass(slots=True, kw_only=True)
class AudioFrame(Frame):
    """Mono PCM16 audio: ``samples`` is a 1-D ``np.int16`` array at ``sample_rate`` Hz.

    ``final`` marks the last audio of an assistant reply (TTS sends one after the reply's final
    sentence, often with no samples), so sinks know when a reply has been spoken out.
    """

    samples: np.ndarray
    sample_rate: int
    final: bool = False

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(slots=True, kw_only=True)
class VADEvent(Frame):
    """Speech ``start`` / ``end``, and in between ``pause`` (the first silence after speech
    that may end it) and ``resume`` (speech went on after a pause); ``stream_s`` is the
    position in the input audio stream (for a pause, where the speech stopped)."""

    kind: Literal["start", "pause", "resume", "end"]
    stream_s: float = 0.0


@dataclass(slots=True, kw_only=True)
class Transcript(Frame):
    """Text recognised so far in the current utterance; ``final`` at speech end.

    A ``stable`` partial is the transcription of the speech up to a pause: the final
    transcript will be the same unless the user speaks on.
    """

    text: str
    final: bool = False
    stable: bool = False


@dataclass(slots=True, kw_only=True)
class UserTurn(Frame):
    """The committed user utterance: what the assistant answers."""

    text: str


@dataclass(slots=True, kw_only=True)
class TextDelta(Frame):
    """A piece of the assistant's streamed reply; ``final`` marks the end of the reply."""

    text: str
    final: bool = False


@dataclass(slots=True, kw_only=True)
class Sentence(Frame):
    """A complete sentence (or early clause) of the reply; ``final`` marks the reply's last."""

    text: str
    final: bool = False


@dataclass(slots=True, kw_only=True)
class Interrupt(Frame):
    """The user barged in: work of older turns must stop."""

    reason: str = "barge-in"


@dataclass(slots=True, kw_only=True)
class EndOfStream(Frame):
    """No more frames will follow on this edge."""


FRAME_TYPES: dict[str, type[Frame]] = {
    cls.__name__: cls
    for cls in (
        Frame,
        AudioFrame,
        VADEvent,
        Transcript,
        UserTurn,
        TextDelta,
        Sentence,
        Interrupt,
        EndOfStream,
    )
}
