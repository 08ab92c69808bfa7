"""Turn detection: decide when the user has finished speaking and commit their turn.

Both nodes wait, after the VAD's speech end and the final transcript, for a silence measured
from the end of speech; ``turn.dynamic`` picks that silence from the text (short after a
finished sentence, long after a trailing "and", "um", a comma or "..."), ``turn.silence``
uses a fixed one. Speech that resumes before the wait expires continues the same turn.
Committing raises the session's turn (preempting older replies), records the latency-trace
marks, publishes a ``user_turn`` event and emits one ``UserTurn``.
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


class _TurnNode(Node):
    inputs = {
        "vad": Port(VADEvent, doc="speech start / end"),
        "transcript": Port(Transcript, doc="final transcripts (partials are ignored)"),
    }
    outputs = {"user_turn": Port(UserTurn)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._texts: list[str] = []
        self._speaking = False
        self._awaiting = 0  # speech ends whose final transcript has not arrived yet
        self._end: VADEvent | None = None
        self._final: Transcript | None = None
        self._changed = anyio.Event()

    def wait_ms(self, text: str) -> int:
        """Silence after the end of speech needed to commit a turn ending with ``text``."""
        raise NotImplementedError

    async def process(self, port: str, frame: Frame) -> None:
        if isinstance(frame, VADEvent):
            self._speaking = frame.kind == "start"
            if frame.kind == "end":
                self._end = frame
                self._awaiting += 1
        elif isinstance(frame, Transcript) and frame.final:
            self._awaiting = max(0, self._awaiting - 1)
            if frame.text.strip():
                self._texts.append(frame.text.strip())
            self._final = frame
        self._changed.set()

    def _deadline_ns(self) -> int | None:
        """When the pending turn commits if nothing changes; None while it cannot."""
        if self._speaking or self._awaiting or self._end is None or self._final is None:
            return None
        return self._end.t_ns + self.wait_ms(self._texts[-1] if self._texts else "") * 1_000_000

    async def run(self) -> None:
        while True:
            self._changed = anyio.Event()
            deadline = self._deadline_ns()
            if deadline is None:
                await self._changed.wait()
                continue
            delay = (deadline - time.monotonic_ns()) / 1e9
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._changed.wait()
                    continue
            await self._commit()

    async def end_of_stream(self) -> None:
        if self._texts:
            await self._commit()

    async def _commit(self) -> None:
        texts, end, final = self._texts, self._end, self._final
        self._texts, self._end, self._final = [], None, None
        if not texts:  # only noise was heard
            return
        text = " ".join(texts)
        turn = await self.context.new_turn("user_turn")
        if end is not None:
            self.context.mark("speech_end", turn, t_ns=end.t_ns)
        if final is not None:
            self.context.mark("final_transcript", turn, t_ns=final.t_ns)
        self.context.mark("turn_committed", turn)
        self.context.publish("user_turn", turn=turn, text=text)
        await self.emit("user_turn", UserTurn(turn=turn, text=text))


class DynamicTurnParams(NodeParams):
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

    def wait_ms(self, text: str) -> int:
        p = self.params
        ending = classify_ending(text)
        if ending == "complete":
            return p.min_wait_ms
        return p.max_wait_ms if ending == "incomplete" else p.open_wait_ms


class SilenceTurnParams(NodeParams):
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
