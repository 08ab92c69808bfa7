"""First audio first: the LLM pauses while the TTS synthesizes the reply's first sentence."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
from harness import Received, run_graph, run_node, wait_for_mark

from flowvoice.conversation import Conversation
from flowvoice.conversation.first_audio import FirstAudio, FirstSentence
from flowvoice.frames import UserTurn
from flowvoice.nodes import llm
from flowvoice.runtime.session import NodeContext


def test_wait_returns_at_once_with_no_first_sentence_under_way():
    assert FirstAudio().wait(0.0)


def test_wait_lasts_until_every_first_sentence_is_heard():
    first_audio = FirstAudio()
    a, b = first_audio.synthesizing(), first_audio.synthesizing()
    assert first_audio.pending and not first_audio.wait(0.01)
    a.heard()
    a.heard()  # a second call does nothing: b still holds the LLM
    assert not first_audio.wait(0.01)
    threading.Timer(0.05, b.heard).start()
    start = time.monotonic()
    assert first_audio.wait(10.0)
    assert time.monotonic() - start < 5.0
    assert not first_audio.pending


def test_wait_gives_up_after_its_timeout():
    first_audio = FirstAudio()
    first_audio.synthesizing()
    start = time.monotonic()
    assert not first_audio.wait(0.05)
    assert time.monotonic() - start >= 0.04


def test_hand_over_returns_once_the_tts_takes_up_a_first_sentence(monkeypatch):
    monkeypatch.setattr("flowvoice.conversation.first_audio.HANDOFF_S", 10.0)
    first_audio = FirstAudio()
    threading.Timer(0.05, first_audio.synthesizing).start()
    start = time.monotonic()
    assert first_audio.handed_over()
    assert time.monotonic() - start < 5.0  # at the synthesis, not at the 10 s bound
    assert first_audio.handed_over()  # still under way


def test_hand_over_gives_up_soon_when_no_tts_takes_it_up():
    first_audio = FirstAudio()
    first_audio.synthesizing().heard()
    start = time.monotonic()
    assert not first_audio.handed_over()
    assert time.monotonic() - start < 1.0


@pytest.mark.anyio
async def test_the_llm_pauses_while_the_first_sentence_is_synthesized(monkeypatch):
    """gemma3-270m answers these in two sentences. Between the second reply's first sentence
    reaching Piper and its first audio the LLM adds no token, as it waits for Piper to take
    the sentence up first (bound 3 for a busy machine; without the pause it went on, slowed
    down, ~5-10 tokens in that time on two cores; the first reply warms Piper up: its first
    long sentence in a process is slow anyway). The pause's budget is raised so that a busy
    machine, where Piper may need more than the shipped 1 s, checks the pause and not the
    budget (tested below)."""
    monkeypatch.setattr("flowvoice.nodes.llm.FIRST_AUDIO_WAIT_S", 10.0)
    nodes = {
        "llm": ("llm.llamacpp", {}),
        "sentences": ("text.sentences", {}),
        "tts": ("tts.piper", {}),
    }
    edges = ["llm.text -> sentences.text", "sentences.sentence -> tts.text"]

    async def next_turn(context: NodeContext) -> None:
        await context.new_turn("next question")

    script = [
        ("llm.prompt", UserTurn(text="Tell me about the moon.")),
        6.0,
        next_turn,
        ("llm.prompt", UserTurn(turn=1, text="Tell me about the ocean.")),
        6.0,
    ]
    result = await run_graph(nodes, edges, script, ["llm.prompt"], timeout=90)

    def of_second_turn(output: str) -> list[Received]:
        return [r for r in result.received[output] if r.frame.turn == 1]

    sentences = [r for r in of_second_turn("sentences.sentence") if r.frame.text.strip()]
    assert len(sentences) >= 2, [r.frame.text for r in sentences]
    first_sentence_at = sentences[0].t_ns
    first_audio_at = next(r.t_ns for r in of_second_turn("tts.audio") if len(r.frame.samples))
    during = [
        r.frame.text
        for r in of_second_turn("llm.text")
        if first_sentence_at < r.t_ns < first_audio_at and r.frame.text
    ]
    print(f"LLM pieces while the first sentence was synthesized: {during}")
    assert len(during) <= 3, during
    assert not result.session.nodes["tts"].conversation.first_audio.pending


@pytest.mark.anyio
async def test_a_first_sentence_that_never_sounds_delays_the_reply_once_not_per_token(
    monkeypatch,
):
    """The LLM's pauses add up to its budget (1 s), not 1 s after every token: the time spent
    waiting is counted, not the reply's, which a busy machine stretches."""
    paused_s: list[float] = []
    wait = FirstAudio.wait

    def timed_wait(self: FirstAudio, *args: Any) -> bool:
        start = time.monotonic()
        try:
            return wait(self, *args)
        finally:
            paused_s.append(time.monotonic() - start)

    monkeypatch.setattr(FirstAudio, "wait", timed_wait)

    async def stuck_synthesis(context: NodeContext) -> None:
        Conversation.of(context).first_audio.synthesizing()  # never heard

    script = [stuck_synthesis, ("prompt", UserTurn(text="Tell me about the moon.")), 0.5]
    result = await run_node("llm.llamacpp", {}, script, timeout=90)
    pieces = [r for r in result.received["text"] if r.frame.text]
    assert len(pieces) > 10
    print(f"{len(pieces)} pieces, {len(paused_s)} waits, {sum(paused_s):.2f} s paused")
    assert len(paused_s) >= len(pieces) - 1  # it asked after each piece
    assert sum(paused_s) < 1.0 + 2.0  # one budget; per token it would be ~30 s


def test_wait_ends_soon_after_its_reply_is_cancelled():
    first_audio, cancelled = FirstAudio(), threading.Event()
    first_audio.synthesizing()
    threading.Timer(0.05, cancelled.set).start()
    start = time.monotonic()
    assert not first_audio.wait(30.0, cancelled)
    assert time.monotonic() - start < 5.0


@pytest.mark.anyio
async def test_an_interrupt_stops_a_paused_reply_at_once(monkeypatch):
    """An interrupt during the pause ends the reply then, not when the pause would end: the
    next turn's reply starts at once."""
    monkeypatch.setattr(llm, "FIRST_AUDIO_WAIT_S", 30.0)
    stuck: list[FirstSentence] = []
    interrupted_at: list[int] = []

    async def stuck_synthesis(context: NodeContext) -> None:
        stuck.append(Conversation.of(context).first_audio.synthesizing())

    async def interrupt_after_first_token(context: NodeContext) -> None:
        await wait_for_mark(context, 0, "first_token")
        await anyio.sleep(0.2)
        interrupted_at.append(time.monotonic_ns())
        await context.new_turn("barge-in")

    async def release_once_answered(context: NodeContext) -> None:
        await wait_for_mark(context, 1, "first_token")
        stuck[0].heard()

    script = [
        stuck_synthesis,
        ("prompt", UserTurn(text="Tell me about the moon.")),
        interrupt_after_first_token,
        ("prompt", UserTurn(turn=1, text="What color is the sky?")),
        release_once_answered,
    ]
    result = await run_node("llm.llamacpp", {}, script, timeout=60)
    answer = next(r for r in result.received["text"] if r.frame.turn == 1 and r.frame.text)
    took_s = (answer.t_ns - interrupted_at[0]) / 1e9
    print(f"the next reply began {took_s:.2f} s after the interrupt")
    assert took_s < 5.0
