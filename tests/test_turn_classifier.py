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


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A 1-layer DistilBERT saved locally, its output fixed at P(finished) = 0.9."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("classifier")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", *WORDS]))
    transformers.DistilBertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    config = transformers.DistilBertConfig(
        vocab_size=len(WORDS) + 7, dim=16, n_layers=1, n_heads=2, hidden_dim=32, num_labels=2
    )
    model = transformers.DistilBertForSequenceClassification(config)
    with torch.no_grad():  # random weights, but a known answer for the wiring assertions
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, math.log(9.0)]))
    model.save_pretrained(folder)
    return folder


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
    # 0.65 * 300 ms (finished sentence) + 0.35 * (1 - 0.9) * 1000 ms
    assert score["wait_ms"] == 230
    (turn,) = result.frames("user_turn")
    assert turn.text == "What time is it?"
    received = result.received["user_turn"][0].t_ns
    delay_ms = (received - result.session.tracer.turns[1].marks["speech_end"]) / 1e6
    assert 200 <= delay_ms <= 500


@needs_torch
async def test_unfinished_clause_still_waits_longer(tiny_classifier):
    params = {"model": str(tiny_classifier), "max_wait_ms": 1500, "device": "cpu"}
    result = await run_node(
        "turn.classifier", params, [*utterance("please turn on the lights and"), 0.3]
    )
    (score,) = result.events_of("turn_score")
    assert score["wait_ms"] == round(0.65 * 1500 + 0.35 * 0.1 * 1000)
    assert [t.text for t in result.frames("user_turn")] == ["please turn on the lights and"]


async def test_missing_model_names_the_download(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SessionError, match="download KoljaB/SentenceFinished"):
        await run_node("turn.classifier", {}, [], timeout=30)
    with pytest.raises(SessionError, match="does not exist"):
        await run_node("turn.classifier", {"model": str(tmp_path / "nope")}, [], timeout=30)
