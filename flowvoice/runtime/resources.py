"""Process-wide cache of loaded models, so the hundredth session costs no model load."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import anyio

log = logging.getLogger("flowvoice.resources")
T = TypeVar("T")


class ResourceCache:
    """Loads each resource once (off the event loop) and hands the same object to every caller.

    Concurrent sessions asking for the same key wait for the one load in progress.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, anyio.Lock] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: Hashable, load: Callable[[], T], *, label: str = "") -> T:
        """Return the resource for ``key``, calling ``load()`` in a worker thread the first time."""
        if key in self._items:
            return self._items[key]
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            if key not in self._items:
                name = label or str(key)
                log.info("loading %s ...", name)
                start = time.perf_counter()
                self._items[key] = await anyio.to_thread.run_sync(load)
                log.info("loaded %s in %.2f s", name, time.perf_counter() - start)
        return self._items[key]

    def clear(self) -> None:
        """Forget every cached resource (tests)."""
        self._items.clear()
        self._locks.clear()


#: The cache every session of this process shares.
shared_resources = ResourceCache()


class Pool(Generic[T]):
    """Reusable per-session model instances (stateful models that sessions cannot share).

    :meth:`acquire` hands out an idle instance or creates one in a worker thread; a session
    gives it back with :meth:`release` when it ends, so memory stays bounded by the peak
    number of concurrent sessions instead of growing with every session.
    """

    def __init__(self, create: Callable[[], T]):
        self._create = create
        self._idle: list[T] = []

    async def acquire(self) -> T:
        if self._idle:
            return self._idle.pop()
        return await anyio.to_thread.run_sync(self._create)

    def release(self, item: T) -> None:
        self._idle.append(item)
