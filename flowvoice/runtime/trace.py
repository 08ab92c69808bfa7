"""Per-turn latency trace: when each stage of a turn first happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Stages in pipeline order. Voice-to-voice is speech_end -> first_audio_sent.
STAGES = (
    "speech_end",
    "final_transcript",
    "turn_decided",
    "turn_committed",
    "first_token",
    "first_sentence",
    "first_audio",
    "first_audio_sent",
)


@dataclass
class TurnTrace:
    """Monotonic timestamps (ns) of one turn's stages; the first mark of a stage wins."""

    turn: int
    marks: dict[str, int] = field(default_factory=dict)

    def mark(self, stage: str, t_ns: int | None = None) -> bool:
        """Record ``stage`` unless already recorded; True when newly recorded."""
        if stage not in STAGES:
            raise ValueError(f"unknown trace stage {stage!r}; stages are {', '.join(STAGES)}")
        if stage in self.marks:
            return False
        self.marks[stage] = time.monotonic_ns() if t_ns is None else t_ns
        return True

    def latencies_ms(self) -> dict[str, float]:
        """Milliseconds from speech end to each later stage that was recorded."""
        origin = self.marks.get("speech_end")
        if origin is None:
            return {}
        return {
            stage: (self.marks[stage] - origin) / 1e6 for stage in STAGES[1:] if stage in self.marks
        }


class Tracer:
    """Collects the traces of a session's turns (the most recent ``keep`` of them).

    ``on_complete`` is called once per turn when its first audio is sent.
    """

    def __init__(self, on_complete: Callable[[TurnTrace], None] | None = None, keep: int = 256):
        self.turns: dict[int, TurnTrace] = {}
        self._on_complete = on_complete
        self._keep = keep

    def mark(self, turn: int, stage: str, t_ns: int | None = None) -> None:
        trace = self.turns.get(turn)
        if trace is None:
            trace = self.turns[turn] = TurnTrace(turn)
            while len(self.turns) > self._keep:
                del self.turns[next(iter(self.turns))]
        if trace.mark(stage, t_ns) and stage == STAGES[-1] and self._on_complete:
            self._on_complete(trace)
