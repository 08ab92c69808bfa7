"""``flowvoice bench bargein``: how fast an interrupted reply stops, and what speculation saves.

Stop latency: a scripted real-time microphone asks a question, then interrupts each reply
0.3 s into its audio, ``interruptions`` times. For each barge-in: the turn detector's
qualifying decision -> the last audio frame of the interrupted turn sent, and the onset of
the interrupting speech -> that last frame (the speaker pauses at onset, so this one shows
what the listener hears). Negative values mean the audio had already stopped.

Speculation: the e2e benchmark's questions, voice-to-voice with ``speculate`` off and on:
the p50 it saves and how many questions were answered sooner with it (a timing comparison,
so it lives here and not in the tests, which check that the speculated reply is released).
"""

from __future__ import annotations

import platform
import tempfile
from datetime import date
from pathlib import Path

import anyio
import numpy as np

from flowvoice.bench.e2e import QUESTIONS, RATE, speak
from flowvoice.bench.e2e import measure as measure_e2e
from flowvoice.bench.wer import wer
from flowvoice.chat import replace_io, run_chat
from flowvoice.conversation import Conversation
from flowvoice.graph.spec import load_graph
from flowvoice.nodes.audio import write_wav
from flowvoice.testing.scripted_mic import ScriptedMic

# Plain questions: the base model answers them with a full sentence worth interrupting.
INTERRUPTIONS = (
    "What is the capital of Germany?",
    "What is the capital of Italy?",
    "What is the capital of Spain?",
    "What is the capital of Japan?",
    "What is the capital of Egypt?",
)
SLOW_VOICE = "tts.params.length_scale=2.0"  # replies long enough to interrupt mid-sentence


def measure_stops(graph_path: str, interruptions: int) -> tuple[list[float], list[float]]:
    """(decision -> last frame ms, onset -> last frame ms) for each barge-in."""
    with tempfile.TemporaryDirectory() as tmp:
        lines = [QUESTIONS[0]] + [
            INTERRUPTIONS[i % len(INTERRUPTIONS)] for i in range(interruptions)
        ]
        script = []
        for index, line in enumerate(lines):
            path = Path(tmp) / f"{index}.wav"
            write_wav(path, speak(line), RATE)
            script.append({"wav": str(path), "assistant_s": 0.3 if index else None})
        graph = replace_io(
            load_graph(graph_path, [SLOW_VOICE]),
            ("test.scripted_mic", {"script": script, "tail_s": 6.0}),
            ("audio.file_sink", {"lead_ms": 250}),
        )
        result = anyio.run(run_chat, graph)
    mic = next(n for n in result.session.nodes.values() if isinstance(n, ScriptedMic))
    onsets = [start for start, _ in mic.spoken[1:]]
    decisions, from_onset = [], []
    for event in (e for e in result.events if e["type"] == "barge_in"):
        last = Conversation.of_session(result.session).playback.last_sent_at(event["turn"])
        if last is None:
            continue
        last_ns = last * 1e9
        decisions.append((last_ns - event["decided_ns"]) / 1e6)
        onset = max((t for t in onsets if t <= event["decided_ns"]), default=None)
        if onset is not None:
            from_onset.append((last_ns - onset) / 1e6)
    return decisions, from_onset


def voice_to_voice(graph_path: str, speculate: bool, questions: int) -> dict[str, float]:
    """Voice-to-voice ms by question asked (each turn matched to the question its transcript
    is closest to; questions without a timed reply left out)."""
    overrides = [f"turn.params.speculate={str(speculate).lower()}"]
    asked = QUESTIONS[:questions]
    turns, _ = measure_e2e(graph_path, asked, overrides=overrides)
    return {
        min(asked, key=lambda q: wer(q, turn.user)): turn.latency_ms["first_audio_sent"]
        for turn in turns
        if "first_audio_sent" in turn.latency_ms
    }


def sooner(plain: dict[str, float], speculative: dict[str, float]) -> tuple[int, int]:
    """(questions answered sooner with speculation, questions timed both ways)."""
    both = plain.keys() & speculative.keys()
    return sum(speculative[q] < plain[q] for q in both), len(both)


def main(
    graph_path: str = "graphs/default.yaml",
    interruptions: int = 10,
    questions: int = 5,
    markdown: bool = False,
) -> int:
    decisions, from_onset = measure_stops(graph_path, interruptions)
    plain_by_question = voice_to_voice(graph_path, False, questions)
    speculative_by_question = voice_to_voice(graph_path, True, questions)
    plain, speculative = list(plain_by_question.values()), list(speculative_by_question.values())
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )

    def stats(values: list[float]) -> str:
        if not values:
            return "n/a"
        return f"p50 {np.percentile(values, 50):.0f} ms, max {max(values):.0f} ms ({len(values)})"

    rows = [
        ("stop: decision -> last audio frame sent", stats(decisions)),
        ("stop: speech onset -> last audio frame sent", stats(from_onset)),
        ("voice-to-voice, speculation off", stats(plain)),
        ("voice-to-voice, speculation on", stats(speculative)),
    ]
    if plain and speculative:
        saved = np.percentile(plain, 50) - np.percentile(speculative, 50)
        rows.append(("speculation saves (p50)", f"{saved:.0f} ms"))
        faster, timed = sooner(plain_by_question, speculative_by_question)
        rows.append(("questions answered sooner with speculation", f"{faster} of {timed}"))
    title = f"barge-in benchmark: {graph_path}, {machine}, {date.today()}"
    if markdown:
        print(f"{title}\n\n| metric | value |\n|---|---|")
        print("\n".join(f"| {name} | {value} |" for name, value in rows))
    else:
        print(title)
        print("\n".join(f"  {name:<46} {value}" for name, value in rows))
    return 0 if decisions else 1
