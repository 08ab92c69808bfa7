"""Turn detection: decide when the user has finished speaking and commit their turn.

Both nodes wait, after the VAD's speech end and the final transcript, for a silence measured
from the end of speech; ``turn.dynamic`` picks that silence from the text (short after a
finished sentence, long after a trailing "and", "um", a comma or "..."), ``turn.silence``
uses a fixed one. Speech that resumes before the wait expires continues the same turn.
Committing raises the session's turn (preempting older replies), records the latency-trace
marks, publishes a ``user_turn`` event and emits one ``UserTurn``.

The same node feeds the conversation's policies the speech and transcripts it sees: barge-in
(:mod:`flowvoice.conversation.bargein`: does speech during the reply interrupt it?) and
speculation (:mod:`flowvoice.conversation.speculation`: start the reply on the transcript of
a pause, release it when the turn commits).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from pydantic import Field, model_validator

from flowvoice.conversation import Conversation
from flowvoice.conversation.bargein import BargeIn, BargeInParams
from flowvoice.conversation.endings import classify_ending
from flowvoice.conversation.speculation import Speculation, SpeculationParams
from flowvoice.frames import Frame, Transcript, UserTurn, VADEvent
from flowvoice.graph.registry import register
from flowvoice.node import Node, Port


class ConversationParams(BargeInParams, SpeculationParams):
    """Barge-in and speculation settings shared by the turn nodes."""


class TurnDetector(Node):
    """Base of the ``turn.*`` nodes: pairs speech ends with final transcripts, waits
    :meth:`wait_ms` of silence, commits the turn, and feeds barge-in and speculation."""

    inputs = {
        "vad": Port(VADEvent, doc="speech start / end"),
        "transcript": Port(Transcript, doc="final transcripts; partials count barge-in words"),
    }
    outputs = {"user_turn": Port(UserTurn)}
    params: ConversationParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conversation = conversation = Conversation.of(self.context)
        self.control = conversation.control
        self.control.on_request(lambda: self._changed.set())
        # a held reply's first audio ends a wait stretched for it
        conversation.playback.on_first_audio(lambda _: self._changed.set())
        self.barge_in = BargeIn(conversation, self.params)
        self.speculation = Speculation(conversation) if self.params.speculate else None
        self._texts: list[str] = []
        self._speaking = False
        self._paused = False  # speaking, but the VAD reported a pause
        self._stable: str | None = None  # the STT's transcript of the current pause
        self._awaiting = 0  # speech ends whose final transcript has not arrived yet
        self._early_finals: list[Transcript] = []  # finals that arrived before their speech end
        self._end: VADEvent | None = None
        self._final: Transcript | None = None
        self._changed = anyio.Event()
        self._decided_ns: int | None = None  # when turn_decided was published for the turn

    def wait_ms(self, text: str) -> int:
        """Silence after the end of speech needed to commit a turn ending with ``text``."""
        raise NotImplementedError

    def max_wait_ms(self) -> int:
        """The longest silence this node ever waits."""
        return self.wait_ms("")

    def ready_to_speculate(self, text: str) -> bool:
        """Whether a reply to ``text`` may start now (a node may first finish its own work)."""
        return True

    async def process(self, port: str, frame: Frame) -> None:
        if isinstance(frame, VADEvent):
            self._paused, self._stable = frame.kind == "pause", None
            if frame.kind in ("start", "resume"):
                self._decided_ns = None
            self.barge_in.speech_paused(frame if self._paused else None)
            if frame.kind == "resume":
                await self._cancel_speculation()
            elif frame.kind == "end":
                self._speech_ended(frame)
                self.context.publish(
                    "speech_stopped", turn=self.context.turn, stream_s=frame.stream_s
                )
            elif frame.kind == "start":
                self._speaking = True
                if not await self._cancel_speculation():  # the user went on: no barge-in
                    self.barge_in.speech_started(frame)
                self.context.publish(
                    "speech_started",
                    turn=self.context.turn,
                    stream_s=frame.stream_s,
                    checking=self.barge_in.pending,
                )
        elif isinstance(frame, Transcript):
            if not frame.final:
                self.barge_in.transcript_heard(frame.text)
                if frame.stable and self._paused:
                    self._stable = frame.text.strip()
                elif self._speaking and not self.barge_in.pending and frame.text.strip():
                    self._conversation.user_words(" ".join([*self._texts, frame.text.strip()]))
            elif self._awaiting:
                self._final_arrived(frame)
            else:  # it overtook its speech end (the STT had it ready at the pause)
                self._early_finals.append(frame)
        self._changed.set()

    def _speech_ended(self, end: VADEvent) -> None:
        self._speaking = False
        self._end = end
        self._awaiting += 1
        self.barge_in.speech_ended(end)
        if self._early_finals:
            self._final_arrived(self._early_finals.pop(0))

    def _final_arrived(self, final: Transcript) -> None:
        """Take the final transcript of the oldest speech end still waiting for one."""
        self._awaiting -= 1
        if not self.barge_in.final_heard(final.text):
            return
        if final.text.strip():
            self._texts.append(final.text.strip())
        self._final = final

    async def _cancel_speculation(self) -> bool:
        return self.speculation is not None and await self.speculation.cancel()

    def _deadlines_ns(self) -> tuple[int | None, int | None]:
        """(when the policy's own wait ends, when the pending turn commits) if nothing changes:
        the commit may wait longer for speculation's held reply; None while it cannot."""
        if self._speaking or self._awaiting or self._end is None or self._final is None:
            return None, None
        if not self.control.auto_commit:
            return None, None
        wait = base = self.control.wait_ms(self.wait_ms(self._texts[-1] if self._texts else ""))
        if self.speculation is not None:
            wait = self.speculation.wait_ms(base, self.control.wait_ms(self.max_wait_ms()))
        end = self._end.t_ns
        return end + int(base * 1_000_000), end + int(wait * 1_000_000)

    def _speculation_text(self, deadline: int | None) -> str | None:
        """What to speculate on: the finals so far once the turn can commit, or while the
        speech pauses, those plus the pause's transcript; None when there is nothing yet
        (or while speech during the reply is being checked: a barge-in decides first)."""
        if self.barge_in.pending:
            return None
        if deadline is not None:
            return " ".join(self._texts) or None
        if self._paused and self._stable:
            return " ".join([*self._texts, self._stable])
        return None

    async def _take_requests(self) -> None:
        """Carry out the client's requests (``conversation.control``): forget the speech, commit
        it once transcribed, answer the waiting text."""
        control = self.control
        if control.clear_requested:
            control.clear_requested = False
            self._texts, self._end, self._final = [], None, None
            await self._cancel_speculation()
        if control.commit_requested and not self._speaking and not self._awaiting:
            await self._commit()
        while not control.commit_requested and (reply := control.take_reply()) is not None:
            await self.emit("user_turn", reply)

    async def run(self) -> None:
        while True:
            self._changed = anyio.Event()
            await self._take_requests()
            barge_in = self.barge_in.due_ns()
            decision, deadline = self._deadlines_ns()
            if self._decided_ns is not None:
                decision = None  # published already
            if self.speculation is not None and self.control.auto_reply:
                text = self._speculation_text(deadline)
                if (
                    text is not None
                    and self.speculation.text != text
                    and self.ready_to_speculate(text)
                ):
                    await self.emit("user_turn", await self.speculation.start(text))
            dues = (barge_in, decision, deadline)
            due = min((t for t in dues if t is not None), default=None)
            if due is None:
                await self._changed.wait()
                continue
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._changed.wait()
                continue  # the next pass commits once the due time has come
            if due == barge_in:
                await self.barge_in.interrupt()
            elif due == decision:
                self._decide()
            else:
                await self._commit()

    def _decide(self) -> None:
        """The policy's own wait has passed: publish ``turn_decided`` (the commit itself may
        wait on for speculation's held reply)."""
        self._decided_ns = now = time.monotonic_ns()
        end = self._end.t_ns if self._end is not None else now
        self.context.publish("turn_decided", turn=self.context.turn, after_ms=(now - end) // 10**6)

    async def end_of_stream(self) -> None:
        while self._early_finals:
            self._awaiting += 1
            self._final_arrived(self._early_finals.pop(0))
        if self._texts:
            await self._commit()

    async def _commit(self) -> None:
        decided, self._decided_ns = self._decided_ns, None
        texts, end, final = self._texts, self._end, self._final
        self._texts, self._end, self._final = [], None, None
        requested, self.control.commit_requested = self.control.commit_requested, False
        if not texts and not requested:  # only noise was heard
            return
        text = " ".join(texts)
        if not texts or not self.control.auto_reply:  # the client asks for the reply
            self.control.add_text(text)
            self.context.publish("user_turn", turn=self.context.turn, text=text)
            return
        end_ns = end.t_ns if end is not None else None
        released = self.speculation.release(text, end_ns) if self.speculation else None
        turn = released if released is not None else await self.context.new_turn("user_turn")
        if end is not None:
            self.context.mark("speech_end", turn, t_ns=end.t_ns)
        if final is not None:
            self.context.mark("final_transcript", turn, t_ns=final.t_ns)
        if decided is not None:
            self.context.mark("turn_decided", turn, t_ns=decided)
        self.context.mark("turn_committed", turn)
        self.context.publish("user_turn", turn=turn, text=text)
        if released is None:
            await self.emit("user_turn", UserTurn(turn=turn, text=text))


class DynamicTurnParams(ConversationParams):
    min_wait_ms: int = Field(
        300, ge=0, le=10000, description="Silence after a finished sentence (ends in . ? !)."
    )
    open_wait_ms: int = Field(
        700, ge=0, le=10000, description="Silence after text without punctuation to go by."
    )
    max_wait_ms: int = Field(
        1500,
        ge=0,
        le=20000,
        description="Silence after an unfinished clause: a trailing 'and', 'so', 'um', "
        "'to', 'the', ..., a comma or '...'.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> DynamicTurnParams:
        if not self.min_wait_ms <= self.open_wait_ms <= self.max_wait_ms:
            raise ValueError("expected min_wait_ms <= open_wait_ms <= max_wait_ms")
        return self


@register("turn.dynamic")
class DynamicTurn(TurnDetector):
    """Commits the user's turn after a silence that depends on how the transcript ends.

    The silence is measured from the end of speech (the VAD end event), so the VAD's hang-over
    and the transcription time count towards it; the turn never commits before the final
    transcript of the last utterance has arrived.
    """

    Params = DynamicTurnParams
    params: DynamicTurnParams

    def max_wait_ms(self) -> int:
        return self.params.max_wait_ms

    def wait_ms(self, text: str) -> int:
        p = self.params
        ending = classify_ending(text)
        if ending == "complete":
            return p.min_wait_ms
        return p.max_wait_ms if ending == "incomplete" else p.open_wait_ms


class SilenceTurnParams(ConversationParams):
    silence_ms: int = Field(
        800, ge=0, le=20000, description="Silence after the end of speech that ends the turn."
    )


@register("turn.silence")
class SilenceTurn(TurnDetector):
    """Commits the user's turn after a fixed silence (and the final transcript): the baseline."""

    Params = SilenceTurnParams
    params: SilenceTurnParams

    def wait_ms(self, text: str) -> int:
        return self.params.silence_ms
