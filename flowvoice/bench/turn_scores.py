"""``flowvoice bench turn-scores``: calibrate ``turn.smart``'s thresholds on scored pauses.

Every hold utterance of the ``bench turns`` corpus (a pause after a continuation word, a
filler, a comma or inside a number) is spoken up to its pause, and every complete question
in full, each by every corpus voice. For each such pause the shipped Smart Turn model scores
the audio as ``turn.smart`` would (half a second of lead-in, the speech, ``score_after_ms``
of silence; the complete ones again at ``rescore_ms``), tiny.en transcribes it, so the
text rules see what Whisper writes, and the text end-of-turn model judges that transcript.
Then ``turn.smart``'s own hold rule
(:func:`flowvoice.nodes.turn_smart.hold_ms`) is replayed over a grid of thresholds:

- a hold pause is **cut off** when the turn could commit before the pause ends: the
  policy's hold has passed, the VAD has ended the speech (after the shipped default graph's
  ``min_silence_ms``) and the transcript is in (the measured transcription and text-model
  times after the VAD's pause event). Each hold is tried with every pause length of the
  corpus (200-900 ms): a score at ``score_after_ms`` does not depend on how long the pause
  will last;
- a complete question **commits** after its hold (after the rescore when the first score
  was unlikely), once the VAD has ended the speech and the transcript is in.

It prints the cut-off rate and the commit latency p50/p90 of the current defaults and of the
fastest setting within each cut-off budget. Here the transcription runs alone on the
machine; ``bench turns`` measures the whole pipeline in real time.
"""

from __future__ import annotations

import itertools
import json
import platform
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import date

import numpy as np

from flowvoice.bench.turns_corpus import COMPLETES, HOLDS, PAUSES_MS, PROMPTS, RATE, VOICES, speak
from flowvoice.graph.spec import load_graph
from flowvoice.nodes.llm import GEMMA_EN
from flowvoice.nodes.stt import Decoding, _Whisper, resolve_model
from flowvoice.nodes.text_turn_model import TextTurnModel
from flowvoice.nodes.turn_smart import PREROLL_S, SmartTurnParams, combined, hold_ms
from flowvoice.nodes.vad import VADParams

TEXT_WEIGHTS = (0.0, 1.0, 2.0, 3.0, 4.0)
CONFIDENT_P = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
UNLIKELY_P = (0.001, 0.005, 0.01, 0.05, 0.1, 0.2)
CONFIDENT_MS = (200, 250, 300, 400)
UNSURE_MS = (500, 700, 900)
#: The thresholds the grid varies, as the table shows them.
SETTINGS = ("text_weight", "confident_p", "unlikely_p", "confident_ms", "unsure_ms")
#: Shares of hold pauses a setting may cut off: the best setting within each is shown.
CUT_OFF_BUDGETS = (0.02, 0.05, 0.10)


@dataclass(frozen=True)
class ScoredPause:
    """A pause as ``turn.smart`` meets it: Whisper's text and Smart Turn's probabilities."""

    kind: str  # "hold" (the user goes on after it) or "complete"
    text: str  # what was said (reference)
    voice: str
    transcript: str  # what tiny.en heard
    p_score: float  # at score_after_ms of silence
    p_rescore: float | None  # at rescore_ms (complete only)
    transcribe_ms: float
    p_text: float | None = None  # the text model's, on the transcript
    text_ms: float = 0.0  # the text model's time


@dataclass(frozen=True)
class Outcome:
    params: dict[str, float]
    cut_off_rate: float
    commit_p50: float
    commit_p90: float


def score_corpus(params: SmartTurnParams, progress: bool = True) -> list[ScoredPause]:
    """Speak, transcribe and score every hold and complete utterance in every voice."""
    from flowvoice.nodes.smart_turn_model import SmartTurnModel

    text_model = TextTurnModel.load(params.text_model or GEMMA_EN)

    model = SmartTurnModel.load()
    whisper = _Whisper(resolve_model("tiny.en"), "cpu", "int8", 0)
    items = [("hold", first) for _, first, _ in HOLDS]
    items += [("complete", text) for text in (*COMPLETES, *PROMPTS)]
    lead = np.zeros(int(PREROLL_S * RATE), np.int16)
    out = []
    for n, ((kind, text), voice) in enumerate(itertools.product(items, VOICES), 1):
        speech = speak(text, voice)
        started = time.perf_counter()
        transcript = whisper.transcribe(speech, Decoding(language="en"))
        elapsed = 1000 * (time.perf_counter() - started)

        def silence_then_score(ms: int, speech: np.ndarray = speech) -> float:
            gap = np.zeros(RATE * ms // 1000, np.int16)
            return model.probability(np.concatenate([lead, speech, gap]), RATE)

        p_rescore = silence_then_score(params.rescore_ms) if kind == "complete" else None
        p = silence_then_score(params.score_after_ms)
        p_text, text_ms = judged(text_model, transcript)
        out.append(
            ScoredPause(kind, text, voice.name, transcript, p, p_rescore, elapsed, p_text, text_ms)
        )
        if progress and n % 25 == 0:
            print(f"  scored {n}/{len(items) * len(VOICES)} pauses", flush=True)
    return out


def ready_ms(pause: ScoredPause, vad: VADParams) -> float:
    """When, after the end of speech, the turn can first commit: the VAD has ended the speech
    and the transcript started at the VAD's pause event is in, and judged."""
    return max(vad.min_silence_ms, vad.pause_ms + pause.transcribe_ms + pause.text_ms)


def shipped_vad() -> VADParams:
    """The VAD settings of the shipped default graph, whose ``turn.smart`` is calibrated."""
    graph = load_graph("default")
    return next(n.params for n in graph.nodes.values() if isinstance(n.params, VADParams))


def add_text_scores(pauses: list[ScoredPause], model: str) -> list[ScoredPause]:
    """``pauses`` with the text model's scores, for scores kept before it existed."""
    text_model = TextTurnModel.load(model)
    out = []
    for pause in pauses:
        p_text, text_ms = judged(text_model, pause.transcript)
        out.append(replace(pause, p_text=p_text, text_ms=text_ms))
    return out


def judged(text_model: TextTurnModel, transcript: str) -> tuple[float, float]:
    """The text model's probability for ``transcript`` and the ms it took."""
    started = time.perf_counter()
    p_text = text_model.probability(transcript)
    return p_text, 1000 * (time.perf_counter() - started)


def replay(
    pauses: list[ScoredPause], params: SmartTurnParams, vad: VADParams | None = None
) -> Outcome:
    """``turn.smart``'s hold rule over the scored pauses with ``params`` and the VAD's ``vad``
    settings (default: the VAD's defaults): a hold pause is cut off when the turn could commit
    (held and ready) before the user spoke on."""
    vad = vad or VADParams()

    def text_p(p: ScoredPause) -> float | None:
        return p.p_text if params.uses_text else None

    holds = [p for p in pauses if p.kind == "hold"]
    cut = sum(
        max(hold_ms(p.p_score, p.transcript, params, text_p(p)), ready_ms(p, vad)) < ms
        for p in holds
        for ms in PAUSES_MS
    )
    waits = []
    for p in pauses:
        if p.kind != "complete":
            continue
        wait = hold_ms(p.p_score, p.transcript, params, text_p(p))
        unlikely = combined(p.p_score, text_p(p), params.text_weight) < params.unlikely_p
        if unlikely and p.p_rescore is not None:
            rescored = hold_ms(p.p_rescore, p.transcript, params, text_p(p))
            wait = max(params.rescore_ms, rescored)
        waits.append(max(wait, ready_ms(p, vad)))
    chosen = {k: getattr(params, k) for k in SETTINGS}
    chosen["text_weight"] = params.text_weight if params.uses_text else 0.0
    return Outcome(
        chosen,
        cut / max(1, len(holds) * len(PAUSES_MS)),
        float(np.percentile(waits, 50)) if waits else float("nan"),
        float(np.percentile(waits, 90)) if waits else float("nan"),
    )


def grid(base: SmartTurnParams) -> Iterable[SmartTurnParams]:
    """Every ordered setting of the thresholds around ``base``'s other values."""
    settings = itertools.product(TEXT_WEIGHTS, CONFIDENT_P, UNLIKELY_P, CONFIDENT_MS, UNSURE_MS)
    for setting in settings:
        chosen = dict(zip(SETTINGS, setting, strict=True))
        if (
            chosen["unlikely_p"] <= chosen["confident_p"]
            and base.score_after_ms <= chosen["confident_ms"] <= chosen["unsure_ms"]
        ):
            yield base.model_copy(update=chosen)


def best(outcomes: list[Outcome], budget: float) -> Outcome | None:
    """The setting with the shortest hold (p50, then p90) within the cut-off budget."""
    within = [o for o in outcomes if o.cut_off_rate <= budget + 1e-9]
    return min(within, key=lambda o: (o.commit_p50, o.commit_p90, o.cut_off_rate), default=None)


def separation(pauses: list[ScoredPause], score: str) -> float:
    """AUC of ``score`` (a ``ScoredPause`` field): the chance that a complete turn scores above
    a hold pause (ties count half); 0.5 is no better than chance."""
    complete = np.array([getattr(p, score) for p in pauses if p.kind == "complete"])
    hold = np.array([getattr(p, score) for p in pauses if p.kind == "hold"])
    if not len(complete) or not len(hold):
        return float("nan")
    above = (complete[:, None] > hold[None, :]).mean()
    return float(above + 0.5 * (complete[:, None] == hold[None, :]).mean())


def render(
    pauses: list[ScoredPause], current: list[tuple[str, Outcome]], outcomes: list[Outcome], md: bool
) -> str:
    holds = [p.p_score for p in pauses if p.kind == "hold"]
    completes = [p.p_score for p in pauses if p.kind == "complete"]
    ms = [p.transcribe_ms for p in pauses]
    text_ms = [p.text_ms for p in pauses]
    lines = [
        f"# flowvoice bench turn-scores ({date.today()}, {platform.machine()}, "
        f"{len(holds)} hold and {len(completes)} complete pauses, {len(VOICES)} voices)",
        f"Smart Turn p at the pause: hold p50 {np.median(holds):.2f} "
        f"(p90 {np.percentile(holds, 90):.2f}), complete p50 {np.median(completes):.2f} "
        f"(p10 {np.percentile(completes, 10):.2f}); tiny.en {np.median(ms):.0f} ms p50 per "
        f"transcription, text model {np.median(text_ms):.0f} ms p50",
        f"Complete above hold (AUC): Smart Turn {separation(pauses, 'p_score'):.3f}, "
        f"text model {separation(pauses, 'p_text'):.3f}",
        "",
    ]
    header = ("setting", *SETTINGS, "cut-offs", "commit p50 ms", "commit p90 ms")
    rows = list(current)
    for budget in CUT_OFF_BUDGETS:
        chosen = best(outcomes, budget)
        if chosen is not None:
            rows.append((f"best within {100 * budget:.0f} % cut-offs", chosen))
        else:
            lines.append(f"No setting cuts off at most {100 * budget:.0f} % of the hold pauses.")
    table = [header] + [
        (
            name,
            *(str(o.params[k]) for k in SETTINGS),
            f"{100 * o.cut_off_rate:.1f} %",
            f"{o.commit_p50:.0f}",
            f"{o.commit_p90:.0f}",
        )
        for name, o in rows
    ]
    if md:
        lines += ["| " + " | ".join(r) + " |" for r in table[:1]]
        lines += ["|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
    else:
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(lines)


def main(
    json_path: str | None = None,
    markdown: bool = False,
    scores_path: str | None = None,
) -> int:
    """Score the corpus (or load the scores a ``--json`` run kept) and replay the grid."""
    base = SmartTurnParams()
    if scores_path:
        with open(scores_path) as f:
            pauses = [ScoredPause(**p) for p in json.load(f)["pauses"]]
        if any(p.p_text is None for p in pauses):
            print("Judging the kept transcripts with the text model...", flush=True)
            pauses = add_text_scores(pauses, base.text_model or GEMMA_EN)
    else:
        print("Speaking, transcribing and scoring the corpus pauses (a few minutes)...", flush=True)
        pauses = score_corpus(base)
    vad = shipped_vad()
    outcomes = [replay(pauses, params, vad) for params in grid(base)]
    audio_only = SmartTurnParams(text_model="")
    current = [("current defaults", replay(pauses, base, vad))]
    current.append(("audio alone (text_model: '')", replay(pauses, audio_only, vad)))
    print(render(pauses, current, outcomes, markdown))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"pauses": [asdict(p) for p in pauses]}, f, indent=1)
    return 0
