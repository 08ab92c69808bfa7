"""Turn scoring under way: an in-process LLM leaves a core to the end-of-turn audio model.

``turn.smart`` starts a speculated reply as soon as the text model has judged the pause's
transcript, often before Smart Turn scores the pause's audio on one thread (at 150 ms of
silence, ~35-50 ms a call on two cores). An LLM computing on all its threads beside it slows
both (llama.cpp's OpenMP threads spin and take the cores), so while a pause's score is due or
under way the LLM computes on one thread, and on all of them again once the score is in
(docs/benchmarks.md, "The reply's prompt beside Smart Turn").

The turn node marks a scoring in the event loop; the LLM reads the mark on its own thread
between tokens, so this is a ``threading`` object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TurnScoring:
    """Whether the end-of-turn model is scoring one of the session's pauses (or will soon:
    the score is due at a set silence)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def under_way(self) -> bool:
        return self._pending > 0

    @contextmanager
    def scoring(self) -> Iterator[None]:
        """Mark a pause's score as under way for the ``with`` block."""
        with self._lock:
            self._pending += 1
        try:
            yield
        finally:
            with self._lock:
                self._pending -= 1
