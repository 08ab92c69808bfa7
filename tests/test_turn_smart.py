"""turn.smart: Smart Turn's audio score and the transcript decide the hold, with real speech."""

from __future__ import annotations

import numpy as np
import pytest
from harness import audio_steps, run_graph, run_node
from speech_audio import conversation, wer

from flowvoice.frames import AudioFrame, Transcript, VADEvent
from flowvoice.runtime.session import SessionError

pytestmark = pytest.mark.anyio

EDGES = [
    "vad.audio -> stt.audio",
    "vad.audio -> turn.audio",
    "vad.events -> stt.vad",
    "vad.events -> turn.vad",
    "stt.transcript -> turn.transcript",
]


async def converse(texts: list[str], gaps: list[float], turn_params: dict | None = None):
    samples, _ = conversation(texts, gap_s=gaps, lead_s=0.3, tail_s=3.5)
    nodes = {
        "vad": ("vad.silero", {"min_silence_ms": 200}),  # as in the default graph
        "stt": ("stt.whisper", {}),
        "turn": ("turn.smart", turn_params or {}),
    }
    steps = audio_steps("vad.audio", samples, 16000, realtime=True)
    return await run_graph(nodes, EDGES, steps, ["vad.audio"], timeout=90)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Can you tell me about the", "weather in Paris tomorrow?"),
        ("My phone number is five five five,", "one two three four."),
    ],
)
async def test_a_600_ms_pause_mid_sentence_does_not_commit(first, second):
    result = await converse([first, second], [0.65])
    turns = result.frames("turn.user_turn")
    assert len(turns) == 1, [t.text for t in turns]
    # one turn holding both halves (tiny.en writes the digits its own way)
    assert len(turns[0].text.replace(",", " ").split()) >= len(first.split()) + 2, turns[0].text
    assert result.events_of("turn_score"), "the pause was scored"


async def test_a_finished_question_commits_and_is_scored():
    result = await converse(["What is the capital of France?"], [])
    (turn,) = result.frames("turn.user_turn")
    assert wer("What is the capital of France?", turn.text) <= 0.2
    (score, *_) = result.events_of("turn_score")
    assert 0.0 <= score["probability"] <= 1.0
    latency = result.session.tracer.turns[turn.turn].latencies_ms()["turn_committed"]
    # the 2.5 s cap plus transcription: generous, so a loaded machine does not fail it
    assert latency <= 15000, latency


def silence(seconds: float) -> AudioFrame:
    return AudioFrame(samples=np.zeros(int(16000 * seconds), np.int16), sample_rate=16000)


async def test_a_score_for_a_pause_the_user_spoke_through_is_ignored():
    # The pause would be scored 1 s in; speech resumes at 0.1 s (however late a busy machine
    # wakes the script), so no score of it may be used.
    params = {"score_after_ms": 1000, "rescore_ms": 1000, "max_wait_ms": 1500}
    script = [
        ("audio", silence(1.0)),
        ("vad", VADEvent(kind="start")),
        ("audio", silence(1.0)),
        ("vad", VADEvent(kind="pause")),
        0.1,
        ("vad", VADEvent(kind="resume")),
        0.5,
        ("vad", VADEvent(kind="end")),
        ("transcript", Transcript(text="Tell me about Paris.", final=True)),
        2.5,
    ]
    result = await run_node("turn.smart", params, script)
    scores = result.events_of("turn_score")
    assert len(scores) == 1, "only the final pause was scored"
    (turn,) = result.frames("user_turn")
    assert turn.text == "Tell me about Paris."


async def test_a_missing_model_file_fails_with_a_clear_message(tmp_path):
    missing = tmp_path / "smart-turn.onnx"
    with pytest.raises(SessionError) as failed:
        await run_node("turn.smart", {"model": str(missing)}, [])
    message = str(failed.value)
    assert str(missing) in message and "turn.smart" in message


def test_the_text_score_moves_the_audio_score_in_log_odds():
    from flowvoice.nodes.turn_smart import SmartTurnParams, combined, hold_ms

    params = SmartTurnParams()
    assert (params.confident_p, params.unlikely_p) == (0.6, 0.005)
    assert SmartTurnParams(text_model="").confident_p == 0.9  # calibrated for audio alone
    assert combined(0.5, 0.8, 3.0) > 0.9 and combined(0.95, 0.03, 3.0) < 0.01
    assert combined(0.42, None, 3.0) == combined(0.42, 0.9, 0.0) == 0.42
    # Smart Turn unsure, words that end the request: a quick commit; sure audio on words
    # that go on: the long hold.
    assert hold_ms(0.5, "What is the capital of France?", params, 0.8) == params.confident_ms
    assert hold_ms(0.95, "So I was thinking", params, 0.03) == params.max_wait_ms


async def test_the_turn_waits_for_the_text_models_judgement():
    script = [
        ("audio", silence(1.0)),
        ("vad", VADEvent(kind="start")),
        ("audio", silence(1.0)),
        ("vad", VADEvent(kind="end")),
        ("transcript", Transcript(text="What is the capital of France?", final=True)),
        5.0,  # past the 2.5 s cap, with room for a busy machine
    ]
    result = await run_node("turn.smart", {}, script)
    (judged,) = result.events_of("turn_text_score")
    assert judged["probability"] > 0.3
    (turn,) = result.frames("user_turn")
    assert turn.text == "What is the capital of France?"
    alone = await run_node("turn.smart", {"text_model": ""}, script)
    assert not alone.events_of("turn_text_score") and len(alone.frames("user_turn")) == 1


async def test_a_missing_text_model_fails_with_a_clear_message(tmp_path):
    missing = tmp_path / "judge.gguf"
    with pytest.raises(SessionError) as failed:
        await run_node("turn.smart", {"text_model": str(missing)}, [])
    message = str(failed.value)
    assert "text_model" in message and str(missing) in message


async def test_partial_transcripts_are_judged_while_the_user_speaks():
    # The text model reads the partials ahead of the pause, so that at the pause it computes
    # only the words after them (flowvoice.nodes.text_turn_model keeps what it has read).
    script = [
        ("vad", VADEvent(kind="start")),
        ("audio", silence(1.0)),
        ("transcript", Transcript(text="What is the capital")),
        3.0,  # room for a busy machine; the user is still speaking
    ]
    result = await run_node("turn.smart", {}, script)
    (judged,) = result.events_of("turn_text_score")
    assert judged["probability"] < 0.3  # "What is the capital" goes on
    assert not result.frames("user_turn")
