"""Engines every session shares (one LLM, one Whisper, one TTS voice), each call under a deadline.

Sessions take turns on a shared engine: each call runs in a worker thread holding the
engine's lock. A call that makes no progress (returns nothing, pushes nothing) for
:data:`settings` ``.timeout_s`` while holding the lock has hung inside the engine: the engine
is marked hung, that call and every call waiting for the lock fail with :class:`EngineFailed`
(instead of waiting forever), the hung thread is abandoned (counted by
:func:`~flowvoice.runtime.threads.abandoned_threads`) and the next call loads a fresh engine.
An engine that cannot be loaded twice in one process (a process-global C library) stays
down, and so does every engine once ``max_abandoned_threads`` threads are stuck:
:func:`fatal_reason` then says why the process must be restarted.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread

from flowvoice.runtime.fair_lock import FairLock
from flowvoice.runtime.threads import abandoned_threads, stream_from_thread

log = logging.getLogger("flowvoice.engine")
E = TypeVar("E")
T = TypeVar("T")
R = TypeVar("R")

#: The ``error`` event code a node publishes when its shared engine failed a call.
ENGINE_FAILED = "engine_failed"
#: How often a call watches the engine's progress (a hang fails it and the waiting calls).
_POLL_S = 0.05


@dataclass
class EngineSettings:
    """Process-wide limits (the server sets them from the graph's ``server`` block)."""

    #: Longest a call may hold an engine without progress before the engine counts as hung.
    timeout_s: float = 20.0
    #: Stuck threads this process tolerates; at this many, engines stay down (restart it).
    max_abandoned_threads: int = 3


settings = EngineSettings()


class EngineFailed(RuntimeError):
    """A call to a shared engine failed because the engine hung or is down."""


class _Instance(Generic[E]):
    """One loaded engine and its lock (first come, first served); ``progress_at`` is when its
    holder last made progress."""

    def __init__(self, engine: E):
        self.engine = engine
        self.lock = FairLock()
        self.progress_at: float | None = None  # None while nobody holds the lock
        self.hung = False

    def acquire(self, cancelled: threading.Event) -> bool:
        """Blocking: take the lock in turn; False when ``cancelled`` is set first."""
        if not self.lock.acquire(cancelled):
            return False
        self.progress_at = time.monotonic()
        return True

    def release(self) -> None:
        self.progress_at = None
        self.lock.release()

    def stalled(self, timeout_s: float) -> bool:
        since = self.progress_at
        return since is not None and time.monotonic() - since > timeout_s


class SharedEngine(Generic[E]):
    """An engine sessions share: calls run one at a time, each under the progress deadline.

    Construct it in a worker thread (``load`` runs at once); ``reloadable=False`` for an
    engine that cannot be loaded again in the same process.
    """

    def __init__(self, label: str, load: Callable[[], E], *, reloadable: bool = True):
        self.label = label
        self.reloadable = reloadable
        self.hangs = 0
        self.reloads = 0
        self._load = load
        self._instance = _Instance(load())
        self._reloading: anyio.Lock | None = None
        _engines.add(self)

    @property
    def engine(self) -> E:
        """The engine loaded now (for reading its fixed properties, e.g. a sample rate)."""
        return self._instance.engine

    @property
    def healthy(self) -> bool:
        return not self._instance.hung

    @property
    def waiting(self) -> int:
        """Calls waiting for the engine now (besides the one holding it)."""
        return self._instance.lock.waiting

    async def stream(
        self,
        produce: Callable[[E, Callable[[T], None], threading.Event], None],
        consume: Callable[[T], Awaitable[None]],
    ) -> None:
        """Run ``produce(engine, push, cancelled)`` in a worker thread holding the engine and
        ``await consume(item)`` per pushed item (see :func:`stream_from_thread`). Each push is
        progress. Raises :class:`EngineFailed` when the engine hangs or is down."""
        instance = await self._usable()
        timeout = settings.timeout_s

        def locked(push: Callable[[T], None], cancelled: threading.Event) -> None:
            if not instance.acquire(cancelled):
                return

            def progress(item: T) -> None:
                instance.progress_at = time.monotonic()
                push(item)

            try:
                produce(instance.engine, progress, cancelled)
            finally:
                instance.release()

        error: Exception | None = None  # raised outside the task group: no exception group
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, instance, timeout, scope)
                try:
                    await stream_from_thread(locked, consume)
                except Exception as exc:
                    error = exc
                tg.cancel_scope.cancel()
        if error is not None:
            raise error
        if scope.cancel_called:
            raise EngineFailed(
                f"{self.label} hung: no progress for {timeout:g} s (engine_timeout_s); "
                "it is reloaded for the next call"
                if self.reloadable
                else f"{self.label} hung: no progress for {timeout:g} s (engine_timeout_s) "
                "and cannot be reloaded in this process"
            )

    async def call(self, fn: Callable[[E], R]) -> R:
        """``fn(engine)`` in a worker thread holding the engine, under the deadline."""
        results: list[R] = []

        async def keep(result: R) -> None:
            results.append(result)

        await self.stream(lambda engine, push, _: push(fn(engine)), keep)
        return results[0]

    async def _usable(self) -> _Instance[E]:
        """The current instance, reloaded first when it hung; EngineFailed when it cannot be."""
        reason = fatal_reason()
        if reason:
            raise EngineFailed(f"{self.label} is down: {reason}")
        if not self._instance.hung:
            return self._instance
        if not self.reloadable:
            raise EngineFailed(f"{self.label} hung and cannot be reloaded in this process")
        if self._reloading is None:
            self._reloading = anyio.Lock()
        async with self._reloading:
            if self._instance.hung:
                log.warning("reloading %s after it hung ...", self.label)
                start = time.perf_counter()
                try:
                    engine = await anyio.to_thread.run_sync(self._load)
                except Exception as exc:
                    raise EngineFailed(f"{self.label} could not be reloaded: {exc!r}") from exc
                self._instance = _Instance(engine)
                self.reloads += 1
                log.warning("reloaded %s in %.2f s", self.label, time.perf_counter() - start)
        return self._instance

    async def _watch(
        self, instance: _Instance[E], timeout_s: float, scope: anyio.CancelScope
    ) -> None:
        """Cancel ``scope`` once ``instance`` hangs (whichever call notices it first)."""
        while not instance.hung:
            await anyio.sleep(min(_POLL_S * 5, timeout_s / 4))
            if instance.stalled(timeout_s) and not instance.hung:
                instance.hung = True
                self.hangs += 1
                log.error(
                    "%s hung: a call made no progress for %g s; failing its waiting calls",
                    self.label,
                    timeout_s,
                )
        scope.cancel()


_engines: weakref.WeakSet[SharedEngine[Any]] = weakref.WeakSet()


def fatal_reason() -> str | None:
    """Why shared engines cannot recover in this process (restart it), or None."""
    stuck = abandoned_threads()
    if stuck >= settings.max_abandoned_threads:
        return (
            f"{stuck} worker threads are stuck in hung engine calls "
            f"(max_abandoned_threads: {settings.max_abandoned_threads})"
        )
    down = [e.label for e in _engines if not e.healthy and not e.reloadable]
    if down:
        return f"{', '.join(sorted(down))} hung and cannot be reloaded in this process"
    return None


def engine_report() -> list[dict[str, Any]]:
    """One entry per loaded shared engine: label, healthy, hangs, reloads."""
    return sorted(
        (
            {"engine": e.label, "healthy": e.healthy, "hangs": e.hangs, "reloads": e.reloads}
            for e in list(_engines)
        ),
        key=lambda entry: entry["engine"],
    )
