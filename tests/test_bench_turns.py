"""``flowvoice bench turns``: the corpus's shape and the metrics on synthetic event lists.

No timing comparisons and no full run: the metric functions get hand-made timelines.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from flowvoice.bench import turns
from flowvoice.bench.turns import (
    Events,
    Policy,
    Spoken,
    barged_in,
    commit_after,
    cut_off,
    decided_after,
    decided_early,
    default_policies,
    outcomes,
    parse_policy,
    summarize,
    with_policy,
)
from flowvoice.bench.turns_corpus import (
    CATEGORIES,
    RATE,
    VOICES,
    build_corpus,
    noise,
    speak,
    subsample,
    trim,
)
from flowvoice.graph.spec import load_graph

S = 1_000_000_000  # ns


def test_corpus_has_60_utterances_over_every_category_and_voice():
    corpus = build_corpus()
    utterances = corpus.utterances
    assert len(utterances) >= 60
    by_category = Counter(u.category for u in utterances)
    assert set(by_category) == set(CATEGORIES)
    assert by_category["a"] >= 20 and by_category["c"] >= 8 and by_category["d"] >= 6
    assert {u.voice.engine for u in utterances} == {"piper", "espeak"}
    assert len({u.voice.name for u in utterances}) == len(VOICES) >= 4
    for category in "abcd":  # every category is spoken by several voices
        assert len({u.voice.name for u in utterances if u.category == category}) >= 4
    assert len({u.id for u in utterances}) == len(utterances)
    holds = [u for u in utterances if u.category == "a"]
    assert {u.kind for u in holds} == {"continuation", "filler", "comma", "number"}
    assert all(len(u.parts) == 2 and 200 <= u.pause_ms <= 900 for u in holds)
    assert {u.kind for u in utterances if u.category == "c"} == {"backchannel", "noise"}
    # Every c/d utterance follows a question and waits for its reply to play 0.6-1.4 s.
    for segment in corpus.segments:
        if segment.category in "cd":
            asked, said = segment.utterances
            assert asked.category == "b" and 0.6 <= said.assistant_s <= 1.4
        else:
            assert len(segment.utterances) == 1


def test_subsample_keeps_every_category_and_the_order():
    corpus = build_corpus()
    small = subsample(corpus, 20)
    assert 15 <= len(small.utterances) <= 25
    assert {u.category for u in small.utterances} == set(CATEGORIES)
    order = [corpus.segments.index(s) for s in small.segments]
    assert order == sorted(order)
    assert subsample(corpus, None) is corpus


def test_noise_bursts_last_200_to_400_ms_and_trim_drops_silence():
    for kind in ("cough", "double-cough", "hiss", "thump"):
        assert 0.2 <= len(noise(kind)) / RATE <= 0.4
    speech = np.concatenate([np.zeros(RATE // 2), np.full(RATE // 4, 3000), np.zeros(RATE)])
    assert len(trim(speech.astype(np.int16))) == RATE // 4


def test_a_seeded_piper_clip_is_the_same_whatever_was_synthesized_before():
    joe = next(v for v in VOICES if v.engine == "piper")
    first = speak("mm hm", joe)
    speak("mm hm", joe, seed=None)  # a random draw in between moves the shared voice's generator
    assert np.array_equal(speak("mm hm", joe), first)
    other = speak("mm hm", joe, seed=1)
    assert len(other) != len(first) or not np.array_equal(other, first)


def hold(onset_s: float, end_s: float) -> Spoken:
    return Spoken("a00", "a", "filler", "piper-joe", "I want to um ... book", *_ns(onset_s, end_s))


def _ns(onset_s: float, end_s: float) -> tuple[int, int]:
    return int(onset_s * S), int(end_s * S)


def test_a_commit_before_the_end_of_speech_is_a_false_cut_off():
    events = Events()
    events.record({"type": "user_turn", "turn": 1, "text": "I want to um"}, now_ns=int(11.5 * S))
    assert cut_off(hold(10, 13), events)  # committed in the pause
    assert not cut_off(hold(20, 23), events)
    later = Events(commits=[(int(13.4 * S), 2, "I want to um book a table")])
    assert not cut_off(hold(10, 13), later)  # committed after the whole utterance


def test_commit_latency_is_the_first_commit_after_the_end_of_speech():
    spoken = Spoken("b00", "b", "question", "espeak-en-gb", "What?", *_ns(10, 12))
    events = Events(commits=[(int(9 * S), 1, "old"), (int(12.3 * S), 2, "What?")])
    assert commit_after(spoken, events) == (300, 2)
    assert commit_after(spoken, events, until_ns=int(12.2 * S)) == (-1, -1)
    assert commit_after(spoken, Events()) == (-1, -1)


def test_the_policys_decision_is_timed_apart_from_the_commit():
    spoken = Spoken("b00", "b", "question", "espeak-en-gb", "What?", *_ns(10, 12))
    events = Events()
    events.record({"type": "turn_decided", "turn": 1}, now_ns=int(11.5 * S))  # in the pause
    events.record({"type": "turn_decided", "turn": 1}, now_ns=int(12.25 * S))
    assert decided_after(spoken, events, None) == 250
    assert decided_early(hold(10, 12), events) and not decided_early(hold(20, 23), events)
    assert decided_after(spoken, Events(), None) is None


def test_barge_in_counts_only_inside_its_window():
    spoken = Spoken("d00", "d", "barge-in", "piper-joe", "Stop", *_ns(20, 21))
    assert barged_in(spoken, Events(barge_ins=[int(20.45 * S)])) == 450
    assert barged_in(spoken, Events(barge_ins=[int(19.9 * S)])) is None  # before it
    late = int((21 + turns.BARGE_IN_WINDOW_S + 0.1) * S)
    assert barged_in(spoken, Events(barge_ins=[late])) is None


def test_summary_from_a_synthetic_run():
    """4 holds (1 cut off), 3 complete turns, 3 backchannels (1 barges in, 1 spoken when
    no reply played), 2 barge-ins (1 missed)."""
    spoken = [
        Spoken("a0", "a", "filler", "piper-joe", "", *_ns(0, 3), pause_ms=600),
        Spoken("a1", "a", "number", "piper-joe-slow", "", *_ns(10, 13), pause_ms=400),
        Spoken("a2", "a", "comma", "espeak-en-gb", "", *_ns(20, 23)),
        Spoken("a3", "a", "number", "piper-joe", "", *_ns(30, 33)),
        Spoken("b0", "b", "question", "v", "", *_ns(40, 42)),
        Spoken("b1", "b", "prompt", "v", "", *_ns(50, 52)),
        Spoken("c0", "c", "backchannel", "v", "", *_ns(54, 54.4), reply_playing=True),
        Spoken("b2", "b", "prompt", "v", "", *_ns(60, 62)),
        Spoken("c1", "c", "noise", "v", "", *_ns(64, 64.3), reply_playing=True),
        Spoken("b3", "b", "prompt", "v", "", *_ns(70, 72), reply_playing=True),
        Spoken("c2", "c", "backchannel", "v", "", *_ns(74, 74.4), reply_playing=False),
        Spoken("d0", "d", "barge-in", "v", "", *_ns(80, 81), True, engine_playing=True),
        Spoken("d1", "d", "barge-in", "v", "", *_ns(90, 91), reply_playing=True),
    ]
    commits = [1.5, 3.8, 13.7, 23.6, 33.9, 42.2, 52.4, 62.6, 72.8, 74.9, 82.5]
    events = Events(
        commits=[(int(t * S), turn, "") for turn, t in enumerate(commits, 1)],
        barge_ins=[int(64.5 * S), int(80.6 * S)],
        first_audio={7: int(52.9 * S), 6: int(43.0 * S)},
        finals=[int(42.1 * S), int(52.2 * S)],
    )
    records = outcomes(spoken, events)
    summary = summarize(records)
    assert [r["cut_off"] for r in records if r["category"] == "a"] == [True, False, False, False]
    assert summary["false_cutoffs"] == 1 and summary["holds"] == 4
    assert summary["false_cutoff_rate"] == pytest.approx(0.25)
    assert summary["false_cutoffs_by_kind"] == {"filler": [1, 1], "number": [0, 2], "comma": [0, 1]}
    assert summary["false_cutoffs_by_engine"] == {"piper": [1, 3], "espeak": [0, 1]}
    # b latencies: 200, 400, 600, 800 ms
    assert summary["complete"] == 4 and summary["committed"] == 4
    assert summary["commit_ms_p50"] == pytest.approx(500)
    assert summary["commit_ms_p90"] == pytest.approx(np.percentile([200, 400, 600, 800], 90))
    assert summary["voice_to_voice_ms_p50"] == pytest.approx(950)  # 1000 and 900 ms
    assert summary["voice_to_voice_n"] == 2
    assert summary["backchannels"] == 2  # c2 left out: no reply playing
    assert summary["false_barge_ins"] == 1  # c1, the noise
    assert summary["backchannel_turns"] == 0  # c2's commit is not counted: left out
    assert summary["barge_ins"] == 2 and summary["missed_barge_ins"] == 1
    assert summary["barge_in_ms_p50"] == pytest.approx(600)
    assert summary["no_reply_playing"] == 1 and summary["overlapped"] == 1
    assert summary["engine_missed_reply"] == 3  # c0, c1, d1: the engine thought it had ended
    assert summary["transcript_ms_p50"] == pytest.approx(150)  # 100 and 200 ms


def test_events_are_stamped_as_they_arrive():
    events = Events()
    events.record({"type": "user_turn", "turn": 3, "text": "hi"}, now_ns=5)
    events.record({"type": "barge_in", "turn": 3, "decided_ns": 4}, now_ns=6)
    events.record({"type": "metrics", "turn": 3, "latency_ms": {}}, now_ns=7)
    events.record({"type": "metrics", "turn": 3, "latency_ms": {}}, now_ns=9)
    events.record({"type": "assistant_text", "turn": 3, "text": "x"}, now_ns=8)
    assert events.commits == [(5, 3, "hi")]
    assert events.barge_ins == [4]
    assert events.first_audio == {3: 7}


def test_policies_default_to_silence_dynamic_and_smart_and_parse_params():
    labels = [p.type_name for p in default_policies()]
    assert labels == ["turn.silence", "turn.dynamic", "turn.smart"]
    policy = parse_policy("turn.silence:silence_ms=500,speculate=false")
    assert policy == Policy("turn.silence", {"silence_ms": 500, "speculate": False})
    assert policy.label == "turn.silence:silence_ms=500,speculate=False"
    for bad in ("turn.nope", "stt.whisper", "turn.silence:silence_ms", "turn.silence:bogus=1"):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_with_policy_swaps_the_turn_node_and_keeps_the_conversation_settings():
    graph = load_graph("default")
    swapped = with_policy(graph, Policy("turn.dynamic", {"min_wait_ms": 450}))
    dynamic = swapped.nodes["turn"]
    assert dynamic.type_name == "turn.dynamic" and dynamic.params.min_wait_ms == 450
    assert dynamic.params.speculate == graph.nodes["turn"].params.speculate
    assert "turn" not in {e.target for e in swapped.edges if e.target_port == "audio"}
    smart = with_policy(swapped, Policy("turn.smart")).nodes["turn"]
    assert smart.type_name == "turn.smart"
    silence = with_policy(graph, Policy("turn.silence", {"silence_ms": 600})).nodes["turn"]
    assert silence.type_name == "turn.silence" and silence.params.silence_ms == 600
    assert silence.params.speculate == graph.nodes["turn"].params.speculate


@pytest.mark.slow
def test_a_tiny_real_run_measures_a_hold_and_a_complete_turn(tmp_path):
    """Two utterances through the real default graph with turn.silence (about 30 s)."""
    from flowvoice.bench.turns import graph_for_bench, prepare, run_policy

    corpus = build_corpus()
    hold = next(u for u in corpus.utterances if u.category == "a" and u.pause_ms <= 300)
    complete = next(u for u in corpus.utterances if u.kind == "question")
    utterances = [hold, complete]
    script = prepare(utterances, tmp_path, gap_s=5.0)
    run = run_policy(graph_for_bench("default"), Policy("turn.silence"), utterances, script, 5.0)
    assert [r["id"] for r in run.records] == [hold.id, complete.id]
    # A 200-300 ms pause is shorter than the VAD's silence: never a cut-off, generous bounds.
    assert run.records[0]["cut_off"] is False
    assert run.summary["committed"] == 1 and run.summary["commit_ms_p50"] < 5000
