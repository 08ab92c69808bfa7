"""A reply speculated on the text's score leaves a core to the audio score (real models)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from itertools import chain

import numpy as np
import pytest
from harness import run_node, wait_for_mark

from flowvoice.conversation import Conversation
from flowvoice.conversation.turn_scoring import TurnScoring
from flowvoice.frames import AudioFrame, Transcript, UserTurn, VADEvent
from flowvoice.nodes import llm
from flowvoice.runtime.session import NodeContext

pytestmark = pytest.mark.anyio


def test_scoring_is_under_way_while_any_pause_is_being_scored():
    scoring = TurnScoring()
    with scoring.scoring():
        with scoring.scoring():
            assert scoring.under_way
        assert scoring.under_way
    assert not scoring.under_way
    with pytest.raises(RuntimeError), scoring.scoring():
        raise RuntimeError("a failed score")
    assert not scoring.under_way


QUESTION = "What is the capital of France?"


def silence(seconds: float) -> AudioFrame:
    return AudioFrame(samples=np.zeros(int(16000 * seconds), np.int16), sample_rate=16000)


def paused(text: str) -> Iterator:
    """A second of speech (silent audio is enough for the scores' timing) that pauses, and
    the STT's transcript of the pause; frames made when sent (a pause is scored from its
    time)."""
    yield "audio", silence(1.0)
    yield "vad", VADEvent(kind="start")
    yield "audio", silence(1.0)
    yield "vad", VADEvent(kind="pause", stream_s=2.0)
    yield 0.1  # the STT transcribes the pause
    yield "transcript", Transcript(text=text, stable=True)


def ended(text: str) -> Iterator:
    """The VAD ends the paused speech; its final transcript."""
    yield "vad", VADEvent(kind="end", stream_s=2.0)
    yield "transcript", Transcript(text=text, final=True)


async def test_turn_smart_speculates_once_the_text_is_judged_while_the_audio_is_scored():
    # Smart Turn scores the pause 2 s into the silence; the text model judges the pause's
    # transcript at once, and the reply starts then, marked as computing beside the score.
    params = {"speculate": True, "score_after_ms": 2000, "rescore_ms": 2000, "max_wait_ms": 2500}
    seen: list[tuple[int, bool]] = []

    async def look(context: NodeContext) -> None:
        seen.append((time.monotonic_ns(), Conversation.of(context).turn_scoring.under_way))

    script = chain(
        paused(QUESTION),
        [1.5, look],  # the text model's judgment (tens of ms), with room for a busy machine
        ended(QUESTION),
        [3.0, look],
    )
    result = await run_node("turn.smart", params, script, timeout=60)
    (speculated,) = result.received["user_turn"]  # released at the commit, not sent again
    assert speculated.frame.text == QUESTION
    (before_score, scoring), (_, scoring_at_end) = seen
    assert speculated.t_ns < before_score, "the reply started before the audio was scored"
    assert scoring and not scoring_at_end
    assert len(result.events_of("turn_score")) == 1
    assert [e["text"] for e in result.events_of("user_turn")] == [speculated.frame.text]


async def test_turn_smart_waits_for_a_score_being_computed_before_speculating(monkeypatch):
    # Smart Turn computing (slowed to 2 s here) when the text is judged finishes first: a
    # prompt started beside it would be computed on one thread throughout.
    from flowvoice.nodes.smart_turn_model import SmartTurnModel

    scored_at: list[int] = []
    probability = SmartTurnModel.probability

    def slow_probability(self: SmartTurnModel, *args: object) -> float:
        time.sleep(2.0)
        scored_at.append(time.monotonic_ns())
        return probability(self, *args)

    monkeypatch.setattr(SmartTurnModel, "probability", slow_probability)
    params = {"speculate": True, "score_after_ms": 0, "max_wait_ms": 2500}
    script = chain(paused(QUESTION), ended(QUESTION), [6.0])
    result = await run_node("turn.smart", params, script, timeout=60)
    (speculated,) = result.received["user_turn"]
    assert result.events_of("turn_text_score") and scored_at
    assert speculated.t_ns > scored_at[0], "the reply started while Smart Turn computed"


async def test_a_reply_computes_on_one_thread_until_the_pause_is_scored(monkeypatch):
    switched: list[tuple[int, int]] = []  # (thread count, when)
    set_threads = llm._set_threads

    def spy(model: llm._Model, threads: int) -> bool:
        switched.append((threads, time.monotonic_ns()))
        return set_threads(model, threads)

    monkeypatch.setattr(llm, "_set_threads", spy)
    scoring = ExitStack()

    async def pause_being_scored(context: NodeContext) -> None:
        scoring.enter_context(Conversation.of(context).turn_scoring.scoring())

    async def scored_at_the_first_token(context: NodeContext) -> None:
        await wait_for_mark(context, 0, "first_token")
        scoring.close()

    script = [
        pause_being_scored,
        ("prompt", UserTurn(text="Tell me about the moon.")),  # a reply of two sentences
        scored_at_the_first_token,
        ("prompt", UserTurn(text="What color is the sky?")),  # nothing scored: all threads
    ]
    result = await run_node("llm.llamacpp", {"threads": 2}, script, timeout=90)
    texts = result.received["text"]
    first_end = next(i for i, r in enumerate(texts) if r.frame.final)
    first_reply = [r for r in texts[:first_end] if r.frame.text]
    assert len(first_reply) > 10 and any(r.frame.text for r in texts[first_end + 1 :])
    assert [threads for threads, _ in switched] == [1, 2], switched
    # back on both threads while the first reply was still being generated
    assert switched[1][1] < first_reply[-1].t_ns
