"""``flowvoice bench turn-scores``: the replay of turn.smart's hold rule on scored pauses,
with hand-made scores (the scoring itself runs the real models in the benchmark)."""

from __future__ import annotations

import json
from dataclasses import replace

from flowvoice.bench import turn_scores
from flowvoice.bench.turn_scores import ScoredPause, best, grid, replay
from flowvoice.bench.turns_corpus import PAUSES_MS
from flowvoice.nodes.turn_smart import SmartTurnParams


def pause(kind: str, transcript: str, p: float, rescore: float | None = None) -> ScoredPause:
    return ScoredPause(kind, transcript, "voice", transcript, p, rescore, transcribe_ms=100.0)


def test_a_confident_fragment_is_cut_off_only_by_pauses_longer_than_its_hold():
    params = SmartTurnParams(confident_p=0.5, confident_ms=400, unsure_ms=900)
    outcome = replay([pause("hold", "I went home.", 0.8)], params)
    longer = sum(ms > 400 for ms in PAUSES_MS)
    assert outcome.cut_off_rate == longer / len(PAUSES_MS)
    # The same fragment ending on "and" waits unfinished_ms: never cut off by the corpus.
    assert replay([pause("hold", "I went home and", 0.8)], params).cut_off_rate == 0


def test_a_complete_turn_commits_after_the_hold_and_the_vad_and_the_rescore():
    params = SmartTurnParams()
    sure = replay([pause("complete", "What time is it?", 0.99)], params)
    assert sure.commit_p50 == max(params.confident_ms, 250)  # the VAD's end at 250 ms
    unlikely = replay([pause("complete", "What time is it?", 0.0, rescore=0.99)], params)
    assert unlikely.commit_p50 == params.rescore_ms


def test_best_picks_the_fastest_setting_within_the_budget():
    scored = [pause("hold", "It was late.", 0.7), pause("complete", "Is it late?", 0.95)]
    outcomes = [replay(scored, params) for params in grid(SmartTurnParams())]
    chosen = best(outcomes, 0.0)
    assert chosen is not None and chosen.cut_off_rate == 0
    assert chosen.params["confident_p"] > 0.7  # the fragment's score must not count as sure
    assert all(o.commit_p50 >= chosen.commit_p50 for o in outcomes if o.cut_off_rate == 0)


def test_main_replays_kept_scores(tmp_path, capsys):
    kept = tmp_path / "scores.json"
    scored = [pause("hold", "Before you", 0.9), pause("complete", "Tell me a joke.", 0.95)]
    kept.write_text(json.dumps({"pauses": [p.__dict__ for p in scored]}))
    assert turn_scores.main(scores_path=str(kept)) == 0
    out = capsys.readouterr().out
    assert "current defaults" in out and "best within 2 % cut-offs" in out


def test_the_text_score_keeps_a_confident_fragment_from_being_cut_off():
    fragment = replace(pause("hold", "So I was thinking.", 0.95), p_text=0.01, text_ms=50.0)
    assert replay([fragment], SmartTurnParams()).cut_off_rate == 0
    assert replay([fragment], SmartTurnParams(text_model="")).cut_off_rate > 0.5
