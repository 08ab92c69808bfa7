"""Barge-in and speculation with the real default graph (a scripted real-time microphone)."""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import pytest
from serving import speech_graph
from speech_audio import speak, wer, write_wav

from flowvoice.bench.turns_corpus import Voice
from flowvoice.bench.turns_corpus import speak as corpus_speak
from flowvoice.chat import ChatResult, replace_io, run_chat
from flowvoice.conversation import Conversation
from flowvoice.graph.spec import LoadedGraph

QUESTION = "What is the capital of France?"
INTERRUPTION = "Stop. What is the capital of Germany?"


def wav(tmp_path: Path, name: str, samples: np.ndarray) -> str:
    path = tmp_path / f"{name}.wav"
    write_wav(path, samples, 16000)
    return str(path)


def scripted(graph: LoadedGraph, script: list[dict], tail_s: float = 6.0) -> LoadedGraph:
    return replace_io(
        graph,
        ("test.scripted_mic", {"script": script, "tail_s": tail_s}),
        ("audio.file_sink", {"lead_ms": 250}),
    )


def converse(graph: LoadedGraph) -> ChatResult:
    async def bounded() -> ChatResult:
        with anyio.fail_after(120):
            return await run_chat(graph)

    return anyio.run(bounded)


def events(result: ChatResult, kind: str) -> list[dict]:
    return [e for e in result.events if e["type"] == kind]


@pytest.fixture(scope="module")
def slow_voice_graph() -> LoadedGraph:
    """The default graph with a slower voice, so a reply lasts long enough to interrupt."""
    graph = speech_graph()
    tts = graph.nodes["tts"]
    tts.params = tts.node_type.Params.model_validate(
        {**tts.params.model_dump(), "length_scale": 1.6}
    )
    return graph


def test_barge_in_stops_the_reply_at_once_and_history_keeps_what_was_heard(
    tmp_path, slow_voice_graph
):
    script = [
        {"wav": wav(tmp_path, "q", speak(QUESTION))},
        {"wav": wav(tmp_path, "stop", speak(INTERRUPTION)), "assistant_s": 0.6},
    ]
    result = converse(scripted(slow_voice_graph, script))

    (barge_in,) = events(result, "barge_in")
    interrupted = barge_in["turn"]
    assert events(result, "interrupt"), "the sink told the listener to flush"
    last_sent = Conversation.of_session(result.session).playback.last_sent_at(interrupted)
    seen = [e for e in result.events if e["type"] not in ("assistant_text", "metrics")]
    assert last_sent is not None, f"the barge-in named turn {interrupted}, not the reply: {seen}"
    # No audio of the interrupted turn left after the decision: generous slack for a busy
    # machine (the reply would go on for seconds; bench bargein measures the stop latency).
    assert last_sent * 1e9 <= barge_in["decided_ns"] + 500e6
    played, complete = Conversation.of_session(result.session).playback.heard_text(interrupted)
    assert not complete

    # The next turn answers the interruption.
    users = [t for t in result.turns if t.turn > interrupted]
    assert users and wer(INTERRUPTION, users[-1].user) <= 0.3, users
    assert users[-1].assistant.strip()

    # The history keeps the cut reply as heard, marked interrupted.
    history = result.session.nodes["llm"].history.messages
    cut = next(m for m in history if m.role == "assistant" and m.interrupted)
    full = next(t for t in result.turns if t.turn == interrupted).assistant.strip()
    assert len(cut.content) < len(full)
    assert full.startswith(cut.content.rstrip(".,!? "))


def test_a_short_hum_during_the_reply_does_not_interrupt(tmp_path, slow_voice_graph):
    hum = speak("hmm")[: 16000 * 25 // 100]  # 250 ms: shorter than barge_in_min_speech_ms
    script = [
        {"wav": wav(tmp_path, "q", speak(QUESTION))},
        {"wav": wav(tmp_path, "hum", hum), "assistant_s": 0.5},
    ]
    result = converse(scripted(slow_voice_graph, script))
    assert not events(result, "barge_in")
    assert not events(result, "interrupt")
    (turn,) = result.turns
    entry = Conversation.of_session(result.session).playback
    assert entry.heard_text(turn.turn, now=float("inf"))[1], "the whole reply was played"
    assert not any(m.interrupted for m in result.session.nodes["llm"].history.messages)


def with_turn_params(graph: LoadedGraph, **params: object) -> LoadedGraph:
    turn = graph.nodes["turn"]
    turn.params = turn.node_type.Params.model_validate({**turn.params.model_dump(), **params})
    return graph


@pytest.mark.parametrize(
    "said, seed", [("yeah", None), ("mm hm", 0), ("mm hm mm hm", 6)], ids=["yeah", "hum", "hums"]
)
def test_a_backchannel_during_the_reply_neither_interrupts_nor_becomes_a_turn(
    tmp_path, slow_voice_graph, said, seed
):
    """One word beyond the backchannels would interrupt (no stricter start): Piper's hummed
    "mm hm" must be heard as one, not as a word ("Amen", "MMDHM"), and a longer hum, heard in
    a partial while it goes on, too ("Mm-h and Mm-h."). Piper's synthesis is random and about
    1 in 10 of its "mm hm" draws reads as words even so ("Mm-hmm, they chant."; flowvoice
    bench backchannels): each clip is one fixed draw (espeak-ng's "yeah" if no seed)."""
    joe = Voice("joe", "piper")
    samples = speak(said) if seed is None else corpus_speak(said, joe, seed=seed)
    script = [
        {"wav": wav(tmp_path, "q", speak(QUESTION))},
        {"wav": wav(tmp_path, "backchannel", samples), "assistant_s": 0.5},
    ]
    graph = with_turn_params(slow_voice_graph, barge_in_strict_s=0.0)
    result = converse(scripted(graph, script))
    heard = [e for e in result.events if e["type"] not in ("assistant_text", "metrics")]
    assert not events(result, "barge_in") and not events(result, "interrupt"), heard
    voice_states = [e["type"] for e in result.events if e["type"].startswith("voice_")]
    assert voice_states == ["voice_paused", "voice_resumed"], "paused, then resumed"
    (turn,) = result.turns
    playback = Conversation.of_session(result.session).playback
    assert playback.heard_text(turn.turn, now=float("inf"))[1], "the whole reply was played"
    history = result.session.nodes["llm"].history.messages
    assert [m.role for m in history] == ["user", "assistant"]


def test_stop_and_a_question_during_the_reply_interrupts_and_is_answered(
    tmp_path, slow_voice_graph
):
    said = "Stop, what is two plus two?"
    script = [
        {"wav": wav(tmp_path, "q", speak(QUESTION))},
        {"wav": wav(tmp_path, "stop", speak(said)), "assistant_s": 0.5},
    ]
    result = converse(scripted(slow_voice_graph, script))
    (barge_in,) = events(result, "barge_in")
    answers = [t for t in result.turns if t.turn > barge_in["turn"]]
    assert answers, result.turns
    assert wer(said.replace("two", "2"), answers[-1].user.replace("two", "2")) <= 0.3, answers
    assert answers[-1].assistant.strip()


def test_speculation_releases_the_matching_reply(tmp_path, monkeypatch):
    """The reply started at the pause is the one the user hears once the turn commits.

    How much sooner it comes is load-dependent: ``flowvoice bench bargein`` measures it."""
    question = wav(tmp_path, "q", speak("Tell me the capital of France"))
    script = [{"wav": question}, {"wav": question, "pause_s": 8.0}]
    released: list[int] = []
    commit = Conversation.commit

    def recording_commit(self: Conversation, turn: int) -> None:
        released.append(turn)
        commit(self, turn)

    monkeypatch.setattr(Conversation, "commit", recording_commit)
    graph = speech_graph()
    turn = graph.nodes["turn"]
    # one fixed wait, longer than transcription takes, whichever end-of-turn policy it is
    waits = (
        "min_wait_ms",
        "open_wait_ms",
        "confident_ms",
        "unsure_ms",
        "rescore_ms",
        "unfinished_ms",
    )
    fixed = {k: 1200 for k in (*waits, "max_wait_ms") if k in turn.node_type.Params.model_fields}
    turn.params = turn.node_type.Params.model_validate(
        {**turn.params.model_dump(), "speculate": True, **fixed}
    )
    result = converse(scripted(graph, script))
    assert len(result.turns) == 2
    answered = [t.turn for t in result.turns]
    # Each answered turn is a speculative one released by its commit, not a new turn.
    assert set(answered) <= set(released), (answered, released)
    for entry in result.turns:
        assert wer("Tell me the capital of France", entry.user) <= 0.3, entry
        assert entry.assistant.strip(), entry
        assert "first_audio_sent" in entry.latency_ms, entry
    sink = next(n for n in result.session.nodes.values() if n.type_name == "audio.file_sink")
    assert sorted(sink.turns) == answered, "the released replies, and only them, were played"
    history = result.session.nodes["llm"].history.messages
    assert [m.role for m in history] == ["user", "assistant"] * 2


def test_a_changed_final_text_never_plays_the_speculated_reply(tmp_path):
    graph = speech_graph()
    turn = graph.nodes["turn"]
    turn.params = turn.node_type.Params.model_validate(
        {
            **turn.params.model_dump(),
            "speculate": True,
            "max_wait_ms": 2500,
            # the pause after "the capital of" waits out whatever the policy
            **({"unfinished_ms": 2500} if "unfinished_ms" in turn.params.model_fields else {}),
        }
    )
    part1 = wav(tmp_path, "a", speak("I would like to know the capital of"))
    part2 = wav(tmp_path, "b", speak("Germany please"))
    result = converse(scripted(graph, [{"wav": part1}, {"wav": part2, "pause_s": 1.2}]))
    (answered,) = result.turns
    assert "germany" in answered.user.lower()
    sink = next(n for n in result.session.nodes.values() if n.type_name == "audio.file_sink")
    assert list(sink.turns) == [answered.turn], "only the committed turn's audio was played"
    history = result.session.nodes["llm"].history.messages
    assert [m.role for m in history] == ["user", "assistant"]
    assert "germany" in history[0].content.lower()
