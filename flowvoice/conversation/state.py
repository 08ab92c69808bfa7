"""One session's conversation state: playback ledger, voice gate, held speculative turns, the
first sentence under synthesis, the pause being scored and what a client decided (turn
control, instructions)."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from flowvoice.conversation.control import TurnControl
from flowvoice.conversation.first_audio import FirstAudio
from flowvoice.conversation.playback import PlaybackLedger
from flowvoice.conversation.turn_scoring import TurnScoring
from flowvoice.conversation.voice import SpeakerGate
from flowvoice.node import NodeContext
from flowvoice.runtime.session import Session

#: Held (speculative) turns older than this many turns are forgotten.
KEEP_HELD_TURNS = 64
#: Speech begun this soon after a reply ended on a statement still counts as over the reply
#: (the page hears a reply ~75-125 ms after the server sends it: docs/benchmarks.md).
REPLY_TAIL_S = 0.3


class Conversation:
    """Made once per session on first use: ``Conversation.of(self.context)`` in a node.

    A new turn resumes a paused voice (after the nodes were told: a paused speaker was still
    speaking when the interrupt reached it).
    """

    def __init__(self, session: Session):
        self._session = session
        self.playback = PlaybackLedger()
        self.voice = SpeakerGate(self.playback, self._publish_voice_state)
        self.control = TurnControl()
        self.first_audio = FirstAudio()
        self.turn_scoring = TurnScoring()
        #: The LLM's instructions when a client set them (None: the graph's system prompt).
        self.instructions: str | None = None
        self._held: dict[int, anyio.Event] = {}
        self._word_listeners: list[Callable[[str], None]] = []
        session.on_new_turn(self._turn_raised)

    @classmethod
    def of(cls, context: NodeContext) -> Conversation:
        """The conversation of the node's session."""
        return context.shared(cls)

    @classmethod
    def of_session(cls, session: Session) -> Conversation:
        """The conversation of ``session`` (for servers and tests outside any node)."""
        return session.shared(cls)

    @property
    def turn(self) -> int:
        return self._session.turn

    def reply_playing_at(self, t_ns: int) -> bool:
        """Whether the current turn's reply was playing at monotonic time ``t_ns`` (e.g. when
        speech started: its VAD event comes ~100 ms later, when a short reply may have ended),
        or had ended less than ``REPLY_TAIL_S`` before on a statement: the estimate of its end
        runs ahead of what the listener hears (their player's start, the network), and a
        "yeah" there acknowledges the reply. After a question it answers it: a turn."""
        now, turn = t_ns / 1e9, self.turn
        return self.playback.is_playing(turn, now=now) or self.playback.ended_statement_within(
            turn, now, REPLY_TAIL_S
        )

    async def new_turn(self, reason: str) -> int:
        """Raise the session's turn, preempting older work; returns the new turn."""
        return await self._session.new_turn(reason)

    def publish(self, event_type: str, **data: object) -> None:
        """Send an event to the session's listeners."""
        self._session.publish({"type": event_type, **data})

    def on_user_words(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(words)`` with the user's words so far while they speak (the turn's
        finals and the latest partial transcript): an in-process LLM reads them ahead."""
        self._word_listeners.append(listener)

    def user_words(self, words: str) -> None:
        """The turn node heard the user's words so far."""
        for listener in self._word_listeners:
            listener(words)

    def _turn_raised(self, turn: int) -> None:
        for stale in [t for t in self._held if t < turn - KEEP_HELD_TURNS]:
            del self._held[stale]
        self.voice.resume()

    def _publish_voice_state(self, paused: bool) -> None:
        self.publish("voice_paused" if paused else "voice_resumed", turn=self._session.turn)

    # -- speculative turns: output held until committed ---------------------------------------
    async def new_held_turn(self, reason: str) -> int:
        """Raise the turn; sinks hold its output until :meth:`commit` releases it."""
        turn = await self._session.new_turn(reason)
        self._held[turn] = anyio.Event()
        return turn

    def commit(self, turn: int) -> None:
        """Release a held turn: its held and future output goes out."""
        event = self._held.pop(turn, None)
        if event is not None:
            event.set()

    def is_committed(self, turn: int) -> bool:
        """False for a held turn not (or never to be) committed."""
        return turn not in self._held

    async def wait_committed(self, turn: int) -> None:
        """Return once ``turn`` is committed (at once for ordinary turns)."""
        event = self._held.get(turn)
        if event is not None:
            await event.wait()
