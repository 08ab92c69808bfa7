"""A bounded single-consumer channel with an overflow policy and drop counters.

``block`` makes a fast producer wait for room (backpressure); ``drop_oldest`` discards the
oldest queued frame to make room (live audio into a slow consumer); ``drop_newest``
discards the frame being sent. Every drop is counted.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class Overflow(str, Enum):
    """What a full channel does with one more frame."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"


class ChannelClosed(Exception):
    """Raised by :meth:`Channel.receive` once the channel is closed and drained."""


class Channel(Generic[T]):
    """Bounded FIFO between one or more producers and one consumer."""

    def __init__(self, capacity: int = 32, overflow: Overflow = Overflow.BLOCK, name: str = ""):
        if capacity < 1:
            raise ValueError("channel capacity must be at least 1")
        self.capacity = capacity
        self.overflow = Overflow(overflow)
        self.name = name
        self.dropped = 0
        self.sent = 0
        self._items: deque[T] = deque()
        self._closed = False
        self._receiver: anyio.Event | None = None
        self._senders: deque[anyio.Event] = deque()

    def __len__(self) -> int:
        return len(self._items)

    async def send(self, item: T) -> None:
        """Queue ``item``, applying the overflow policy when the channel is full."""
        if len(self._items) >= self.capacity:
            if self.overflow is Overflow.DROP_NEWEST:
                self.dropped += 1
                return
            if self.overflow is Overflow.DROP_OLDEST:
                self._items.popleft()
                self.dropped += 1
            else:
                while len(self._items) >= self.capacity:
                    waiter = anyio.Event()
                    self._senders.append(waiter)
                    try:
                        await waiter.wait()
                    finally:
                        if waiter in self._senders:
                            self._senders.remove(waiter)
        self._items.append(item)
        self.sent += 1
        if self._receiver is not None:
            self._receiver.set()
            self._receiver = None

    async def receive(self) -> T:
        """Next item in order; raises :class:`ChannelClosed` when closed and empty."""
        while not self._items:
            if self._closed:
                raise ChannelClosed(self.name)
            waiter = self._receiver = anyio.Event()
            await waiter.wait()
        item = self._items.popleft()
        if self._senders:
            self._senders.popleft().set()
        return item

    def drain(self) -> list[T]:
        """Remove and return everything queued, waking blocked producers."""
        items = list(self._items)
        self._items.clear()
        while self._senders:
            self._senders.popleft().set()
        return items

    def close(self) -> None:
        """No more items: the receiver ends after draining."""
        self._closed = True
        if self._receiver is not None:
            self._receiver.set()
            self._receiver = None
