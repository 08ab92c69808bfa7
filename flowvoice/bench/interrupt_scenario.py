"""The interrupt-propagation scenario of ``flowvoice bench pipecat``, shared by its flowvoice
side (pipecat_compare) and its pipecat side (pipecat_chain): the pacing, the turn driver and
the summary of what the player played."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import numpy as np

PRODUCE_S = 0.001  # the producer's pause between frames (a TTS 20x faster than real time)
PLAY_S = 0.002  # the player's time per frame: slower than the producer, so frames queue up
TURN_S = 0.25  # how long each turn streams before it is interrupted
TURN_FRAMES = 10_000  # more than a turn can produce in TURN_S
SILENCE = np.zeros(320, np.int16)  # 20 ms at 16 kHz

#: (turn, start ns, end ns) of every frame the player played, fully or until cancelled.
PlayerLog = list[tuple[int, int, int]]
#: (interrupted turn, ns before the interrupt call, ns after it returned).
Mark = tuple[int, int, int]


async def drive_turns(
    trigger: Callable[[int], Awaitable[object]],
    interrupt: Callable[[], Awaitable[object]],
    repeats: int,
) -> list[Mark]:
    """Start turn 0, then ``repeats`` times: let it stream, interrupt it, start the next."""
    marks: list[Mark] = []
    await trigger(0)
    for turn in range(repeats):
        await anyio.sleep(TURN_S)
        before = time.monotonic_ns()
        await interrupt()
        marks.append((turn, before, time.monotonic_ns()))
        await trigger(turn + 1)
    await anyio.sleep(TURN_S)
    return marks


def summarize_interrupts(played: PlayerLog, marks: list[Mark]) -> dict[str, float]:
    """Per interrupt: time until the player was done with old-turn frames (the one playing
    cancelled or finished, no other begun), old frames begun after it, time to the next turn."""
    clear_ms, late, first_new_ms = [], [], []
    for turn, before, after in marks:
        old = [(start, end) for t, start, end in played if t <= turn and end >= before]
        new = [start for t, start, _ in played if t == turn + 1]
        clear_ms.append((max([after, *(end for _, end in old)]) - before) / 1e6)
        late.append(sum(start >= before for start, _ in old))
        first_new_ms.append((min(new) - before) / 1e6 if new else float("nan"))
    return {
        "clear_p50_ms": float(np.percentile(clear_ms, 50)),
        "clear_max_ms": max(clear_ms),
        "late_max": max(late),
        "first_new_p50_ms": float(np.percentile(first_new_ms, 50)),
    }
