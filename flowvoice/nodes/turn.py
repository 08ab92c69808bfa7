"""Turn detection: decide when the user has finished speaking and commit their turn.

Both nodes wait, after the VAD's speech end and the final transcript, for a silence measured
from the end of speech; ``turn.dynamic`` picks that silence from the text (short after a
finished sentence, long after a trailing "and", "um", a comma or "..."), ``turn.silence``
uses a fixed one. Speech that resumes before the wait expires continues the same turn.
Committing raises the session's turn (preempting older replies), records the latency-trace
marks, publishes a ``user_turn`` event and emits one ``UserTurn``.

Barge-in: speech that starts while the assistant is still speaking pauses its voice; once it
has lasted ``barge_in_min_speech_ms`` (and has ``barge_in_min_words`` in the partial
transcript) the turn is raised, which stops the LLM, TTS and every queued frame of the reply
and makes the sink tell the listener to flush. Shorter speech (a cough, "mm-hm") resumes the
voice where it paused. The browser's echo cancellation keeps the assistant's own voice out of
the microphone; the minimum speech time is the server-side guard against what leaks through.

Speculation (``speculate: true``): as soon as the speech pauses and the STT's ``stable``
transcript of it is in (or, failing that, the final transcript), a speculative turn starts
the reply while the silence wait runs; sinks hold its output. If the user stays silent and
the final transcript matches, the turn commits and the held reply goes out at once; if they
speak on or the text changes, it is cancelled (and the LLM forgets it). The wait is then
stretched to the measured time the reply needs, since waiting that long costs nothing and
gives the user more time to go on.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

import anyio
from pydantic import Field, model_validator

from flowvoice.frames import Frame, Transcript, UserTurn, VADEvent
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, Port

Ending = Literal["complete", "incomplete", "open"]

_CONTINUATION_WORDS = """
and or but so because cause since although though unless until while whereas if than as to
the a an my your our their that which who whose where when of for with without from into onto
at between like um uh er erm hmm ah also plus
"""
#: Words that leave a clause unfinished when the user pauses after them.
CONTINUATIONS = frozenset(_CONTINUATION_WORDS.split())
#: While a stretched wait runs, how often to look whether the held reply is ready.
READY_POLL_S = 0.02
_WORD = re.compile(r"[\w']+")


def classify_ending(text: str) -> Ending:
    """How a transcript ends: a finished sentence, an unfinished clause, or unknown.

    "?" and "!" finish a sentence; a trailing continuation word ("and", "to", "um", ...),
    comma, colon, dash or ellipsis leaves it unfinished, even before a final "." (Whisper
    often closes a paused fragment with one); a "." finishes anything else.
    """
    text = text.strip().strip("\"')]")
    if not text:
        return "open"
    if text.endswith(("...", "\u2026", ",", ";", ":", "-", "\u2013", "\u2014")):
        return "incomplete"
    if text[-1] in "?!":
        return "complete"
    words = _WORD.findall(text.lower())
    if words and words[-1] in CONTINUATIONS:
        return "incomplete"
    return "complete" if text[-1] == "." else "open"


class ConversationParams(NodeParams):
    """Barge-in and speculation settings shared by the turn nodes."""

    barge_in: bool = Field(True, description="Let the user interrupt the assistant by speaking.")
    barge_in_min_speech_ms: int = Field(
        400,
        ge=0,
        le=5000,
        description="Speech must last this long while the assistant speaks to interrupt it "
        "(coughs and 'mm-hm' do not; also the guard against echo the browser lets through).",
    )
    barge_in_confirm_ms: int = Field(
        250,
        ge=0,
        le=5000,
        description="Extra wait before deciding, so speech that already stopped can be seen to "
        "have stopped: set it to the VAD's min_silence_ms (the assistant is paused meanwhile).",
    )
    barge_in_min_words: int = Field(
        0, ge=0, le=20, description="Words the partial transcript must also hold (0: any)."
    )
    resume_false_interruption: bool = Field(
        True,
        description="Pause the assistant when speech starts and resume it if the speech ends "
        "before it qualifies as a barge-in.",
    )
    speculate: bool = Field(
        False,
        description="Start the reply on the transcript of the pause while the silence wait "
        "runs; release it when the turn commits, cancel it if the user speaks on.",
    )


class _TurnNode(Node):
    inputs = {
        "vad": Port(VADEvent, doc="speech start / end"),
        "transcript": Port(Transcript, doc="final transcripts; partials count barge-in words"),
    }
    outputs = {"user_turn": Port(UserTurn)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._texts: list[str] = []
        self._speaking = False
        self._paused = False  # speaking, but the VAD reported a pause
        self._stable: str | None = None  # the STT's transcript of the current pause
        self._awaiting = 0  # speech ends whose final transcript has not arrived yet
        self._early_finals: list[Transcript] = []  # finals that arrived before their speech end
        self._end: VADEvent | None = None
        self._final: Transcript | None = None
        self._changed = anyio.Event()
        self._partial_words = 0
        self._barge_start: VADEvent | None = None  # speech that may interrupt the assistant
        self._ignore_finals = 0  # finals of false alarms (backchannels) still to come
        self._speculation: tuple[int, str] | None = None  # (turn, text) held by the sinks
        self._ready_ms = 0.0  # measured end-of-speech -> first reply audio of speculations
        self._last_speculated: int | None = None
        self._stretched = False  # the wait is stretched until the held reply is ready

    def wait_ms(self, text: str) -> int:
        """Silence after the end of speech needed to commit a turn ending with ``text``."""
        raise NotImplementedError

    @property
    def conversation(self) -> ConversationParams:
        return self.params  # type: ignore[return-value]

    async def process(self, port: str, frame: Frame) -> None:
        if isinstance(frame, VADEvent):
            self._paused, self._stable = frame.kind == "pause", None
            if frame.kind == "resume":
                await self._cancel_speculation()
            elif frame.kind == "end":
                self._speech_ended(frame)
            elif frame.kind == "start":
                self._speaking = True
                await self._speech_started(frame)
        elif isinstance(frame, Transcript):
            if not frame.final:
                self._partial_words = len(frame.text.split())
                if frame.stable and self._paused:
                    self._stable = frame.text.strip()
            elif self._awaiting:
                self._final_arrived(frame)
            else:  # it overtook its speech end (the STT had it ready at the pause)
                self._early_finals.append(frame)
        self._changed.set()

    def _speech_ended(self, end: VADEvent) -> None:
        self._speaking = False
        self._end = end
        self._awaiting += 1
        if self._barge_start is not None:  # too short to interrupt: a false alarm
            self._barge_start = None
            self._ignore_finals += 1  # "hmm" must not become a user turn either
            self.context.speaker.resume()
        if self._early_finals:
            self._final_arrived(self._early_finals.pop(0))

    def _final_arrived(self, final: Transcript) -> None:
        """Take the final transcript of the oldest speech end still waiting for one."""
        self._awaiting -= 1
        if self._ignore_finals:
            self._ignore_finals -= 1
        else:
            if final.text.strip():
                self._texts.append(final.text.strip())
            self._final = final

    async def _cancel_speculation(self) -> bool:
        """Drop the speculated reply (the user goes on); whether there was one."""
        if self._speculation is None:
            return False
        self._speculation = None
        await self.context.new_turn("speculation cancelled")
        return True

    async def _speech_started(self, start: VADEvent) -> None:
        self._partial_words = 0
        if await self._cancel_speculation():
            return
        playback, turn = self.context.playback, self.context.turn
        if self.conversation.barge_in and playback.is_playing(turn):
            self._barge_start = start
            if self.conversation.resume_false_interruption:
                self.context.speaker.pause()

    def _barge_in_due_ns(self) -> int | None:
        """When the speech that started during the reply qualifies as a barge-in."""
        start, p = self._barge_start, self.conversation
        if start is None or self._partial_words < p.barge_in_min_words:
            return None
        return start.t_ns + (p.barge_in_min_speech_ms + p.barge_in_confirm_ms) * 1_000_000

    def _deadline_ns(self) -> int | None:
        """When the pending turn commits if nothing changes; None while it cannot."""
        if self._speaking or self._awaiting or self._end is None or self._final is None:
            return None
        wait = base = self.wait_ms(self._texts[-1] if self._texts else "")
        if self.conversation.speculate and not self._held_reply_ready():
            wait = max(base, min(self._ready_ms, self.max_wait_ms()))
        self._stretched = wait > base
        return self._end.t_ns + int(wait * 1_000_000)

    def _held_reply_ready(self) -> bool:
        """The speculated reply's first audio exists (the sinks hold it): the stretch, an
        estimate of when it would be, can end."""
        trace = self.context.trace(self._speculation[0]) if self._speculation else None
        return trace is not None and "first_audio" in trace.marks

    def max_wait_ms(self) -> int:
        """The longest silence this node ever waits."""
        return self.wait_ms("")

    def _speculation_text(self, deadline: int | None) -> str | None:
        """What to speculate on: the finals so far once the turn can commit, or while the
        speech pauses, those plus the pause's transcript; None when there is nothing yet."""
        if deadline is not None:
            return " ".join(self._texts) or None
        if self._paused and self._stable and self._barge_start is None:
            return " ".join([*self._texts, self._stable])
        return None

    async def run(self) -> None:
        while True:
            self._changed = anyio.Event()
            barge_in = self._barge_in_due_ns()
            deadline = self._deadline_ns()
            text = self._speculation_text(deadline) if self.conversation.speculate else None
            if text is not None and (self._speculation is None or self._speculation[1] != text):
                await self._speculate(text)
            due = min((t for t in (barge_in, deadline) if t is not None), default=None)
            if due is None:
                await self._changed.wait()
                continue
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                if self._stretched and due == deadline:
                    delay = min(delay, READY_POLL_S)
                with anyio.move_on_after(delay):
                    await self._changed.wait()
                continue  # the next pass commits once the due time has come
            if due == barge_in:
                await self._barge_in()
            else:
                await self._commit()

    async def _barge_in(self) -> None:
        self._barge_start = None
        interrupted = self.context.turn
        decided_ns = time.monotonic_ns()
        await self.context.new_turn("barge-in")
        self.context.publish("barge_in", turn=interrupted, decided_ns=decided_ns)

    async def _speculate(self, text: str) -> None:
        """Start the reply to ``text``; sinks hold it until the turn commits."""
        if self._last_speculated is not None:
            self._update_ready_ms(self._last_speculated)
        turn = await self.context.new_turn("speculative", speculative=True)
        self._speculation = (turn, text)
        self._last_speculated = turn
        await self.emit("user_turn", UserTurn(turn=turn, text=text))

    def _update_ready_ms(self, turn: int) -> None:
        trace = self.context.trace(turn)
        ready = trace.latencies_ms().get("first_audio") if trace else None
        if ready is not None:
            self._ready_ms = ready if not self._ready_ms else 0.7 * self._ready_ms + 0.3 * ready

    async def end_of_stream(self) -> None:
        while self._early_finals:
            self._awaiting += 1
            self._final_arrived(self._early_finals.pop(0))
        if self._texts:
            await self._commit()

    async def _commit(self) -> None:
        texts, end, final = self._texts, self._end, self._final
        self._texts, self._end, self._final = [], None, None
        if not texts:  # only noise was heard
            return
        text = " ".join(texts)
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation[1] == text:
            turn = speculation[0]
            self.context.commit(turn)
        else:
            turn = await self.context.new_turn("user_turn")
        if end is not None:
            self.context.mark("speech_end", turn, t_ns=end.t_ns)
        if final is not None:
            self.context.mark("final_transcript", turn, t_ns=final.t_ns)
        self.context.mark("turn_committed", turn)
        self.context.publish("user_turn", turn=turn, text=text)
        if speculation is None or turn != speculation[0]:
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
class DynamicTurn(_TurnNode):
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
class SilenceTurn(_TurnNode):
    """Commits the user's turn after a fixed silence (and the final transcript): the baseline."""

    Params = SilenceTurnParams
    params: SilenceTurnParams

    def wait_ms(self, text: str) -> int:
        return self.params.silence_ms
