"""``flowvoice bench turns``: end-of-turn and barge-in behaviour, shaped like LiveKit's eot-bench.

A synthetic corpus (:mod:`flowvoice.bench.turns_corpus`: Piper's joe voice and espeak-ng
voices, spoken when the benchmark runs) is streamed in real time through the real graph, its
microphone and speaker swapped for ``test.scripted_mic`` and ``audio.file_sink``, once per
turn policy (the graph's turn node swapped), all in one run:

- **false cut-off rate**: of the utterances with a 200-900 ms mid-turn pause (after "the",
  "um", a comma, inside a number), the share where a user turn committed before the
  utterance's speech ended (eot-bench's "hold" spans);
- **commit latency** on complete questions and commands: the ``user_turn`` event minus the
  clip's real end of speech (the scripted microphone records when each clip ended), p50/p90;
  with speculation the commit waits for the held reply's first audio, so the policy's own
  **decision** (``turn_decided``: its wait has passed) is shown too, and how many hold
  utterances it decided in a pause;
- **false barge-ins**: backchannels ("yeah", "mm hm", ...), coughs and noise bursts spoken
  once the reply has played 0.6-1.4 s that interrupted it (a ``barge_in`` event);
- **missed barge-ins**: real interruptions ("stop, what is two plus two") that did not;
- **voice-to-voice** on complete turns: end of speech -> the reply's first audio sent.

Utterances follow the previous reply's end after a generous pause; the replies are capped
(``llm.params.max_tokens``) so the pause can be. A c/d utterance is spoken only once the
reply has played a while; one spoken when no reply was playing (the reply was too short or
too slow) is left out of the barge-in counts, and an a/b utterance spoken over a reply that
had not finished is counted as overlapped.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import yaml

from flowvoice.bench.turns_corpus import (
    RATE,
    Corpus,
    Utterance,
    build_corpus,
    render,
    subsample,
)
from flowvoice.chat import replace_io, run_chat
from flowvoice.conversation import Conversation
from flowvoice.graph.registry import get_node_type, node_types
from flowvoice.graph.spec import LoadedGraph, load_graph
from flowvoice.nodes.audio import write_wav
from flowvoice.testing.scripted_mic import ScriptedMic

#: Compared in every run, in this order: the VAD baseline, the text rule as the default graph
#: had it before turn.smart (a 500 ms wait after a finished sentence), and the default.
DEFAULT_POLICIES = (
    ("turn.silence", {}),
    ("turn.dynamic", {"min_wait_ms": 500}),
    ("turn.smart", {}),
)
#: Replies capped so the pause before the next utterance can outlast them.
REPLY_TOKENS = 24
#: Replies spoken this much slower, so a wait of up to 1.4 s leaves some to talk over.
REPLY_LENGTH_SCALE = 1.6
#: Silence before each a/b utterance (after the previous one): the reply must be over by then.
GAP_S = 9.0
#: A c/d utterance waits at most this long for the reply to have played its ``assistant_s``.
CUE_TIMEOUT_S = 12.0
#: How long after a c/d utterance's end a barge-in still counts as caused by it.
BARGE_IN_WINDOW_S = 2.5
#: How long after the end of a complete turn its commit is looked for.
COMMIT_WINDOW_S = 6.0
#: The speaker sent reply audio this recently: it is playing (it sends 40 ms slices in real
#: time, 250 ms ahead).
PLAYING_GRACE_S = 0.3
FRAME_S = 0.02  # the scripted microphone's frame
MS = 1_000_000

# -- policies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A turn node type and the params given for it (on top of the graph's, see below)."""

    type_name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        given = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.type_name}:{given}" if given else self.type_name


def parse_policy(spec: str) -> Policy:
    """``TYPE[:key=value,...]`` (values in YAML: ``true``, ``300``, ``[a, b]``)."""
    type_name, _, rest = spec.partition(":")
    type_name = type_name.strip()
    node_type = get_node_type(type_name)
    if node_type is None or not type_name.startswith("turn."):
        known = ", ".join(turn_types()) or "none"
        raise ValueError(f"--turn {spec!r}: {type_name!r} is no registered turn type ({known})")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--turn {spec!r}: expected key=value, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    node_type.Params(**params)  # fail early on an unknown or invalid param
    return Policy(type_name, params)


def turn_types() -> list[str]:
    return [name for name in node_types() if name.startswith("turn.")]


def default_policies() -> list[Policy]:
    """:data:`DEFAULT_POLICIES` that are registered."""
    registered = set(turn_types())
    return [Policy(name, dict(params)) for name, params in DEFAULT_POLICIES if name in registered]


def with_policy(graph: LoadedGraph, policy: Policy) -> LoadedGraph:
    """``graph`` with its turn node running ``policy``.

    The same type as the graph's keeps the graph's params (``turn.dynamic`` as configured in
    default.yaml) with the policy's on top; another type gets the graph's barge-in and
    speculation settings (the params both types have in common that the graph set) and the
    policy's own.
    """
    turns = [n for n in graph.nodes.values() if n.type_name.startswith("turn.")]
    if len(turns) != 1:
        raise ValueError(f"{graph.path}: expected one turn.* node, found {len(turns)}")
    node = turns[0]
    node_type = get_node_type(policy.type_name)
    assert node_type is not None
    set_in_graph = node.params.model_dump(exclude_unset=True)
    if policy.type_name == node.type_name:
        params = {**set_in_graph, **policy.params}
    else:
        shared = {
            k: v
            for k, v in set_in_graph.items()
            if k in node_type.Params.model_fields and k in _conversation_fields()
        }
        params = {**shared, **policy.params}
    new = replace(
        node, type_name=policy.type_name, node_type=node_type, params=node_type.Params(**params)
    )
    # turn.smart's audio input: an edge into a port the new type lacks goes with it
    edges = [e for e in graph.edges if e.target != node.name or e.target_port in node_type.inputs]
    return replace(graph, nodes={**graph.nodes, node.name: new}, edges=edges)


def _conversation_fields() -> set[str]:
    from flowvoice.conversation.bargein import BargeInParams
    from flowvoice.conversation.speculation import SpeculationParams

    return set(BargeInParams.model_fields) | set(SpeculationParams.model_fields)


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Spoken:
    """When one utterance was spoken (monotonic ns) and what was playing then."""

    id: str
    category: str
    kind: str
    voice: str
    text: str
    onset_ns: int
    end_ns: int  # the real end of speech: the clip ends where its speech ends
    reply_playing: bool = False  # the assistant's reply was playing when it began
    engine_playing: bool = False  # ... and the engine thought so (barge-in is checked then)
    pause_ms: int = 0


@dataclass
class Events:
    """What the session reported, stamped: commits (t, turn, text), barge-in decisions (t)
    and each turn's first audio sent (turn -> t)."""

    commits: list[tuple[int, int, str]] = field(default_factory=list)
    barge_ins: list[int] = field(default_factory=list)
    first_audio: dict[int, int] = field(default_factory=dict)
    finals: list[int] = field(default_factory=list)  # final transcripts
    decisions: list[int] = field(default_factory=list)  # the policy's wait passed

    def record(self, event: dict[str, Any], now_ns: int | None = None) -> None:
        now = time.monotonic_ns() if now_ns is None else now_ns
        kind = event.get("type")
        if kind == "user_turn":
            self.commits.append((now, event["turn"], event.get("text", "")))
        elif kind == "barge_in":
            self.barge_ins.append(event.get("decided_ns", now))
        elif kind == "final_transcript":
            self.finals.append(now)
        elif kind == "turn_decided":
            self.decisions.append(now)
        elif kind == "metrics":  # published when the turn's first audio is sent
            self.first_audio.setdefault(event["turn"], now)


def cut_off(spoken: Spoken, events: Events) -> bool:
    """A user turn committed while the utterance was still being spoken (in a pause)."""
    return any(spoken.onset_ns < t < spoken.end_ns for t, _, _ in events.commits)


def decided_early(spoken: Spoken, events: Events) -> bool:
    """The policy decided the turn was over while the utterance was still being spoken."""
    return any(spoken.onset_ns < t < spoken.end_ns for t in events.decisions)


def decided_after(spoken: Spoken, events: Events, until_ns: int | None) -> int | None:
    """ms from the end of speech to the policy's first decision after it, if one came."""
    until = spoken.end_ns + int(COMMIT_WINDOW_S * 1e9) if until_ns is None else until_ns
    after = [t for t in events.decisions if spoken.end_ns <= t < until]
    return round((min(after) - spoken.end_ns) / MS) if after else None


def commit_after(spoken: Spoken, events: Events, until_ns: int | None = None) -> tuple[int, int]:
    """(ms from the end of speech to the first commit after it, its turn); (-1, -1) if none
    came before ``until_ns`` (default: :data:`COMMIT_WINDOW_S` later)."""
    until = spoken.end_ns + int(COMMIT_WINDOW_S * 1e9) if until_ns is None else until_ns
    for t, turn, _ in sorted(events.commits):
        if spoken.end_ns <= t < until:
            return round((t - spoken.end_ns) / MS), turn
    return -1, -1


def barged_in(spoken: Spoken, events: Events) -> int | None:
    """ms from the utterance's onset to the barge-in it caused; None if it caused none."""
    until = spoken.end_ns + int(BARGE_IN_WINDOW_S * 1e9)
    hits = [t for t in events.barge_ins if spoken.onset_ns <= t <= until]
    return round((min(hits) - spoken.onset_ns) / MS) if hits else None


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def outcomes(spoken: list[Spoken], events: Events) -> list[dict[str, Any]]:
    """One record per utterance: what happened to it."""
    records = []
    for index, s in enumerate(spoken):
        following = spoken[index + 1].onset_ns if index + 1 < len(spoken) else None
        record: dict[str, Any] = {
            "id": s.id,
            "category": s.category,
            "kind": s.kind,
            "voice": s.voice,
            "text": s.text,
            "pause_ms": s.pause_ms,
            "reply_playing": s.reply_playing,
            "engine_playing": s.engine_playing,
        }
        if s.category == "a":
            record["cut_off"] = cut_off(s, events)
            record["decided_early"] = decided_early(s, events)
        if s.category in "ab":
            latency, turn = commit_after(s, events, following)
            record["commit_ms"] = None if latency < 0 else latency
            record["decision_ms"] = decided_after(s, events, following)
            finals = [t for t in events.finals if s.end_ns <= t < (following or s.end_ns + 10**10)]
            record["transcript_ms"] = round((min(finals) - s.end_ns) / MS) if finals else None
            first = events.first_audio.get(turn)
            record["voice_to_voice_ms"] = (
                round((first - s.end_ns) / MS) if latency >= 0 and first is not None else None
            )
        if s.category in "cd":
            record["barge_in_ms"] = barged_in(s, events)
            latency, _ = commit_after(s, events, following)
            record["became_turn"] = latency >= 0
        records.append(record)
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The policy's numbers from its utterance records."""

    def of(category: str, valid: Callable[[dict[str, Any]], bool] = lambda r: True):
        return [r for r in records if r["category"] == category and valid(r)]

    holds = of("a")
    complete = of("b")
    over = {c: of(c, lambda r: r["reply_playing"]) for c in "cd"}
    latencies = [r["commit_ms"] for r in complete if r["commit_ms"] is not None]
    decisions = [r["decision_ms"] for r in complete if r.get("decision_ms") is not None]
    v2v = [r["voice_to_voice_ms"] for r in complete if r["voice_to_voice_ms"] is not None]
    transcripts = [r["transcript_ms"] for r in complete if r.get("transcript_ms") is not None]
    barge_ms = [r["barge_in_ms"] for r in over["d"] if r["barge_in_ms"] is not None]
    by_kind: dict[str, list[int]] = {}
    by_engine: dict[str, list[int]] = {}  # audio EOT models may treat espeak as out of domain
    for r in holds:
        for key, counts in ((r["kind"], by_kind), (r["voice"].split("-")[0], by_engine)):
            counts.setdefault(key, [0, 0])
            counts[key][0] += r["cut_off"]
            counts[key][1] += 1
    return {
        "utterances": len(records),
        "holds": len(holds),
        "false_cutoffs": sum(r["cut_off"] for r in holds),
        "false_cutoff_rate": sum(r["cut_off"] for r in holds) / len(holds) if holds else None,
        "false_cutoffs_by_kind": by_kind,
        "false_cutoffs_by_engine": by_engine,
        "complete": len(complete),
        "committed": len(latencies),
        "commit_ms_p50": percentile(latencies, 50),
        "commit_ms_p90": percentile(latencies, 90),
        "decision_ms_p50": percentile(decisions, 50),
        "decision_ms_p90": percentile(decisions, 90),
        "early_decisions": sum(r.get("decided_early", False) for r in holds),
        "transcript_ms_p50": percentile(transcripts, 50),
        "transcript_ms_p90": percentile(transcripts, 90),
        "voice_to_voice_ms_p50": percentile(v2v, 50),
        "voice_to_voice_n": len(v2v),
        "backchannels": len(over["c"]),
        "false_barge_ins": sum(r["barge_in_ms"] is not None for r in over["c"]),
        "backchannel_turns": sum(r["became_turn"] for r in over["c"]),
        "barge_ins": len(over["d"]),
        "missed_barge_ins": sum(r["barge_in_ms"] is None for r in over["d"]),
        "barge_in_ms_p50": percentile(barge_ms, 50),
        "no_reply_playing": sum(not r["reply_playing"] for r in of("c") + of("d")),
        "engine_missed_reply": sum(
            not r.get("engine_playing", True) for r in over["c"] + over["d"]
        ),
        "overlapped": sum(r["reply_playing"] for r in holds + complete),
    }


# -- running -----------------------------------------------------------------------------------


@dataclass
class PolicyRun:
    policy: Policy
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    seconds: float


def prepare(utterances: list[Utterance], folder: Path, gap_s: float) -> list[dict[str, Any]]:
    """Speak every utterance into ``folder``; the scripted microphone's cues."""
    script = []
    for index, utterance in enumerate(utterances):
        path = folder / f"{index:03d}-{utterance.id}.wav"
        write_wav(path, render(utterance).samples, RATE)
        if utterance.category in "cd":
            cue = {"pause_s": 0.3, "assistant_s": utterance.assistant_s}
            cue["timeout_s"] = CUE_TIMEOUT_S
        else:
            cue = {"pause_s": gap_s if index else 1.0}
        script.append({"wav": str(path), **cue})
    return script


def _observed_mic(utterances: list[Utterance], label: str) -> type[ScriptedMic]:
    """``test.scripted_mic`` that judges "the reply is playing" by what the speaker does, not
    by the engine's estimate, prints its progress and notes, at each onset, whether a reply
    was playing (and whether the engine thought so).

    A c/d utterance waits for a reply raised since the previous utterance began (not the
    previous one, already heard) whose audio the speaker has been sending for ``assistant_s``
    (it sends 40 ms slices in real time, so a recent send means audio is playing; gaps while
    TTS catches up do not count). The engine's own estimate (``PlaybackLedger.is_playing``)
    takes the time since the reply's first audio as heard, so after such a gap it may think
    a reply that is still being spoken has ended.
    """

    class ObservedMic(ScriptedMic):
        async def setup(self) -> None:
            await super().setup()
            self.reply_playing: list[bool] = []
            self.engine_playing: list[bool] = []
            self._onset_turn = -1
            self._heard_turn, self._heard_s = -1, 0.0

        def _playing(self, turn: int) -> bool:
            """The speaker sent audio of ``turn`` within :data:`PLAYING_GRACE_S`."""
            last = Conversation.of(self.context).playback.last_sent_at(turn)
            playing = last is not None and time.monotonic() - last < PLAYING_GRACE_S
            if turn != self._heard_turn:
                self._heard_turn, self._heard_s = turn, 0.0
            if playing:
                self._heard_s += FRAME_S  # asked once per 20 ms frame while waiting
            return playing

        def _cued(self, cue: Any, waited: float) -> bool:
            turn = self.context.turn
            playing = self._playing(turn)
            if cue.assistant_s is not None and waited < cue.timeout_s:
                heard = self._heard_s if turn > self._onset_turn else 0.0
                if not playing or heard < cue.assistant_s:
                    return False
            # The utterance starts now.
            self._onset_turn = turn
            self.reply_playing.append(playing)
            self.engine_playing.append(Conversation.of(self.context).playback.is_playing(turn))
            done = len(self.reply_playing)
            u = utterances[done - 1]
            print(
                f"[{label}] {done}/{len(utterances)} {u.id} {u.kind} ({u.voice.name}): {u.text!r}",
                file=sys.stderr,
                flush=True,
            )
            return True

    return ObservedMic


def run_policy(
    graph: LoadedGraph,
    policy: Policy,
    utterances: list[Utterance],
    script: list[dict[str, Any]],
    gap_s: float = GAP_S,
) -> PolicyRun:
    """Stream the spoken ``utterances`` (``script``) through ``graph`` with ``policy``."""
    graph = replace_io(
        with_policy(graph, policy),
        ("test.scripted_mic", {"script": script, "tail_s": gap_s}),
        ("audio.file_sink", {"lead_ms": 250}),
    )
    name = next(n for n, node in graph.nodes.items() if node.type_name == "test.scripted_mic")
    observed = replace(graph.nodes[name], node_type=_observed_mic(utterances, policy.label))
    graph = replace(graph, nodes={**graph.nodes, name: observed})
    events = Events()
    started = time.monotonic()
    result = anyio.run(run_chat, graph, events.record)
    seconds = time.monotonic() - started
    mic = next(n for n in result.session.nodes.values() if isinstance(n, ScriptedMic))
    spoken = [
        Spoken(u.id, u.category, u.kind, u.voice.name, u.text, *times, playing, engine, u.pause_ms)
        for u, times, playing, engine in zip(
            utterances, mic.spoken, mic.reply_playing, mic.engine_playing, strict=True
        )
    ]
    records = outcomes(spoken, events)
    return PolicyRun(policy, records, summarize(records), seconds)


def graph_for_bench(graph_path: str, overrides: Iterable[str] = ()) -> LoadedGraph:
    """The graph with replies fit for talking over and waiting out: at most
    :data:`REPLY_TOKENS` tokens (an ``llm`` node with ``max_tokens``), spoken slower
    (:data:`REPLY_LENGTH_SCALE`, a ``tts`` node with ``length_scale``: the small model often
    answers in one short sentence, over before a backchannel 2 s in); ``overrides`` last."""
    graph = load_graph(graph_path, list(overrides))
    bench: list[str] = []
    for node, key, value in (
        ("llm", "max_tokens", REPLY_TOKENS),
        ("tts", "length_scale", REPLY_LENGTH_SCALE),
    ):
        found = graph.nodes.get(node)
        if found is not None and key in found.node_type.Params.model_fields:
            bench.append(f"{node}.params.{key}={value}")
    return load_graph(graph_path, [*bench, *overrides]) if bench else graph


# -- reporting ---------------------------------------------------------------------------------


def _pct(n: int, of: int) -> str:
    return f"{n}/{of} ({100 * n / of:.0f} %)" if of else "n/a"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def table_rows(runs: list[PolicyRun]) -> list[tuple[str, str, list[str]]]:
    """(metric, goal, value per policy)."""
    s = [r.summary for r in runs]
    kinds = sorted({k for x in s for k in x["false_cutoffs_by_kind"]})
    rows = [
        (
            "false cut-offs (a: 200-900 ms mid-turn pause)",
            "<= 2 %",
            [_pct(x["false_cutoffs"], x["holds"]) for x in s],
        ),
        *[
            (
                f"  of which after: {kind}",
                "",
                [_pct(*x["false_cutoffs_by_kind"].get(kind, [0, 0])) for x in s],
            )
            for kind in kinds
        ],
        *[
            (
                f"  spoken by {engine}",
                "",
                [_pct(*x["false_cutoffs_by_engine"].get(engine, [0, 0])) for x in s],
            )
            for engine in sorted({k for x in s for k in x["false_cutoffs_by_engine"]})
        ],
        (
            "commit latency, complete turns (b) p50 / p90 ms",
            "p50 <= 300",
            [f"{_ms(x['commit_ms_p50'])} / {_ms(x['commit_ms_p90'])}" for x in s],
        ),
        ("complete turns committed (b)", "", [f"{x['committed']}/{x['complete']}" for x in s]),
        (
            "  the policy's decision p50 / p90 ms (before speculation's hold)",
            "",
            [f"{_ms(x.get('decision_ms_p50'))} / {_ms(x.get('decision_ms_p90'))}" for x in s],
        ),
        (
            "  holds (a) the policy decided in a pause (the hold kept the turn)",
            "",
            [_pct(x.get("early_decisions", 0), x["holds"]) for x in s],
        ),
        (
            "  final transcript p50 / p90 ms after end of speech (b)",
            "",
            [f"{_ms(x['transcript_ms_p50'])} / {_ms(x['transcript_ms_p90'])}" for x in s],
        ),
        (
            "voice-to-voice p50 ms (b: end of speech -> first audio sent)",
            "",
            [f"{_ms(x['voice_to_voice_ms_p50'])} ({x['voice_to_voice_n']})" for x in s],
        ),
        (
            "false barge-ins (c: backchannels, noise during a reply)",
            "0",
            [_pct(x["false_barge_ins"], x["backchannels"]) for x in s],
        ),
        (
            "  c that became a user turn",
            "0",
            [f"{x['backchannel_turns']}/{x['backchannels']}" for x in s],
        ),
        (
            "missed barge-ins (d: real interruptions)",
            "0",
            [_pct(x["missed_barge_ins"], x["barge_ins"]) for x in s],
        ),
        ("barge-in decision p50 ms after onset (d)", "", [_ms(x["barge_in_ms_p50"]) for x in s]),
        (
            "c/d over a reply the engine thought had ended",
            "",
            [f"{x['engine_missed_reply']}/{x['backchannels'] + x['barge_ins']}" for x in s],
        ),
        (
            "left out: c/d with no reply playing; a/b over a reply",
            "",
            [f"{x['no_reply_playing']}; {x['overlapped']}" for x in s],
        ),
        ("run time", "", [f"{r.seconds:.0f} s" for r in runs]),
    ]
    return rows


def render_table(runs: list[PolicyRun], markdown: bool) -> str:
    rows = table_rows(runs)
    labels = [r.policy.label for r in runs]
    if markdown:
        lines = [
            f"| metric | goal | {' | '.join(labels)} |",
            "|---" * (len(labels) + 2) + "|",
            *(f"| {m} | {g} | {' | '.join(v)} |" for m, g, v in rows),
        ]
        return "\n".join(lines)
    width = max(len(m) for m, _, _ in rows) + 2
    cols = [max(len(label), *(len(v[i]) for _, _, v in rows)) + 2 for i, label in enumerate(labels)]
    head = " " * width + "".join(label.ljust(c) for label, c in zip(labels, cols, strict=True))
    body = [
        m.ljust(width) + "".join(v.ljust(c) for v, c in zip(vals, cols, strict=True))
        for m, _, vals in rows
    ]
    return "\n".join([head, *body])


def plot(runs: list[PolicyRun], path: str) -> bool:
    """Bars per policy: false cut-offs, commit latency and voice-to-voice, barge-in errors."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.policy.label for r in runs]
    s = [r.summary for r in runs]
    x = np.arange(len(runs))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(x, [100 * (v["false_cutoff_rate"] or 0) for v in s], color="tab:red")
    axes[0].axhline(2, color="grey", linestyle="--", linewidth=1)
    axes[0].set_title("false cut-offs (a), %")
    for offset, key, name in (
        (-0.27, "commit_ms_p50", "commit p50"),
        (0.0, "commit_ms_p90", "commit p90"),
        (0.27, "voice_to_voice_ms_p50", "voice-to-voice p50"),
    ):
        axes[1].bar(x + offset, [v[key] or 0 for v in s], width=0.27, label=name)
    axes[1].axhline(300, color="grey", linestyle="--", linewidth=1)
    axes[1].set_title("complete turns (b), ms after end of speech")
    axes[1].legend(fontsize=8)
    axes[2].bar(x - 0.2, [v["false_barge_ins"] for v in s], width=0.4, label="false (c)")
    axes[2].bar(x + 0.2, [v["missed_barge_ins"] for v in s], width=0.4, label="missed (d)")
    axes[2].set_title("barge-in errors")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> str:
    return f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"


def main(
    graph_path: str = "default",
    extra: Sequence[str] = (),
    utterances: int | None = None,
    markdown: bool = False,
    json_path: str | None = None,
    plot_path: str | None = None,
    defaults: bool = True,
    overrides: Sequence[str] = (),
    gap_s: float = GAP_S,
) -> int:
    try:
        policies = (default_policies() if defaults else []) + [parse_policy(e) for e in extra]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not policies:
        print("error: no turn policy to run (give --turn TYPE)", file=sys.stderr)
        return 2
    graph = graph_for_bench(graph_path, overrides)
    corpus: Corpus = subsample(build_corpus(), utterances)
    spoken = corpus.utterances
    print(
        f"bench turns: {len(spoken)} utterances x {len(policies)} policies "
        f"({', '.join(p.label for p in policies)}); speaking the corpus...",
        file=sys.stderr,
        flush=True,
    )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        script = prepare(spoken, Path(tmp), gap_s)
        for policy in policies:
            run = run_policy(graph, policy, spoken, script, gap_s)
            runs.append(run)
            print(f"[{policy.label}] done in {run.seconds:.0f} s", file=sys.stderr, flush=True)
    full = len(build_corpus().utterances)
    sample = f"{len(spoken)} of {full} utterances" + (" (subsample)" if len(spoken) < full else "")
    title = f"turns benchmark: {graph_path}, {sample}, {machine()}, {date.today()}"
    print(f"{title}\n" + ("\n" if markdown else "") + render_table(runs, markdown))
    if json_path:
        report = {
            "title": title,
            "graph": graph_path,
            "machine": machine(),
            "date": str(date.today()),
            "utterances": len(spoken),
            "corpus": full,
            "policies": [
                {
                    "label": r.policy.label,
                    "policy": asdict(r.policy),
                    "seconds": r.seconds,
                    "summary": r.summary,
                    "utterances": r.records,
                }
                for r in runs
            ],
        }
        Path(json_path).write_text(json.dumps(report, indent=2))
    if plot_path and not plot(runs, plot_path):
        print("--plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    return 0
