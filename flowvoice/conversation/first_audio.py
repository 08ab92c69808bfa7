"""First audio first: the LLM yields the CPU while the reply's first sentence is synthesized.

On a CPU the LLM and the TTS share the cores, and the reply is heard only once its first
sentence is synthesized: measured on two cores, Piper took 245 instead of 87 ms for a
sentence while gemma3-270m generated beside it, and the tokens were no slower for it. The TTS
marks the synthesis of a turn's first sentence (until its first audio), and an in-process
LLM, between tokens, waits while one is under way: the next sentence is still ready long
before the first one has been played. A token that ends the reply's first sentence is handed
to the TTS through the event loop, so there the LLM first waits (``HANDOFF_S`` at most) for the
synthesis to begin: its next token would otherwise be computed beside it.

Both sides are threads (the LLM computes on its own thread), so this is a ``threading``
object; a wait is bounded, so a stuck synthesis never stalls the reply, and ends soon after
the reply is cancelled, so an interrupt is not held up by it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: How often a waiting LLM looks whether its reply was cancelled.
CANCEL_POLL_S = 0.02
#: How long an LLM that ended its first sentence waits for the TTS to take it up.
HANDOFF_S = 0.02


class FirstAudio:
    """Whether a first sentence of the session's reply is being synthesized now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._synthesizing = 0
        self._idle = threading.Event()
        self._idle.set()
        self._busy = threading.Event()  # the complement of _idle

    @property
    def pending(self) -> bool:
        return not self._idle.is_set()

    def synthesizing(self) -> FirstSentence:
        """Mark a first sentence's synthesis; :meth:`FirstSentence.heard` ends it (once)."""
        with self._lock:
            self._synthesizing += 1
            self._idle.clear()
            self._busy.set()
        return FirstSentence(self._done)

    def handed_over(self) -> bool:
        """Blocking: return once a first sentence is being synthesized, or after
        ``HANDOFF_S``; whether one is."""
        return self._busy.wait(HANDOFF_S)

    def wait(self, timeout_s: float, cancelled: threading.Event | None = None) -> bool:
        """Blocking: return once no first sentence is being synthesized, after ``timeout_s``
        or soon after ``cancelled`` is set; whether none is."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0 and not (cancelled and cancelled.is_set()):
            if self._idle.wait(min(left, CANCEL_POLL_S)):
                return True
        return self._idle.is_set()

    def _done(self) -> None:
        with self._lock:
            self._synthesizing -= 1
            if not self._synthesizing:
                self._busy.clear()
                self._idle.set()


class FirstSentence:
    """One first sentence under synthesis: :meth:`heard` at its first audio (or when the
    synthesis ends without any); later calls do nothing."""

    def __init__(self, done: Callable[[], None]) -> None:
        self._done: Callable[[], None] | None = done

    def heard(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()
