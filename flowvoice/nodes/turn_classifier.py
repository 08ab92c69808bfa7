"""``turn.classifier``: turn detection by a sentence-finished text classifier plus silence.

As in RealtimeVoiceChat's turn detection, a transformers sequence-classification model
(``KoljaB/SentenceFinishedClassification``, a DistilBERT, or any compatible local model)
scores the probability ``p`` that the transcript so far is a finished sentence. The silence
to wait after the end of speech blends ``turn.dynamic``'s punctuation-based wait with the
model's opinion::

    wait = (1 - model_weight) * punctuation_wait + model_weight * (1 - p) * model_wait_ms

Everything else (when a turn may commit, resumed speech, latency marks) is ``turn.dynamic``'s.
Each final transcript is scored in a worker thread before the node takes it into account, so
the wait is known as soon as the transcript arrives; scores are cached per text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
from pydantic import Field

from flowvoice.frames import Frame, Transcript
from flowvoice.graph.registry import register
from flowvoice.node import NodeSetupError
from flowvoice.nodes._deps import require
from flowvoice.nodes._hub import download_hint
from flowvoice.nodes.turn import DynamicTurn, DynamicTurnParams

EXTRA = "pip install 'flowvoice[turn-classifier]'"
DEFAULT_MODEL = "KoljaB/SentenceFinishedClassification"


class ClassifierTurnParams(DynamicTurnParams):
    model: str = Field(
        DEFAULT_MODEL,
        description="Sequence-classification model: a local directory, or a hub id found in the "
        "Hugging Face cache (download it first; nothing is fetched at run time).",
    )
    complete_label: int = Field(
        1, ge=0, description="Index of the 'sentence finished' class in the model's output."
    )
    model_weight: float = Field(
        0.35, ge=0, le=1, description="Share of the model's wait in the blended wait."
    )
    model_wait_ms: int = Field(
        1000, ge=0, le=10000, description="Wait the model asks for when it is sure (p = 0)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses CUDA when torch sees a GPU."
    )
    max_length: int = Field(128, ge=8, le=512, description="Tokens scored (text is truncated).")


def resolve_classifier(name: str) -> Path:
    """The local directory of classifier ``name``; NodeSetupError (fast) when absent."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NodeSetupError(f"classifier directory {name!r} has no config.json")
        return path
    if name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise NodeSetupError(f"classifier model directory {name!r} does not exist")
    hub = require("huggingface_hub", "huggingface-hub", EXTRA)
    try:
        return Path(hub.snapshot_download(name, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError and friends: not in the cache
        raise NodeSetupError(
            f"turn classifier {name!r} is not downloaded: run {download_hint(name)} once "
            "(or set `model` to a local model directory)"
        ) from exc


class SentenceClassifier:
    """A loaded classifier: ``probability(text)`` that ``text`` is a finished sentence."""

    def __init__(self, path: Path, device: str, complete_label: int, max_length: int):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
        self.model = model.to(device).eval()
        labels = self.model.config.num_labels
        if not 0 <= complete_label < labels:
            raise NodeSetupError(
                f"complete_label {complete_label} is not a class of this model ({labels} labels)"
            )
        self.complete_label = complete_label
        self.max_length = max_length
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, float] = OrderedDict()

    def probability(self, text: str) -> float:
        """P(finished sentence) for ``text`` (cached, thread-safe, blocking)."""
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
            inputs = self.tokenizer(
                text, return_tensors="pt", truncation=True, max_length=self.max_length
            ).to(self.device)
            with self._torch.inference_mode():
                logits = self.model(**inputs).logits
            p = float(self._torch.softmax(logits, dim=-1)[0, self.complete_label])
            self._cache[text] = p
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
            return p


@register("turn.classifier")
class ClassifierTurn(DynamicTurn):
    """Commits the user's turn after a silence set by punctuation and a sentence classifier.

    Publishes ``turn_score`` events (text, probability, wait) for each final transcript.
    """

    Params = ClassifierTurnParams
    params: ClassifierTurnParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scores: dict[str, float] = {}

    async def setup(self) -> None:
        p = self.params
        path = resolve_classifier(p.model)
        require("torch", "torch", EXTRA)
        require("transformers", "transformers", EXTRA)
        self._classifier: SentenceClassifier = await self.context.resources.get(
            ("turn.classifier", str(path), p.device, p.complete_label, p.max_length),
            lambda: SentenceClassifier(path, p.device, p.complete_label, p.max_length),
            label=f"turn classifier {p.model}",
        )

    async def process(self, port: str, frame: Frame) -> None:
        if isinstance(frame, Transcript) and frame.final and (text := frame.text.strip()):
            p = self._scores.get(text)
            if p is None:
                p = await anyio.to_thread.run_sync(self._classifier.probability, text)
                self._scores = {text: p}  # only the latest transcript's score is needed
            wait = self.wait_ms(text)
            self.context.publish(
                "turn_score", turn=self.context.turn, text=text, probability=p, wait_ms=wait
            )
        await super().process(port, frame)

    def wait_ms(self, text: str) -> int:
        punctuation = super().wait_ms(text)
        p = self._scores.get(text)
        if p is None:
            return punctuation
        w = self.params.model_weight
        return round((1 - w) * punctuation + w * (1 - p) * self.params.model_wait_ms)
