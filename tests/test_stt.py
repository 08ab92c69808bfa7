"""stt.whisper behind vad.silero on espeak-ng speech: finals, partials, model resolution."""

from __future__ import annotations

import time

import pytest
from harness import final_texts, run_graph, transcribe
from speech_audio import conversation, wer

from flowvoice.node import NodeSetupError
from flowvoice.nodes.stt import resolve_model
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
