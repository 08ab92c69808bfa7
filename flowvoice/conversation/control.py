"""What a client may decide about a session's turns instead of the graph.

By default the turn node ends the user's turn by itself and the assistant answers at once.
A client that drives the conversation (the OpenAI Realtime API: push-to-talk, typed
messages, ``create_response: false``) changes that through the session's
:class:`TurnControl`: whether turns end automatically, whether a committed turn is answered
at once, a fixed silence or a cap instead of the node's own wait, and its requests: commit
the speech now, forget it, answer now. The turn node reads it; the client's transport writes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from flowvoice.frames import UserTurn


class TurnControl:
    """One session's client-side say over turns (see the module docs)."""

    def __init__(self) -> None:
        #: The turn node ends the user's turn by itself (False: only on :meth:`request_commit`).
        self.auto_commit = True
        #: A committed turn is answered at once (False: only on :meth:`request_reply`).
        self.auto_reply = True
        #: Speech while the assistant speaks may interrupt it.
        self.barge_in = True
        #: A fixed silence that ends the turn, instead of the turn node's own choice.
        self.silence_ms: int | None = None
        #: The longest silence the turn node may wait.
        self.max_wait_ms: int | None = None
        self.commit_requested = False
        self.clear_requested = False
        self._texts: list[str] = []
        self._replies: deque[int] = deque()  # turns to answer
        self._listeners: list[Callable[[], None]] = []

    def on_request(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever a request is made (the turn node wakes up)."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def wait_ms(self, node_wait_ms: int) -> int:
        """The silence to wait, given the one the turn node would choose."""
        wait = self.silence_ms if self.silence_ms is not None else node_wait_ms
        return wait if self.max_wait_ms is None else min(wait, self.max_wait_ms)

    # -- requests ----------------------------------------------------------------------------
    def request_commit(self) -> None:
        """End the user's turn as soon as the speech heard so far is transcribed."""
        self.commit_requested = True
        self._notify()

    def request_clear(self) -> None:
        """Forget the user's speech that is not committed yet."""
        self.clear_requested = True
        self.commit_requested = False
        self._notify()

    def add_text(self, text: str) -> None:
        """User text waiting for the next reply (a typed message, or a turn committed while
        ``auto_reply`` is off)."""
        if text.strip():
            self._texts.append(text.strip())

    def request_reply(self, turn: int) -> None:
        """Answer, as ``turn``, the user text waiting then (after a requested commit)."""
        self._replies.append(turn)
        self._notify()

    def take_reply(self) -> UserTurn | None:
        """The oldest requested reply, with the user text waiting (empty when none is); the
        turn node emits it once no commit is pending."""
        if not self._replies:
            return None
        text, self._texts = " ".join(self._texts), []
        return UserTurn(turn=self._replies.popleft(), text=text)
