"""What every streaming LLM node shares: ports, chat history, the reply's life cycle.

A subclass implements :meth:`StreamingLLM.generate`, which streams the reply to the last
user message of :attr:`StreamingLLM.history` by awaiting ``emit(text)`` per piece. The base
class records the reply in the history (only what the user heard when it was interrupted
while playing), marks ``first_token``, and ends every reply with ``TextDelta("", final=True)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field

from flowvoice.conversation import Conversation
from flowvoice.frames import Frame, TextDelta, UserTurn
from flowvoice.node import Node, NodeParams, Port
from flowvoice.nodes.chat_history import SYSTEM_PROMPT, ChatHistory

Emit = Callable[[str], Awaitable[None]]


class LLMParams(NodeParams):
    """Params every LLM node has."""

    system_prompt: str = Field(SYSTEM_PROMPT, description="Instructions that open the prompt.")
    max_tokens: int = Field(64, ge=1, le=8192, description="Longest reply, in tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0 = greedy).")
    history_turns: int = Field(8, ge=0, le=100, description="Past exchanges kept in the prompt.")
    error_reply: str = Field(
        "Sorry, something went wrong. Please say that again.",
        description="Spoken when the reply fails (engine hung or down); empty for silence. "
        "The error itself is published as an 'error' event.",
    )


class ReplyFailed(Exception):
    """The reply could not be produced; the message says why, for the user."""


class StreamingLLM(Node):
    """Base of LLM nodes: a ``UserTurn`` in, the streamed reply out as ``TextDelta``s.

    :meth:`generate` may raise :class:`ReplyFailed`: the turn's user message is then dropped
    from the history (it was never answered) and the reply ends without text.
    """

    inputs = {"prompt": Port(UserTurn)}
    outputs = {"text": Port(TextDelta, doc="the reply in pieces, then an empty final piece")}
    Params = LLMParams
    params: LLMParams
    preemptible = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        self.conversation = Conversation.of(self.context)
        self.history = ChatHistory(p.system_prompt, max(1, p.history_turns + 1))
        self._reply_turn: int | None = None  # turn of the last recorded reply

    async def generate(self, emit: Emit) -> None:
        """Stream the reply to the history's last user message: ``await emit(piece)``."""
        raise NotImplementedError

    async def process(self, port: str, frame: Frame) -> None:
        assert isinstance(frame, UserTurn)
        turn = frame.turn
        instructions = self.conversation.instructions
        self.history.system_prompt = (
            self.params.system_prompt if instructions is None else instructions
        )
        self._recut_replies()
        self.history.add_user(frame.text)
        reply: list[str] = []

        async def emit(text: str) -> None:
            if not reply:
                text = text.lstrip()
                if not text:
                    return
                self.context.mark("first_token", turn)
            reply.append(text)
            await self.emit("text", TextDelta(text=text))

        outcome = "cut"
        try:
            await self.generate(emit)
            outcome = "done"
        except ReplyFailed:
            outcome = "failed"
        finally:
            self._record(turn, "".join(reply), outcome)
        await self.emit("text", TextDelta(text="", final=True))

    async def fail(self, message: str, started: bool, code: str = "reply_failed") -> None:
        """Publish the error; speak ``error_reply`` when nothing of the reply was said yet."""
        self.context.publish(
            "error",
            code=code,
            turn=self.context.frame_turn,
            node=self.name,
            message=f"{self.type_name}: {message}",
        )
        if self.params.error_reply and not started:
            await self.emit("text", TextDelta(text=self.params.error_reply))

    def _record(self, turn: int, produced: str, outcome: str) -> None:
        unanswered = outcome == "failed" and not produced
        cancelled_speculation = outcome == "cut" and not self.conversation.is_committed(turn)
        if unanswered or cancelled_speculation:
            if self.history.messages and self.history.messages[-1].role == "user":
                self.history.messages.pop()
            return
        if outcome == "done":
            self.history.add_assistant(produced, turn=turn)
        else:  # cut short: keep what the user heard of it (all of it in a text-only graph)
            playback = self.conversation.playback
            heard = playback.heard_text(turn)[0] if playback.knows(turn) else produced
            self.history.add_assistant(heard, interrupted=True, turn=turn)
        self._reply_turn = turn

    def _recut_replies(self) -> None:
        """Cut interrupted replies again to what the client reported it played: a report can
        come after the interrupt (a Realtime client's ``conversation.item.truncate``)."""
        playback = self.conversation.playback
        for index, message in enumerate(self.history.messages):
            if message.interrupted and message.turn is not None and playback.reported(message.turn):
                heard = playback.heard_text(message.turn)[0]
                if heard != message.content:
                    self.history.cut_reply(index, heard)

    async def on_interrupt(self, turn: int) -> None:
        last = self._reply_turn
        if last is None:
            return
        conversation = self.conversation
        if not conversation.is_committed(last):  # a speculated reply the user never got
            self.history.drop_last_exchange()
            self._reply_turn = None
        elif conversation.voice.paused or conversation.playback.is_playing(last):
            # Paused: speech held the voice mid-reply and now interrupts it; a browser has
            # meanwhile played all it was sent, so the reply no longer looks like playing.
            self.history.cut_last_reply(conversation.playback.heard_text(last)[0])
            self._reply_turn = None
