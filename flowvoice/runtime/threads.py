"""Stream items from a blocking producer in a worker thread to the event loop, cancellably."""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

T = TypeVar("T")
_abandoned_lock = threading.Lock()
_abandoned = 0


def abandoned_threads() -> int:
    """Worker threads abandoned by :func:`stream_from_thread` that are still stuck now."""
    return _abandoned


#: How long a cancelled producer thread gets to return before it is abandoned.
GRACE_S = 1.0

#: ``produce(push, cancelled)``: call ``push(item)`` per item; return soon after ``cancelled``.
Producer = Callable[[Callable[[T], None], threading.Event], None]


async def stream_from_thread(
    produce: Producer[T], consume: Callable[[T], Awaitable[None]], grace_s: float = GRACE_S
) -> None:
    """Run ``produce`` in a worker thread; ``await consume(item)`` for each pushed item, in order.

    When the caller is cancelled (or ``consume`` fails), ``cancelled`` is set and this waits up
    to ``grace_s`` for the thread to return; a thread stuck in a blocking call past that is
    abandoned (it can push nothing more), so a hung engine never holds its session open;
    :func:`abandoned_threads` counts it until it returns. An error in ``produce`` is re-raised.
    """
    send, receive = anyio.create_memory_object_stream[T](math.inf)
    cancelled = threading.Event()
    worker_exited = anyio.Event()
    errors: list[BaseException] = []
    fate = {"returned": False, "abandoned": False}  # guarded by _abandoned_lock

    def push(item: T) -> None:
        if cancelled.is_set():
            return
        try:
            anyio.from_thread.run_sync(send.send_nowait, item)
        except (RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            cancelled.set()  # the consumer is gone (abandoned thread)

    # Shielded, so cancelling the caller does not abandon a thread that is about to return;
    # only a thread still stuck after the grace period is abandoned (by cancelling this).
    worker_scope = anyio.CancelScope(shield=True)

    def run() -> None:
        global _abandoned
        try:
            produce(push, cancelled)
        finally:
            with _abandoned_lock:
                fate["returned"] = True
                if fate["abandoned"]:
                    _abandoned -= 1

    def abandon() -> None:
        global _abandoned
        with _abandoned_lock:
            if not fate["returned"]:
                fate["abandoned"] = True
                _abandoned += 1

    async def worker() -> None:
        with send, worker_scope:
            try:
                await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
            except Exception as exc:
                errors.append(exc)
            finally:
                worker_exited.set()

    with receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            try:
                async for item in receive:
                    await consume(item)
            finally:
                cancelled.set()
                with anyio.move_on_after(grace_s, shield=True):
                    await worker_exited.wait()
                if not worker_exited.is_set():
                    abandon()
                worker_scope.cancel()
    if errors:
        raise errors[0]
