"""A lock for worker threads that is granted in the order it was asked for, and that a waiter
can give up on.

``threading.Lock`` wakes any one of its waiters when it is released, not the first: with 16
sessions sharing one LLM some replies waited ~10 s while others went twice (``flowvoice bench
load``, light graph: p95 voice-to-voice ~4x its p50).
"""

from __future__ import annotations

import collections
import threading

#: How often a waiter looks at its ``cancelled`` event.
POLL_S = 0.05


class FairLock:
    """First come, first served; :meth:`acquire` returns False once ``cancelled`` is set."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()  # waiters, in order
        self._held = False

    @property
    def waiting(self) -> int:
        """Threads waiting for the lock now."""
        return len(self._queue)

    def acquire(self, cancelled: threading.Event) -> bool:
        """Blocking: take the lock once everyone who asked before has had it; False (and the
        place given up) when ``cancelled`` is set first."""
        ticket = object()
        with self._turns:
            self._queue.append(ticket)
            while (self._held or self._queue[0] is not ticket) and not cancelled.is_set():
                self._turns.wait(POLL_S)
            self._queue.remove(ticket)
            if cancelled.is_set():
                self._turns.notify_all()  # the next in line may be first now
                return False
            self._held = True
            return True

    def release(self) -> None:
        with self._turns:
            self._held = False
            self._turns.notify_all()
