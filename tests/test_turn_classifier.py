"""turn.classifier: plumbing with a tiny locally built classifier, and the missing-model error."""

from __future__ import annotations

import importlib.util
import math

import pytest
from harness import run_node

from flowvoice.frames import Transcript, VADEvent
from flowvoice.runtime.session import SessionError

pytestmark = pytest.mark.anyio
needs_torch = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "transformers")),
    reason="needs torch and transformers (pip install 'flowvoice[turn-classifier]')",
)
WORDS = [
    "what",
    "time",
    "is",
    "it",
    "please",
    "turn",
    "on",
    "the",
    "lights",
    "and",
    "close",
    "window",
    "hello",
    "there",
]


def build_classifier(folder, finished: float):
    """A 1-layer DistilBERT saved in ``folder``, its output fixed at P(finished)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", *WORDS]))
    transformers.DistilBertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    config = transformers.DistilBertConfig(
        vocab_size=len(WORDS) + 7, dim=16, n_layers=1, n_heads=2, hidden_dim=32, num_labels=2
    )
    model = transformers.DistilBertForSequenceClassification(config)
    with torch.no_grad():  # random weights, but a known answer for the wiring assertions
        model.classifier.weight.zero_()
        odds = finished / (1 - finished)
        model.classifier.bias.copy_(torch.tensor([0.0, math.log(odds)]))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """P(finished) = 0.9."""
    return build_classifier(tmp_path_factory.mktemp("sure"), 0.9)


@pytest.fixture(scope="module")
def unsure_classifier(tmp_path_factory):
    """P(finished) = 0.2."""
    return build_classifier(tmp_path_factory.mktemp("unsure"), 0.2)


def utterance(text: str):
    yield "vad", VADEvent(kind="start")
    yield "vad", VADEvent(kind="end")
    yield 0.02
    yield "transcript", Transcript(text=text, final=True)


@needs_torch
async def test_classifier_blends_into_the_wait_and_commits(tiny_classifier):
    params = {"model": str(tiny_classifier), "min_wait_ms": 300, "device": "cpu"}
    result = await run_node("turn.classifier", params, [*utterance("What time is it?"), 0.6])
    (score,) = result.events_of("turn_score")
    assert score["probability"] == pytest.approx(0.9, abs=1e-4)
    assert 0 < score["wait_ms"] < 1000, "a finished sentence, judged finished: a short wait"
    (turn,) = result.frames("user_turn")
    assert turn.text == "What time is it?"
    received = result.received["user_turn"][0].t_ns
    delay_ms = (received - result.session.tracer.turns[1].marks["speech_end"]) / 1e6
    assert score["wait_ms"] - 20 <= delay_ms <= score["wait_ms"] + 1000, "committed after it"


async def wait_ms(model, text: str) -> int:
    params = {"model": str(model), "max_wait_ms": 1500, "device": "cpu"}
    result = await run_node("turn.classifier", params, [*utterance(text), 1.6])
    (score,) = result.events_of("turn_score")
    assert [t.text for t in result.frames("user_turn")] == [text]
    return score["wait_ms"]


@needs_torch
async def test_an_unsure_classifier_waits_longer(tiny_classifier, unsure_classifier):
    sure = await wait_ms(tiny_classifier, "What time is it?")
    unsure = await wait_ms(unsure_classifier, "What time is it?")
    assert sure < unsure <= 1500


@needs_torch
async def test_unfinished_clause_still_waits_longer(tiny_classifier):
    params = {"model": str(tiny_classifier), "max_wait_ms": 1500, "device": "cpu"}
    result = await run_node(
        "turn.classifier", params, [*utterance("please turn on the lights and"), 0.3]
    )
    (score,) = result.events_of("turn_score")
    finished = await wait_ms(tiny_classifier, "What time is it?")
    assert finished < score["wait_ms"] <= 1500, "the same score waits longer on an open clause"
    assert [t.text for t in result.frames("user_turn")] == ["please turn on the lights and"]


async def test_missing_model_names_the_download(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SessionError, match="download KoljaB/SentenceFinished"):
        await run_node("turn.classifier", {}, [], timeout=30)
    with pytest.raises(SessionError, match="does not exist"):
        await run_node("turn.classifier", {"model": str(tmp_path / "nope")}, [], timeout=30)
