"""Terminal output for ``flowvoice chat`` / ``run``: live events and the per-turn latency table."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Protocol

from flowvoice.runtime.trace import STAGES


class _Turn(Protocol):
    turn: int
    user: str
    assistant: str
    latency_ms: dict[str, float]


def format_latency(latency_ms: dict[str, float]) -> str:
    """``final_transcript 412 ms · turn_committed 655 ms · ...`` in pipeline order."""
    return " · ".join(f"{s} {latency_ms[s]:.0f} ms" for s in STAGES if s in latency_ms)


class EventPrinter:
    """Prints session events as conversation lines; a turn's latency line waits for the end of
    its reply text (the first audio, and so the metrics, can come before the text is done)."""

    def __init__(self) -> None:
        self._open_replies: set[int] = set()
        self._held: dict[int, dict[str, float]] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "user_turn":
            self._open_replies.add(event["turn"])
            print(f"\nyou [{event['turn']}]: {event['text']}")
            print("assistant: ", end="", flush=True)
        elif kind == "assistant_text":
            final = bool(event.get("final"))
            print(event["text"], end="\n" if final else "", flush=True)
            if final:
                self._open_replies.discard(event["turn"])
                if event["turn"] in self._held:
                    self._print_latency(self._held.pop(event["turn"]))
        elif kind == "metrics":
            if event["turn"] in self._open_replies:
                self._held[event["turn"]] = event["latency_ms"]
            else:
                self._print_latency(event["latency_ms"])
        elif kind == "error":
            print(f"error: {event.get('message', event)}", file=sys.stderr)

    @staticmethod
    def _print_latency(latency_ms: dict[str, float]) -> None:
        print(f"  latency: {format_latency(latency_ms)}")


def print_turn_table(turns: Iterable[_Turn]) -> None:
    """Voice-to-voice and per-stage latency of every turn, as a small table."""
    rows = list(turns)
    if not rows:
        print("\nno turn was committed (was there speech in the input?)")
        return
    stages = STAGES[1:]
    print("\nlatency from end of speech (ms)")
    print("turn  " + "  ".join(f"{s:>16}" for s in stages))
    for t in rows:
        cells = [f"{t.latency_ms[s]:>16.0f}" if s in t.latency_ms else f"{'-':>16}" for s in stages]
        print(f"{t.turn:<4}  " + "  ".join(cells))
