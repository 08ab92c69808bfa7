"""stt.whisper behind vad.silero on espeak-ng speech: finals, partials, model resolution,
bounded decoding (temperature, token budget, deadline) and the language param."""

from __future__ import annotations

import time

import numpy as np
import pytest
from harness import final_texts, run_graph, transcribe
from pydantic import ValidationError
from speech_audio import conversation, speak, wer

from flowvoice.node import NodeSetupError
from flowvoice.nodes.stt import (
    FALLBACK_TEMPERATURES,
    Decoding,
    WhisperParams,
    _Temperatures,
    _Whisper,
    check_language,
    drop_repeats,
    encoder_window_frames,
    resolve_model,
    token_budget,
)
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


#: Long enough (~7 s) that a partial started early finishes before the speech ends, even when
#: a busy machine makes each transcription take a second or more.
LONG = (
    "Please turn on the lights in the kitchen and close the window, and then play some quiet "
    "music in the living room for about an hour."
)


async def test_partials_while_speaking_then_final():
    samples, _ = conversation([LONG], lead_s=0.3, tail_s=0.8)
    result = await transcribe(samples, 16000, realtime=True, stt={"partial_interval_ms": 700})
    transcripts = result.frames("stt.transcript")
    partials = [t for t in transcripts if not t.final]
    assert partials, transcripts
    assert [t.final for t in transcripts].count(True) == 1 and transcripts[-1].final, transcripts
    assert wer(LONG, transcripts[-1].text) <= 0.3, transcripts
    assert [e["text"] for e in result.events_of("partial_transcript")] == [p.text for p in partials]
    # the final follows the speech end by the hang-over plus one transcription
    end = [e for e in result.frames("vad.events") if e.kind == "end"][-1]
    latency_s = (transcripts[-1].t_ns - end.t_ns) / 1e9
    print(f"speech end -> final transcript: {latency_s * 1000:.0f} ms (incl. 400 ms hang-over)")
    # ~0.8 s on an idle 2-core CPU, 1-1.5 s when shared; generous for a loaded CI machine
    assert latency_s < 10.0, transcripts


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


def test_encoder_window_is_fitted_to_the_utterance():
    second = 16000
    assert encoder_window_frames(2 * second, 8, 5) == 800  # at least the shortest window
    assert encoder_window_frames(6 * second, 8, 5) == 1100  # the utterance and its padding
    assert encoder_window_frames(28 * second, 8, 5) == 3000  # at most Whisper's own 30 s
    assert encoder_window_frames(2 * second, 15, 0) == 1500  # a fixed window
    assert encoder_window_frames(2 * second, 30, 5) == 3000


def test_a_repetition_loop_is_cut_to_the_phrase():
    assert drop_repeats("Set a timer. Set a timer. Set a") == "Set a timer."
    looped = "Play some quiet music while I read. Play some quiet music wh"
    assert drop_repeats(looped) == "Play some quiet music while I read."
    for kept in ["no no no", "I want to go, I want to stay", "Bye bye.", "", "one two three"]:
        assert drop_repeats(kept) == kept


async def test_whisper_own_window_gives_the_same_text():
    samples, _ = conversation(TEXTS[1:2])
    fitted = await transcribe(samples, 16000)
    full = await transcribe(samples, 16000, stt={"encoder_window_s": 30})
    assert wer(final_texts(full)[0], final_texts(fitted)[0]) <= 0.15, (fitted, full)


# -- bounded decoding ------------------------------------------------------------------------


def test_decoding_params_validate():
    assert WhisperParams().decoding() == Decoding(
        beam_size=1, language=None, temperature=(0.0,), max_decode_s=1.0, window_s=10, padding_s=5
    )
    capped = WhisperParams(temperature=[0, 0.4], max_decode_s=None, language="en").decoding()
    assert capped.temperature == (0.0, 0.4) and capped.max_decode_s is None
    assert capped.language == "en"
    assert WhisperParams(temperature=0.2).decoding().temperature == (0.2,)
    for bad in [
        {"temperature": 1.5},
        {"temperature": []},
        {"temperature": [0.0] * 7},
        {"temperature": [0, -0.2]},
        {"max_decode_s": 0},
        {"max_decode_s": -1},
    ]:
        with pytest.raises(ValidationError):
            WhisperParams.model_validate(bad)


def test_token_budget_follows_the_audio_within_whisper_context():
    second = 16000
    assert token_budget(2 * second, 0) < token_budget(10 * second, 0) < 448
    assert token_budget(60 * second, 0) == token_budget(30 * second, 0)  # per 30 s window
    # a long prompt (faster-whisper keeps its last 223 tokens) leaves the rest of the 448
    assert token_budget(30 * second, 500) == 448 - (1 + 223 + 1 + 1)
    assert token_budget(30 * second, 500, multilingual=True) == 448 - (1 + 223 + 3 + 1)


def test_fallback_temperatures_stop_at_the_deadline():
    assert list(_Temperatures(FALLBACK_TEMPERATURES, None)) == list(FALLBACK_TEMPERATURES)
    assert list(_Temperatures(FALLBACK_TEMPERATURES, time.monotonic() + 60)) == list(
        FALLBACK_TEMPERATURES
    )
    assert list(_Temperatures(FALLBACK_TEMPERATURES, time.monotonic() - 1)) == [0.0]


@pytest.fixture(scope="module")
def whisper():
    return _Whisper(resolve_model("tiny.en"), "cpu", "int8", 2)


def count_decodes(monkeypatch, whisper) -> list[int]:
    """Counts CTranslate2 decoder runs (one per window and temperature) from now on."""
    calls = [0]
    model = whisper.model.model
    original = model.generate

    class Counting:
        def __getattr__(self, name):
            return getattr(model, name)

        def generate(self, *args, **kwargs):
            calls[0] += 1
            return original(*args, **kwargs)

    monkeypatch.setattr(whisper.model, "model", Counting())
    return calls


#: The first 0.7 s of a sentence, cut mid-word: an unlikely decode that faster-whisper's
#: default re-decodes at higher temperatures.
CUT = ("Set a timer for fifteen minutes.", 0.7)


def test_a_past_deadline_keeps_the_first_decode(monkeypatch, whisper):
    text, seconds = CUT
    audio = np.concatenate([np.zeros(8000, np.int16), speak(text)[: int(seconds * 16000)]])
    calls = count_decodes(monkeypatch, whisper)
    unbounded = Decoding(temperature=FALLBACK_TEMPERATURES, max_decode_s=None)
    whisper.transcribe(audio, unbounded)
    assert calls[0] > 1, "precondition: this clip makes faster-whisper fall back"
    calls[0] = 0
    assert isinstance(
        whisper.transcribe(audio, Decoding(temperature=FALLBACK_TEMPERATURES, max_decode_s=0.01)),
        str,
    )
    assert calls[0] == 1


def test_a_past_deadline_stops_before_the_next_window(monkeypatch, whisper):
    first, second = speak(TEXTS[0]), speak(TEXTS[1])
    lead = np.zeros(8000, np.int16)
    gap = np.zeros(32 * 16000 - len(lead) - len(first), np.int16)  # second one after 32 s
    audio = np.concatenate([lead, first, gap, second])
    calls = count_decodes(monkeypatch, whisper)
    whole = whisper.transcribe(audio, Decoding(max_decode_s=None))
    assert calls[0] == 2 and wer(" ".join(TEXTS[:2]), whole) <= 0.15, whole
    calls[0] = 0
    partial = whisper.transcribe(audio, Decoding(max_decode_s=0.01))
    assert calls[0] == 1 and wer(TEXTS[0], partial) <= 0.15, partial


async def test_a_tiny_deadline_still_gives_finals():
    samples, _ = conversation(TEXTS[:2], gap_s=1.0)
    stt = {"max_decode_s": 0.01, "temperature": list(FALLBACK_TEMPERATURES)}
    texts = final_texts(await transcribe(samples, 16000, stt=stt))
    assert len(texts) == 2 and all(texts), texts


# -- language ------------------------------------------------------------------------------


async def test_english_only_model_takes_en():
    samples, _ = conversation(TEXTS[:1])
    (text,) = final_texts(await transcribe(samples, 16000, stt={"language": "en"}))
    assert wer(TEXTS[0], text) <= 0.15, text


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("de", "'tiny.en' is English-only: language 'de' needs a multilingual model"),
        ("xx", "'xx' is not a Whisper language code"),
    ],
)
async def test_a_language_the_model_cannot_take_fails_at_setup(language, message):
    with pytest.raises(SessionError) as info:
        await run_graph({"stt": ("stt.whisper", {"language": language})}, [], [], ["stt.audio"])
    assert info.value.node == "stt" and isinstance(info.value.error, NodeSetupError)
    assert message in str(info.value)


def test_multilingual_models_take_any_whisper_language():
    for language in (None, "en", "de", "ja"):
        check_language(language, multilingual=True, model="base")
    with pytest.raises(NodeSetupError, match="not a Whisper language code"):
        check_language("german", multilingual=True, model="base")
