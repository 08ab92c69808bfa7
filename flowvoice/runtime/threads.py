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

#: ``produce(push, cancelled)``: call ``push(item)`` per item; return soon after ``cancelled``.
Producer = Callable[[Callable[[T], None], threading.Event], None]


async def stream_from_thread(produce: Producer[T], consume: Callable[[T], Awaitable[None]]) -> None:
    """Run ``produce`` in a worker thread; ``await consume(item)`` for each pushed item, in order.

    When the caller is cancelled (or ``consume`` fails), ``cancelled`` is set and this waits for
    the thread to return, so no thread outlives the call. An error in ``produce`` is re-raised.
    """
    send, receive = anyio.create_memory_object_stream[T](math.inf)
    cancelled = threading.Event()
    errors: list[BaseException] = []

    def push(item: T) -> None:
        if not cancelled.is_set():
            anyio.from_thread.run_sync(send.send_nowait, item)

    async def worker() -> None:
        with send:
            try:
                await anyio.to_thread.run_sync(produce, push, cancelled)
            except Exception as exc:
                errors.append(exc)

    with receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            try:
                async for item in receive:
                    await consume(item)
            finally:
                cancelled.set()
    if errors:
        raise errors[0]
