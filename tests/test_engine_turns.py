"""Sessions take turns on a shared engine in the order they asked (flowvoice/runtime/engine.py).

A test double for the engine: this is the runtime's queueing, not an engine's behaviour.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import pytest

from flowvoice.runtime.engine import SharedEngine

pytestmark = pytest.mark.anyio

WAITERS = 8


async def test_waiting_calls_get_the_engine_in_the_order_they_asked():
    engine = SharedEngine("test engine", lambda: None)
    holding, release = threading.Event(), threading.Event()
    order: list[int] = []

    def hold(_: None) -> None:
        holding.set()
        release.wait(10)

    def take_turn(i: int) -> Callable[[None], None]:
        def call(_: None) -> None:
            order.append(i)
            time.sleep(0.002)

        return call

    async def waiting(n: int) -> None:
        with anyio.fail_after(10):
            while len(engine._instance._queue) < n:
                await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.call, hold)
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(holding.wait)
        for i in range(WAITERS):
            tg.start_soon(engine.call, take_turn(i))
            await waiting(i + 1)  # each asks once the one before is waiting
        release.set()
    assert order == list(range(WAITERS))


async def test_a_cancelled_waiting_call_gives_up_its_place():
    engine = SharedEngine("test engine", lambda: None)
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def hold(_: None) -> None:
        holding.set()
        release.wait(10)

    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.call, hold)
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(holding.wait)
        with anyio.move_on_after(0.2):
            await engine.call(lambda _: order.append("cancelled"))
        tg.start_soon(engine.call, lambda _: order.append("next"))
        with anyio.fail_after(10):
            while len(engine._instance._queue) < 1:
                await anyio.sleep(0.005)
        release.set()
    assert order == ["next"]
    assert not engine._instance._queue
