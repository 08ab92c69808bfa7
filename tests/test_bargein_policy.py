"""Barge-in policy in the turn node: backchannels, interrupt words, echo strictness.

The assistant's reply is simulated in the playback ledger (seconds of audio sent), so these
run without models; tests/test_bargein.py runs the same behaviour with real speech.
"""

from __future__ import annotations

import time

import pytest
from harness import run_node
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvoice.conversation import Conversation
from flowvoice.conversation.bargein import DEFAULT_BACKCHANNELS, Phrases, words_of
from flowvoice.frames import Transcript, VADEvent

pytestmark = pytest.mark.anyio

PARAMS = {"min_wait_ms": 200, "barge_in_strict_s": 0.0}


def assistant_speaking(seconds: float = 30.0, heard_s: float = 5.0):
    """A step: the assistant's reply of the current turn has ``seconds`` of audio out and
    the listener has heard ``heard_s`` of it."""

    async def step(context) -> None:
        playback = Conversation.of(context).playback
        playback.begin_sentence(context.turn, "A long story about the sea and the ships.")
        playback.add_audio(context.turn, seconds)
        playback.sent(context.turn, seconds)
        playback.played(context.turn, heard_s)

    return step


def speech(text: str, partial_after_s: float | None = None, speech_s: float = 0.6):
    """Steps of speech during the reply: start, an optional partial, end, then its final."""
    yield "vad", VADEvent(kind="start")
    if partial_after_s is not None:
        yield partial_after_s
        yield "transcript", Transcript(text=text)
        yield max(0.0, speech_s - partial_after_s)
    else:
        yield speech_s
    yield "vad", VADEvent(kind="end")
    yield 0.05
    yield "transcript", Transcript(text=text, final=True)


def voice_events(result) -> list[str]:
    kinds = ("voice_paused", "voice_resumed", "barge_in")
    return [e["type"] for e in result.events if e["type"] in kinds]


@pytest.mark.parametrize(
    "said", ["Yeah.", "Mm-hmm.", "Okay.", "Uh-huh, I see.", "Right, right.", "Mm-h-n.", "MMMM"]
)
async def test_a_backchannel_neither_interrupts_nor_becomes_a_turn(said):
    script = [assistant_speaking(), *speech(said, partial_after_s=0.3), 1.0]
    result = await run_node("turn.dynamic", PARAMS, script)
    assert result.frames("user_turn") == []
    assert voice_events(result) == ["voice_paused", "voice_resumed"]
    assert result.session.turn == 0, "the reply's turn goes on"


async def test_a_cough_with_no_words_resumes_the_voice():
    script = [assistant_speaking(), *speech("", speech_s=0.3), 1.0]
    result = await run_node("turn.dynamic", PARAMS, script)
    assert result.frames("user_turn") == []
    assert voice_events(result) == ["voice_paused", "voice_resumed"]


async def test_a_real_question_interrupts_and_becomes_the_turn():
    script = [assistant_speaking(), *speech("What is the weather in Paris?", 0.5, 1.2), 1.0]
    result = await run_node("turn.dynamic", PARAMS, script)
    # the new turn resumes the (now silent) voice, then the barge-in is announced
    assert voice_events(result) == ["voice_paused", "voice_resumed", "barge_in"]
    (turn,) = result.frames("user_turn")
    assert turn.text == "What is the weather in Paris?"
    barge_in = result.events_of("barge_in")[0]
    assert barge_in["turn"] == 0 and turn.turn > 1, "barge-in raised the turn, then the commit"


async def test_an_interrupt_word_interrupts_at_once_even_when_short():
    script = [assistant_speaking(), *speech("Stop.", speech_s=0.25), 1.0]
    result = await run_node("turn.dynamic", PARAMS, script)
    assert "barge_in" in voice_events(result)
    assert [t.text for t in result.frames("user_turn")] == ["Stop."]


async def test_stop_then_a_question_interrupts_on_the_partial():
    steps = speech("stop, what is two plus two", partial_after_s=0.2, speech_s=1.6)
    result = await run_node("turn.dynamic", PARAMS, [assistant_speaking(), *steps, 1.0])
    barge_in = result.events_of("barge_in")[0]
    end = next(r for r in result.received.get("user_turn", []))
    assert barge_in["decided_ns"] < end.t_ns
    assert [t.text for t in result.frames("user_turn")] == ["stop, what is two plus two"]


async def test_one_content_word_is_not_enough_while_echo_cancellers_converge():
    params = {**PARAMS, "barge_in_strict_s": 2.0}
    early = [assistant_speaking(heard_s=0.5), *speech("Paris.", 0.3), 1.0]
    result = await run_node("turn.dynamic", params, early)
    assert "barge_in" not in voice_events(result) and result.frames("user_turn") == []
    later = [assistant_speaking(heard_s=4.0), *speech("Paris.", 0.3), 1.0]
    result = await run_node("turn.dynamic", params, later)
    assert "barge_in" in voice_events(result)


async def test_with_no_reply_playing_speech_is_an_ordinary_turn():
    result = await run_node("turn.dynamic", PARAMS, [*speech("Yeah.", speech_s=0.4), 1.0])
    assert [t.text for t in result.frames("user_turn")] == ["Yeah."]
    assert voice_events(result) == []


def speech_after_a_short_reply(reply: str, said: str, began_s: float, arrives_s: float):
    """Steps: a 0.2 s reply ``reply`` is sent (no playback report: played in real time), then
    speech ``said`` that began ``began_s`` after the send, its VAD start event arriving
    ``arrives_s`` after it (lazy: stamped relative to the send, however late the script runs)."""
    sent_ns: list[int] = []

    async def reply_sent(context) -> None:
        playback = Conversation.of(context).playback
        playback.begin_sentence(context.turn, reply)
        playback.add_audio(context.turn, 0.2)
        playback.sent(context.turn, 0.2)
        sent_ns.append(time.monotonic_ns())

    yield reply_sent
    yield arrives_s
    yield "vad", VADEvent(kind="start", t_ns=sent_ns[0] + int(began_s * 1e9))
    yield 0.4
    yield "vad", VADEvent(kind="end")
    yield 0.05
    yield "transcript", Transcript(text=said, final=True)
    yield 1.0


async def test_a_backchannel_begun_as_the_reply_ended_is_checked_as_over_it():
    """The VAD's start event comes ~100 ms after the speech began; a short reply may end in
    between. Speech that began while the reply played is still checked as a barge-in."""
    steps = speech_after_a_short_reply("Yes.", "I see.", began_s=0.1, arrives_s=0.3)
    result = await run_node("turn.dynamic", PARAMS, steps)
    assert result.frames("user_turn") == [], "a backchannel over the reply is no turn"
    assert voice_events(result) == ["voice_paused", "voice_resumed"]


@pytest.mark.parametrize(
    ("reply", "after_end_s", "a_turn"),
    [
        ("It is sunny.", 0.15, False),  # the listener may still hear its end: "yeah" acknowledges
        ("Do you like it?", 0.15, True),  # "yeah" answers the question
        ("It is sunny.", 0.6, True),  # well after the reply: the user speaks
    ],
)
async def test_yeah_just_after_a_reply_is_a_turn_only_after_a_question_or_a_while(
    reply, after_end_s, a_turn
):
    began_s = 0.2 + after_end_s
    steps = speech_after_a_short_reply(reply, "Yeah.", began_s, arrives_s=began_s + 0.1)
    result = await run_node("turn.dynamic", PARAMS, steps)
    assert [t.text for t in result.frames("user_turn")] == (["Yeah."] if a_turn else [])


def test_phrases_match_multi_word_backchannels_and_count_the_rest():
    backchannels = Phrases(DEFAULT_BACKCHANNELS)
    assert backchannels.other_words(words_of("Mm-hmm, I see. Got it!")) == 0
    assert backchannels.other_words(words_of("I want to see it all")) == 6
    assert backchannels.other_words(words_of("yeah but what about Rome")) == 4


def short_sound_heard_as(text: str, sound_s: float):
    """A sound of ``sound_s`` during the reply that Whisper hears as ``text`` at its pause; the
    VAD stamps the pause and the end at the sound's end, as vad.silero does."""
    start = VADEvent(kind="start")
    yield "vad", start
    yield sound_s
    # stamped where the sound ended, however late a busy machine wakes the script
    pause = VADEvent(kind="pause", t_ns=start.t_ns + int(sound_s * 1e9))
    yield "vad", pause
    yield 0.05
    yield "transcript", Transcript(text=text, stable=True)
    yield 0.2
    yield "vad", VADEvent(kind="end", t_ns=pause.t_ns)
    yield 0.05
    yield "transcript", Transcript(text=text, final=True)


async def test_a_short_sound_heard_as_words_is_no_barge_in():
    script = [assistant_speaking(), *short_sound_heard_as("That's it.", 0.25), 1.0]
    result = await run_node("turn.dynamic", PARAMS, script)
    assert voice_events(result) == ["voice_paused", "voice_resumed"]
    assert result.frames("user_turn") == []


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_transcript_counts_without_error(text):
    words = words_of(text)
    backchannels = Phrases(DEFAULT_BACKCHANNELS)
    assert 0 <= backchannels.other_words(words) <= len(words)
    assert backchannels.other_words(words + ["mm", "hm"]) == backchannels.other_words(words)
