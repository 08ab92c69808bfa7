"""vad.silero and vad.webrtc on espeak-ng conversations: each utterance found within 150 ms."""

from __future__ import annotations

import numpy as np
import pytest
from harness import audio_steps, run_node
from speech_audio import conversation

from flowvoice.frames import AudioFrame, VADEvent

pytestmark = pytest.mark.anyio

TEXTS = [
    "What is the capital of France?",
    "Please turn on the lights in the kitchen and close the window.",
    "I would like to book a table for two people tomorrow evening.",
]
TOLERANCE_S = 0.15


async def detect(node_type: str, samples: np.ndarray, rate: int, frame_ms: float = 20, **params):
    result = await run_node(node_type, params, audio_steps("audio", samples, rate, frame_ms))
    return result.frames("events"), result.frames("audio")


def segments(events: list[VADEvent]) -> list[tuple[float, float]]:
    """(start, end) of each segment, after checking the event grammar: start, then pause and
    resume alternating, then end; an end right after a pause is where the pause was."""
    found, start, paused = [], None, None
    for event in events:
        if event.kind == "start":
            assert start is None, events
            start = event
        elif event.kind == "pause":
            assert start is not None and paused is None, events
            paused = event
        elif event.kind == "resume":
            assert paused is not None and event.stream_s > paused.stream_s, events
            paused = None
        else:
            assert start is not None, events
            assert paused is None or paused.stream_s == event.stream_s, events
            found.append((start.stream_s, event.stream_s))
            start = paused = None
    assert start is None, events
    return found


def assert_bounds(found: list[tuple[float, float]], truth: list[tuple[float, float]]) -> None:
    assert len(found) == len(truth), (found, truth)
    for (start, end), (true_start, true_end) in zip(found, truth, strict=True):
        assert abs(start - true_start) <= TOLERANCE_S, (found, truth)
        assert abs(end - true_end) <= TOLERANCE_S, (found, truth)


@pytest.mark.parametrize("node_type", ["vad.silero", "vad.webrtc"])
@pytest.mark.parametrize(
    ("rate", "noise_db", "frame_ms"),
    [(16000, None, 20), (48000, None, 10), (16000, -50, 20), (16000, None, 45)],
    ids=["16k", "48k", "noise", "odd-frames"],
)
async def test_finds_each_utterance(node_type, rate, noise_db, frame_ms):
    samples, truth = conversation(TEXTS, gap_s=1.2, sample_rate=rate, noise_db=noise_db)
    events, audio = await detect(node_type, samples, rate, frame_ms, min_silence_ms=400)
    assert_bounds(segments(events), truth)
    assert all(isinstance(f, AudioFrame) and f.sample_rate == 16000 for f in audio)
    passed = sum(len(f.samples) for f in audio)
    assert abs(passed - len(samples) * 16000 // rate) <= 16, (passed, len(samples))


async def test_event_time_is_the_frame_of_the_last_speech():
    samples, truth = conversation(TEXTS[:1], sample_rate=16000)
    frames: list[AudioFrame] = []

    def script():
        step = 320
        for offset in range(0, len(samples), step):
            frame = AudioFrame(samples=samples[offset : offset + step], sample_rate=16000)
            frames.append(frame)
            yield "audio", frame

    result = await run_node("vad.silero", {"min_silence_ms": 500, "pause_ms": 0}, script())
    start, end = result.frames("events")
    assert start.t_ns == frames[int(start.stream_s * 16000) // 320].t_ns
    assert end.t_ns == frames[(int(end.stream_s * 16000) - 1) // 320].t_ns
    # the end was decided ~500 ms of audio later, but is stamped at the last speech frame
    assert end.t_ns < frames[int((end.stream_s + 0.4) * 16000) // 320].t_ns


async def test_short_pause_does_not_split_with_long_min_silence():
    samples, truth = conversation(["Please turn on the lights", "in the kitchen."], gap_s=0.3)
    events, _ = await detect("vad.silero", samples, 16000, min_silence_ms=600)
    assert_bounds(segments(events), [(truth[0][0], truth[1][1])])


async def test_stream_ending_in_speech_ends_the_segment():
    samples, truth = conversation(TEXTS[:1], tail_s=0.0)
    events, _ = await detect("vad.webrtc", samples, 16000)
    assert [e.kind for e in events] == ["start", "end"]
    assert abs(events[1].stream_s - truth[0][1]) <= TOLERANCE_S


@pytest.mark.parametrize("node_type", ["vad.silero", "vad.webrtc"])
async def test_pause_comes_soon_after_the_speech_and_resume_when_it_goes_on(node_type):
    samples, truth = conversation(["Please turn on the lights", "in the kitchen."], gap_s=0.3)
    events, _ = await detect(node_type, samples, 16000, min_silence_ms=600, pause_ms=64)
    assert_bounds(segments(events), [(truth[0][0], truth[1][1])])
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["start", "pause"] and kinds[-2:] == ["pause", "end"], kinds
    assert "resume" in kinds, kinds  # the 0.3 s gap paused the speech, which went on
    first_pause = events[1]
    assert abs(first_pause.stream_s - truth[0][1]) <= TOLERANCE_S, (events, truth)
    # decided a few windows into the silence, long before the end would be
    pause_seen = events[2].stream_s if kinds[2] == "resume" else None
    assert pause_seen is not None and pause_seen - first_pause.stream_s >= 0.064, events


async def test_no_pause_events_when_disabled():
    samples, _ = conversation(["Please turn on the lights", "in the kitchen."], gap_s=0.3)
    events, _ = await detect("vad.silero", samples, 16000, min_silence_ms=600, pause_ms=0)
    assert [e.kind for e in events] == ["start", "end"]
