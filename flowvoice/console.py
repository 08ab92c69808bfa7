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


def print_event(event: dict[str, Any]) -> None:
    """Print a session event as a conversation line."""
    kind = event["type"]
    if kind == "user_turn":
        print(f"\nyou [{event['turn']}]: {event['text']}")
        print("assistant: ", end="", flush=True)
    elif kind == "assistant_text":
        print(event["text"], end="\n" if event.get("final") else "", flush=True)
    elif kind == "metrics":
        print(f"  latency: {format_latency(event['latency_ms'])}")
    elif kind == "error":
        print(f"error: {event.get('message', event)}", file=sys.stderr)


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
