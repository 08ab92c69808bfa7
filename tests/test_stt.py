"""stt.whisper behind vad.silero on espeak-ng speech: finals, partials, model resolution."""

from __future__ import annotations

import time

import pytest
from harness import final_texts, run_graph, transcribe
from speech_audio import conversation, wer

from flowvoice.node import NodeSetupError
from flowvoice.nodes.stt import _Whisper, encoder_window_frames, resolve_model
from flowvoice.runtime.session import SessionError

pytestmark = pytest.mark.anyio

TEXTS = [
    "What is the capital of France?",
    "Please turn on the lights in the kitchen and close the window.",
    "I would like to book a table for two people tomorrow evening.",
]


@pytest.mark.parametrize(
    ("rate", "noise_db"), [(16000, None), (48000, -50)], ids=["16k", "48k-noise"]
)
async def test_final_transcripts_match(rate, noise_db):
    samples, _ = conversation(TEXTS, gap_s=1.0, sample_rate=rate, noise_db=noise_db)
    result = await transcribe(samples, rate)
    texts = final_texts(result)
    assert len(texts) == len(TEXTS), texts
    for ref, hyp in zip(TEXTS, texts, strict=True):
        assert wer(ref, hyp) <= 0.15, (ref, hyp)
    assert [e["text"] for e in result.events_of("final_transcript")] == texts
    assert not result.events_of("partial_transcript")


async def test_partials_while_speaking_then_final():
    samples, _ = conversation(TEXTS[1:2], lead_s=0.3, tail_s=0.8)
    result = await transcribe(samples, 16000, realtime=True, stt={"partial_interval_ms": 700})
    transcripts = result.frames("stt.transcript")
    partials = [t for t in transcripts if not t.final]
    assert partials, transcripts
    assert [t.final for t in transcripts].count(True) == 1 and transcripts[-1].final, transcripts
    assert wer(TEXTS[1], transcripts[-1].text) <= 0.15, transcripts
    assert [e["text"] for e in result.events_of("partial_transcript")] == [p.text for p in partials]
    # the final follows the speech end by the hang-over plus one transcription
    end = [e for e in result.frames("vad.events") if e.kind == "end"][-1]
    latency_s = (transcripts[-1].t_ns - end.t_ns) / 1e9
    print(f"speech end -> final transcript: {latency_s * 1000:.0f} ms (incl. 400 ms hang-over)")
    assert latency_s < 3.0, transcripts  # ~0.8 s on an idle 2-core CPU, 1-1.5 s when shared


def test_model_names_resolve_to_local_paths(tmp_path):
    assert (resolve_model("tiny.en") / "model.bin").exists()
    assert resolve_model(str(tmp_path)) == tmp_path
    for name, hint in [
        ("large-v3", "huggingface-cli download Systran/faster-whisper-large-v3"),
        ("someone/whisper-ct2", "huggingface-cli download someone/whisper-ct2"),
        ("./missing-model-dir", "does not exist"),
    ]:
        with pytest.raises(NodeSetupError, match=hint):
            resolve_model(name)


async def test_unknown_model_is_a_clear_error_fast():
    start = time.monotonic()
    with pytest.raises(SessionError) as info:
        await run_graph({"stt": ("stt.whisper", {"model": "no-such-model"})}, [], [], ["stt.audio"])
    assert time.monotonic() - start < 5
    assert info.value.node == "stt" and isinstance(info.value.error, NodeSetupError)
    assert "no-such-model" in str(info.value) and "huggingface-cli download" in str(info.value)


def count_transcriptions(monkeypatch) -> list[int]:
    """Counts Whisper runs from now on (one-element list)."""
    calls = [0]
    original = _Whisper.transcribe

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_Whisper, "transcribe", counted)
    return calls


async def test_the_pause_transcription_is_the_final_when_the_speech_ends(monkeypatch):
    samples, _ = conversation(TEXTS[2:], lead_s=0.3, tail_s=1.0)
    calls = count_transcriptions(monkeypatch)
    result = await transcribe(samples, 16000, realtime=True, vad={"pause_ms": 64})
    *stable, final = result.frames("stt.transcript")
    assert final.final and wer(TEXTS[2], final.text) <= 0.15, final
    assert calls[0] == 1, "the final reused the transcription made at the pause"
    # emitted as a stable partial if it was ready before the end (~0.2 s vs 0.4 s when idle)
    assert all(s.stable and s.text == final.text for s in stable), stable


async def test_speech_that_resumes_after_a_pause_is_transcribed_whole(monkeypatch):
    texts = ["Please turn on the lights", "in the kitchen."]
    samples, _ = conversation(texts, gap_s=0.3, lead_s=0.3, tail_s=1.0)
    calls = count_transcriptions(monkeypatch)
    result = await transcribe(samples, 16000, realtime=True, vad={"min_silence_ms": 600})
    assert [e.kind for e in result.frames("vad.events")].count("resume") >= 1
    (final,) = final_texts(result)
    assert wer(" ".join(texts), final) <= 0.15, final
    assert calls[0] >= 2, "the pause's transcription was not reused for the whole"


def test_encoder_window_is_padded_to_the_setting_or_to_whisper_own():
    second = 16000
    assert encoder_window_frames(2 * second, 15) == 1500
    assert encoder_window_frames(15 * second, 15) == 1500
    assert encoder_window_frames(16 * second, 15) == 3000  # longer: Whisper's own 30 s
    assert encoder_window_frames(2 * second, 30) == 3000


async def test_whisper_own_window_gives_the_same_text():
    samples, _ = conversation(TEXTS[1:2])
    fitted = await transcribe(samples, 16000)
    full = await transcribe(samples, 16000, stt={"encoder_window_s": 30})
    assert wer(final_texts(full)[0], final_texts(fitted)[0]) <= 0.15, (fitted, full)
