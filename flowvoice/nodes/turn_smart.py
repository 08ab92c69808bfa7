"""``turn.smart``: end of turn from the audio (Smart Turn v3.2) and the transcript together.

At each pause in the user's speech (``score_after_ms`` into the silence, 150 by default: the
model's scores depend on how much silence it hears; at 150 ms it separates finished from
unfinished turns as well as at 200, and its score is in before the VAD ends the speech) the
turn's audio up to that point is scored once by Smart Turn on a worker thread, as soon as the
pause's transcript is in (the STT computes until then; on two cores the two side by side
slowed both): the probability that the user has finished. Each transcript of the turn is judged
by a text model too (:mod:`flowvoice.nodes.text_turn_model`: how likely a user message ends
with these words, from the default LLM, gemma3-270m-en), the partial ones while the user speaks
as well (when no judgment is under way): the model keeps the words it has read, so at the pause
it computes only those after the last partial's. The two are combined in log-odds, the text's
``text_weight`` times (3: on synthetic speech the text separates finished from unfinished turns
far better, AUC 0.92 against 0.72, and the audio breaks its ties). That combined probability
and how the transcript ends give a hold time, measured from the end of speech, instead of a
yes/no:

- confident (``p >= confident_p``): ``confident_ms``;
- unsure (``p >= unlikely_p``): ``unsure_ms``;
- unlikely: the turn is scored again at ``rescore_ms`` of silence (the model then hears the
  silence too); still unlikely, it commits at ``max_wait_ms``, the hard cap;
- whatever the score, text that leaves the turn unfinished (a trailing "the", "and", "um",
  a comma, "would be", a dictated number, "If it rains tomorrow", "Can you", ...: see
  :func:`flowvoice.conversation.endings.unfinished`) waits ``unfinished_ms``. Whisper's
  closing "?" or "." is not trusted there: it punctuates a paused "Can you tell me about the"
  as "about that?". Measured on synthetic speech (``flowvoice bench turn-scores``), Smart
  Turn alone scores about half such fragments as finished: TTS voices end every fragment
  with a final fall.

Until both scores are in, the wait is the cap, so a slow model call delays the commit instead of
cutting the user off. Speech that resumes drops a pending or stale score (a generation count).
The silence itself comes from the VAD, the final transcript from the STT; barge-in and
speculation work as in ``turn.dynamic``, except that a speculated reply starts only once the
text model has judged the pause's transcript (on two cores an LLM computing beside the two
models slowed all three 2-3x), before Smart Turn's score when that is not being computed yet:
until the score is in, an in-process LLM computes on one thread
(:mod:`flowvoice.conversation.turn_scoring`). Without the text model it starts once the audio
is scored.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from pydantic import Field, model_validator

from flowvoice.conversation import Conversation
from flowvoice.conversation.endings import unfinished
from flowvoice.frames import AudioFrame, Frame, Transcript, VADEvent
from flowvoice.graph.registry import register
from flowvoice.node import NodeSetupError, Port
from flowvoice.nodes.llm import GEMMA, GEMMA_EN
from flowvoice.nodes.turn import ConversationParams, TurnDetector

#: Audio kept before the speech start, as Smart Turn was trained (pipecat keeps 0.5 s).
PREROLL_S = 0.5
#: The model sees at most the last 8 s.
WINDOW_S = 8.0
#: How long past ``score_after_ms`` a score waits for the pause's transcript (module docstring).
TRANSCRIPT_WAIT_S = 0.5


class SmartTurnParams(ConversationParams):
    """Defaults calibrated with ``flowvoice bench turn-scores`` (docs/benchmarks.md): the
    fastest setting that cuts off at most 2 % of the corpus's mid-turn pauses."""

    model: str = Field(
        "", description="Smart Turn v3.x ONNX file; empty: the v3.2 model shipped in flowvoice."
    )
    threads: int = Field(1, ge=1, le=16, description="ONNX Runtime threads per model call.")
    text_model: str = Field(
        GEMMA_EN,
        description="Language model judging whether the transcript ends the turn: "
        f"{GEMMA_EN!r} (the shipped default LLM), {GEMMA!r} or a Gemma GGUF path; "
        "empty: the audio score alone.",
    )
    text_weight: float = Field(
        3.0,
        ge=0,
        le=10,
        description="Weight of the text model's log-odds added to Smart Turn's (0: audio only).",
    )
    score_after_ms: int = Field(
        150, ge=0, le=5000, description="Silence after the end of speech at which it is scored."
    )
    confident_p: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Combined probability at or above which the turn is finished; empty: 0.6 "
        "with the text model, 0.9 on audio alone.",
    )
    unlikely_p: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Combined probability below which the user is likely to go on; empty: "
        "0.005 with the text model, 0.05 on audio alone.",
    )
    confident_ms: int = Field(
        200, ge=0, le=10000, description="Silence before committing a confidently finished turn."
    )
    unsure_ms: int = Field(900, ge=0, le=10000, description="Silence when unsure.")
    rescore_ms: int = Field(
        1000, ge=0, le=10000, description="Silence after which an unlikely end is scored again."
    )
    unfinished_ms: int = Field(
        1500,
        ge=0,
        le=20000,
        description="Silence after text that ends on an unfinished clause ('the', 'and', "
        "'um', a comma, 'is', a number), whatever the score.",
    )
    max_wait_ms: int = Field(
        2500, ge=0, le=20000, description="The longest silence before committing anyway."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SmartTurnParams:
        if self.confident_p is None:
            self.confident_p = 0.6 if self.uses_text else 0.9
        if self.unlikely_p is None:
            self.unlikely_p = 0.005 if self.uses_text else 0.05
        if not self.unlikely_p <= self.confident_p:
            raise ValueError("expected unlikely_p <= confident_p")
        waits = (self.score_after_ms, self.rescore_ms, self.max_wait_ms)
        holds = (self.confident_ms, self.unsure_ms, self.max_wait_ms)
        if sorted(holds) != list(holds) or sorted(waits) != list(waits):
            raise ValueError(
                "expected confident_ms <= unsure_ms <= max_wait_ms and "
                "score_after_ms <= rescore_ms <= max_wait_ms"
            )
        if self.unfinished_ms > self.max_wait_ms:
            raise ValueError("expected unfinished_ms <= max_wait_ms")
        return self

    @property
    def uses_text(self) -> bool:
        """Whether the text model takes part."""
        return bool(self.text_model) and self.text_weight > 0


def combined(audio_p: float, text_p: float | None, weight: float) -> float:
    """Smart Turn's probability with the text model's added in log-odds, ``weight`` times."""
    if text_p is None or weight == 0:
        return audio_p
    return 1 / (1 + math.exp(-(_log_odds(audio_p) + weight * _log_odds(text_p))))


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def hold_ms(
    probability: float | None, text: str, params: SmartTurnParams, text_p: float | None = None
) -> int:
    """Silence after the end of speech before committing a turn that Smart Turn scored
    ``probability`` (None: not scored yet, so the cap), whose transcript is ``text`` and which
    the text model scored ``text_p`` (None: not used)."""
    if probability is None:
        return params.max_wait_ms  # the score's arrival re-plans the wait
    p = combined(probability, text_p, params.text_weight)
    if p >= params.confident_p:
        wait = params.confident_ms
    elif p >= params.unlikely_p:
        wait = params.unsure_ms
    else:
        wait = params.max_wait_ms
    return max(wait, params.unfinished_ms) if unfinished(text) else wait


@register("turn.smart")
class SmartTurn(TurnDetector):
    """Commits the user's turn after a silence chosen from Smart Turn's end-of-turn probability
    and the transcript's ending (see the module docs)."""

    inputs = {
        **TurnDetector.inputs,
        "audio": Port(AudioFrame, doc="the user's audio (the VAD's audio output), 16 kHz"),
    }
    Params = SmartTurnParams
    params: SmartTurnParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._audio: collections.deque[np.ndarray] = collections.deque()
        self._audio_s = 0.0
        self._received = 0  # samples received in all, at self._rate: the stream position
        self._rate = 16000
        self._heard = anyio.Event()  # the pause's transcript (stable or final) is in
        self._in_turn = False  # speech of an uncommitted turn has started
        self._generation = 0  # raised when speech resumes: older scores are stale
        self._scored_generation = -1  # the latest generation a score was started for
        self._probability: float | None = None
        self._text_scores: dict[str, float | None] = {}  # turn text -> text model's p (None: due)
        self._judging = 0  # text judgments under way
        self._computing_score = False  # Smart Turn is computing a score now
        self._turn_scoring = Conversation.of(self.context).turn_scoring

    async def setup(self) -> None:
        from flowvoice.nodes.smart_turn_model import SmartTurnModel, SmartTurnModelNotFoundError

        path, threads = self.params.model or None, self.params.threads
        try:
            self._model = await self.context.resources.get(
                ("turn.smart", path, threads),
                lambda: SmartTurnModel.load(path, intra_op_threads=threads),
                label="Smart Turn v3",
            )
        except SmartTurnModelNotFoundError as exc:
            raise NodeSetupError(str(exc)) from None
        self._text_model = None
        if self.params.uses_text:
            from flowvoice.nodes.text_turn_model import TextTurnModel

            name = self.params.text_model
            try:
                self._text_model = await self.context.resources.get(
                    ("turn.smart text", name),
                    lambda: TextTurnModel.load(name),
                    label=f"text end-of-turn model ({name})",
                )
            except NodeSetupError as exc:
                raise NodeSetupError(f"text_model: {exc}") from None

    def max_wait_ms(self) -> int:
        return self.params.max_wait_ms

    def wait_ms(self, text: str) -> int:
        text_p = None
        if self._text_model is not None and self._turn_text():
            text_p = self._text_scores.get(self._turn_text())
            if text_p is None:
                return self.params.max_wait_ms  # the text score's arrival re-plans the wait
        return hold_ms(self._probability, text, self.params, text_p)

    def ready_to_speculate(self, text: str) -> bool:
        """Once the text model has judged ``text``, unless Smart Turn is computing then;
        without the text model, once the pause is scored (module docstring)."""
        if self._text_model is None:
            return self._probability is not None
        # Smart Turn computing now finishes first: a prompt started beside it would be computed
        # on one thread throughout (one llama.cpp call), slower than on all of them after it.
        return self._text_scores.get(text) is not None and not self._computing_score

    def _turn_text(self) -> str:
        return " ".join(self._texts)

    async def process(self, port: str, frame: Frame) -> None:
        if isinstance(frame, AudioFrame):
            self._keep(frame)
            return
        if isinstance(frame, VADEvent):
            await self._vad_event(frame)
        elif isinstance(frame, Transcript) and (frame.final or frame.stable):
            self._heard.set()
        await super().process(port, frame)
        if self._text_model is None:
            return
        texts = [self._turn_text()]
        if current := self._speech_to_judge(frame):
            texts.append(" ".join([*self._texts, current]))
        for text in texts:
            if text and text not in self._text_scores:
                self._text_scores[text] = None
                self.start_soon(self._score_text, text)

    def _speech_to_judge(self, frame: Frame) -> str | None:
        """The words of the speech under way to judge besides the finals: the pause's
        transcript (the final if the speech ends there), else a partial while the user speaks
        and no judgment is under way (module docs)."""
        if self._paused and self._stable:
            return self._stable
        speaking = self._speaking and not self._judging
        if speaking and isinstance(frame, Transcript) and not frame.final:
            return frame.text.strip() or None
        return None

    async def _score_text(self, text: str) -> None:
        """Have the text model judge the turn's transcript ``text``."""
        assert self._text_model is not None
        self._judging += 1
        try:
            p = await self._text_model.judge(text)
        finally:
            self._judging -= 1
        if text not in self._text_scores:
            return  # committed or cleared meanwhile
        self._text_scores[text] = p
        self.context.publish("turn_text_score", turn=self.context.turn, probability=round(p, 3))
        self._changed.set()

    async def _vad_event(self, event: VADEvent) -> None:
        if event.kind in ("start", "resume"):
            self._generation += 1
            self._probability = None
            self._heard = anyio.Event()
            if event.kind == "start" and not self._in_turn:
                self._in_turn = True
                self._trim(PREROLL_S)
        elif event.kind in ("pause", "end") and self._scored_generation != self._generation:
            self._score_soon(event)

    def _keep(self, frame: AudioFrame) -> None:
        self._rate = frame.sample_rate
        self._received += len(frame.samples)
        self._audio.append(frame.samples)
        self._audio_s += frame.duration_s
        self._trim(WINDOW_S if self._in_turn else PREROLL_S)

    def _trim(self, keep_s: float) -> None:
        while self._audio and self._audio_s - len(self._audio[0]) / self._rate >= keep_s:
            self._audio_s -= len(self._audio.popleft()) / self._rate

    def _score_soon(self, event: VADEvent) -> None:
        self._scored_generation = self._generation
        self.start_soon(self._score_pause, self._generation, event)

    async def _score_pause(self, generation: int, end: VADEvent) -> None:
        """Score the pause, marked as under way for the conversation until the score is in (a
        reply speculated on the text's score meanwhile leaves a core to it), and score it once
        more at ``rescore_ms`` when the end looks unlikely."""
        with self._turn_scoring.scoring():
            p = await self._score(generation, end, self.params.score_after_ms)
        text_p = self._text_scores.get(self._turn_text())
        if p is not None and combined(p, text_p, self.params.text_weight) < self.params.unlikely_p:
            await self._score(generation, end, self.params.rescore_ms)

    async def _score(self, generation: int, end: VADEvent, after_ms: int) -> float | None:
        """Score the turn's audio up to ``after_ms`` of silence, unless the user spoke on: once
        that much silence has passed and the pause's transcript is in (or
        ``TRANSCRIPT_WAIT_S`` later). Returns the probability (None: the pause is over)."""
        due = end.t_ns / 1e9 + after_ms / 1000
        await anyio.sleep(max(0.0, due - anyio.current_time()))
        with anyio.move_on_after(max(0.0, due + TRANSCRIPT_WAIT_S - anyio.current_time())):
            await self._heard.wait()
        if generation != self._generation or not self._audio:
            return None
        audio = self._audio_until(end.stream_s + after_ms / 1000)
        self._computing_score = True
        try:
            p = await anyio.to_thread.run_sync(self._model.probability, audio, self._rate)
        finally:
            self._computing_score = False
        if generation != self._generation:
            return None  # the user spoke on: this pause is over
        self._probability = p
        self.context.publish("turn_score", turn=self.context.turn, probability=round(p, 3))
        self._changed.set()
        return p

    def _audio_until(self, stream_s: float) -> np.ndarray:
        """The kept audio up to ``stream_s`` into the stream (all of it if that is later)."""
        audio = np.concatenate(self._audio)
        cut = round(stream_s * self._rate) - (self._received - len(audio))
        return audio[:cut] if 0 < cut < len(audio) else audio

    async def _commit(self) -> None:
        await super()._commit()
        self._in_turn = False
        self._probability = None
        self._text_scores.clear()
