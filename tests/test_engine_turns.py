"""Sessions take turns on a shared engine in the order they asked (flowvoice/runtime/engine.py).

A test double for the engine: this is the runtime's queueing, not an engine's behaviour.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import anyio.abc
import pytest

from flowvoice.runtime.engine import SharedEngine

pytestmark = pytest.mark.anyio

WAITERS = 8


class Holder:
    """A call that holds the engine until :meth:`release`."""

    def __init__(self) -> None:
        self.holding, self._released = threading.Event(), threading.Event()

    def __call__(self, _: None) -> None:
        self.holding.set()
        self._released.wait(10)

    def release(self) -> None:
        self._released.set()


async def held(engine: SharedEngine[None], tg: anyio.abc.TaskGroup) -> Holder:
    """A call started in ``tg`` that holds ``engine`` once this returns."""
    holder = Holder()
    tg.start_soon(engine.call, holder)
    with anyio.fail_after(10):
        await anyio.to_thread.run_sync(holder.holding.wait)
    return holder


async def waiting(engine: SharedEngine[None], calls: int) -> None:
    """Return once ``calls`` calls wait for ``engine``."""
    with anyio.fail_after(10):
        while engine._instance.lock.waiting < calls:
            await anyio.sleep(0.005)


async def test_waiting_calls_get_the_engine_in_the_order_they_asked():
    engine = SharedEngine("test engine", lambda: None)
    order: list[int] = []

    def take_turn(i: int) -> Callable[[None], None]:
        def call(_: None) -> None:
            order.append(i)
            time.sleep(0.002)

        return call

    async with anyio.create_task_group() as tg:
        holder = await held(engine, tg)
        for i in range(WAITERS):
            tg.start_soon(engine.call, take_turn(i))
            await waiting(engine, i + 1)  # each asks once the one before is waiting
        holder.release()
    assert order == list(range(WAITERS))


async def test_a_cancelled_waiting_call_gives_up_its_place():
    engine = SharedEngine("test engine", lambda: None)
    order: list[str] = []
    async with anyio.create_task_group() as tg:
        holder = await held(engine, tg)
        with anyio.move_on_after(0.2):
            await engine.call(lambda _: order.append("cancelled"))
        tg.start_soon(engine.call, lambda _: order.append("next"))
        await waiting(engine, 1)
        holder.release()
    assert order == ["next"]
    assert engine._instance.lock.waiting == 0
