"""flowvoice's OpenAI-compatible speech endpoints, with the official ``openai`` SDK as the
client: a real uvicorn on 127.0.0.1 serving the default graph's Whisper and Piper."""

from __future__ import annotations

import io
import json
import socket
import time
import wave

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_strategies import json_values
from serving import ROOT, running_server
from speech_audio import speak, wer, write_wav

from flowvoice.graph.spec import load_graph
from flowvoice.nodes.stt_remote import wav_bytes
from flowvoice.server import create_app

openai = pytest.importorskip("openai")

QUESTION = "What is the capital of France?"
SPOKEN = (
    "Good morning. The weather today is sunny and warm. Later this afternoon a light breeze "
    "will come in from the west. Tomorrow will be cooler, with some rain in the evening."
)


@pytest.fixture(scope="module")
def server():
    app = create_app(load_graph(ROOT / "graphs" / "default.yaml"), token="secret-token")
    with running_server(app) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(api_key="secret-token", base_url=f"{server.url}/v1", max_retries=0)


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("speech") / "question.wav"
    write_wav(path, speak(QUESTION, 22050), 22050)  # resampled to 16 kHz by the server
    return path


def metric(server, name: str, endpoint: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    prefix = f'{name}{{endpoint="{endpoint}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix)).split()[-1])


def test_models_and_voices_are_listed(client, server):
    assert {m.id for m in client.models.list()} == {
        "whisper-1",
        "stt.whisper",
        "tts-1",
        "tts.piper",
    }
    voices = httpx.get(
        f"{server.url}/v1/audio/voices", headers={"Authorization": "Bearer secret-token"}
    ).json()
    assert voices == {"voices": ["default", "en_US-joe-medium"]}


def test_a_spoken_wav_is_transcribed(client, question_wav):
    with question_wav.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, language="en")
    assert wer(QUESTION, result.text) <= 0.15, result.text
    with question_wav.open("rb") as f:
        text = client.audio.transcriptions.create(
            model="stt.whisper", file=f, response_format="text"
        )
    assert wer(QUESTION, text) <= 0.15, text


def test_a_spoken_wav_is_transcribed_as_a_stream(client, question_wav):
    with question_wav.open("rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and "transcript.text.delta" in kinds, kinds
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas == events[-1].text
    assert wer(QUESTION, events[-1].text) <= 0.15, events[-1].text


@pytest.mark.parametrize("response_format", ["pcm", "wav"])
def test_speech_streams_before_synthesis_ends_and_transcribes_back(client, server, response_format):
    chunks, active_at_first_chunk = [], None
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="default", input=SPOKEN, response_format=response_format
    ) as response:
        for chunk in response.iter_bytes():
            if active_at_first_chunk is None:
                # the client has the first audio while the server is still synthesizing
                active_at_first_chunk = metric(server, "flowvoice_speech_active", "speech")
            chunks.append(chunk)
        content_type = response.headers["content-type"]
    assert active_at_first_chunk == 1
    assert len(chunks) > 1
    data = b"".join(chunks)
    if response_format == "pcm":
        assert content_type == "audio/pcm; rate=24000"
        samples, rate = np.frombuffer(data, "<i2"), 24000
    else:
        assert content_type == "audio/wav"
        with wave.open(io.BytesIO(data)) as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
        assert rate == 22050  # Piper's own rate
    assert 5 < len(samples) / rate < 30
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("reply.wav", wav_bytes(samples, rate), "audio/wav")
    ).text
    assert wer(SPOKEN, text) <= 0.25, text


def test_a_client_that_leaves_cancels_the_synthesis(client, server):
    before = metric(server, "flowvoice_speech_cancelled_total", "speech")
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="default", input=SPOKEN * 4, response_format="pcm"
    ) as response:
        next(response.iter_bytes())
    deadline = time.monotonic() + 20
    while metric(server, "flowvoice_speech_active", "speech") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server, "flowvoice_speech_active", "speech") == 0
    assert metric(server, "flowvoice_speech_cancelled_total", "speech") == before + 1


def expect_error(call, status: int, *words: str) -> str:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    assert caught.value.status_code == status, caught.value
    message = caught.value.message
    for word in words:
        assert word in message, message
    return message


def test_bad_transcription_requests_get_4xx_with_a_clear_message(client, server, question_wav):
    transcribe = client.audio.transcriptions.create
    audio = question_wav.read_bytes()
    expect_error(
        lambda: transcribe(model="whisper-1", file=("a.txt", b"not audio at all", "text/plain")),
        400,
        "not a WAV file",
    )
    expect_error(lambda: transcribe(model="whisper-1", file=("a.wav", b"", "audio/wav")), 400)
    expect_error(
        lambda: transcribe(model="whisper-2", file=("a.wav", audio, "audio/wav")),
        404,
        "whisper-2",
        "whisper-1",
    )
    expect_error(
        lambda: transcribe(
            model="whisper-1", file=("a.wav", audio, "audio/wav"), response_format="srt"
        ),
        400,
        "json",
    )
    expect_error(
        lambda: transcribe(model="whisper-1", file=("a.wav", audio, "audio/wav"), language="de"),
        400,
        "English-only",
    )
    headers = {"Authorization": "Bearer secret-token"}
    no_file = httpx.post(
        f"{server.url}/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"x": b""},
        headers=headers,
    )  # fmt: skip
    assert no_file.status_code == 400 and "'file' is required" in no_file.text, no_file.text
    not_multipart = httpx.post(
        f"{server.url}/v1/audio/transcriptions", json={"model": "whisper-1"}, headers=headers
    )
    assert not_multipart.status_code == 400 and "multipart" in not_multipart.text


def test_a_huge_upload_is_refused_before_it_is_read(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer secret-token\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 300000000\r\n\r\n--x\r\n"
        )
        reply = b""
        while b"bytes" not in reply and (chunk := sock.recv(4096)):  # to the body, or EOF
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "limit is 26214400 bytes" in reply


def test_bad_speech_requests_get_4xx_with_a_clear_message(client):
    speak_ = client.audio.speech.create
    expect_error(lambda: speak_(model="tts-1", voice="nova", input="Hi."), 400, "nova", "default")
    expect_error(lambda: speak_(model="tts-1", voice="default", input="  "), 400, "input")
    expect_error(lambda: speak_(model="tts-9", voice="default", input="Hi."), 404, "tts-1")
    expect_error(lambda: speak_(model="tts-1", voice="default", input="x" * 5000), 400, "4096")
    expect_error(
        lambda: speak_(model="tts-1", voice="default", input="Hi.", response_format="mp3"),
        400,
        "pcm",
    )
    expect_error(
        lambda: speak_(model="tts-1", voice="default", input="Hi.", speed=2.0), 400, "speed"
    )


def test_a_token_is_required_when_the_server_has_one(server):
    wrong = openai.OpenAI(api_key="wrong", base_url=f"{server.url}/v1", max_retries=0)
    expect_error(lambda: wrong.models.list(), 401, "API key")
    expect_error(
        lambda: wrong.audio.speech.create(model="tts-1", voice="default", input="Hi."), 401
    )


def test_a_graph_without_speech_engines_says_so(question_wav):
    with running_server(create_app(load_graph(ROOT / "graphs" / "echo.yaml"))) as echo:
        client = openai.OpenAI(api_key="x", base_url=f"{echo.url}/v1", max_retries=0)
        assert list(client.models.list()) == []
        expect_error(
            lambda: client.audio.transcriptions.create(
                model="whisper-1", file=question_wav.open("rb")
            ),
            404,
        )
        expect_error(
            lambda: client.audio.speech.create(model="tts-1", voice="default", input="Hi."), 404
        )


def test_an_engine_that_cannot_start_is_a_503_naming_it(question_wav):
    graph = load_graph(ROOT / "graphs" / "default.yaml", ["stt.params.model=/no/such/whisper"])
    with running_server(create_app(graph)) as broken:
        client = openai.OpenAI(api_key="x", base_url=f"{broken.url}/v1", max_retries=0)
        expect_error(
            lambda: client.audio.transcriptions.create(
                model="whisper-1", file=question_wav.open("rb")
            ),
            503,
            "cannot start",
            "'/no/such/whisper' does not exist",
        )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values, upload=st.binary(max_size=400))
def test_fuzzed_requests_get_a_clear_4xx(server, body, upload):
    """Arbitrary JSON to /v1/audio/speech and arbitrary bytes as the file to transcribe: a 4xx
    with an OpenAI-style error message, never a 5xx or a traceback."""
    auth = {"Authorization": "Bearer secret-token"}
    responses = [
        httpx.post(  # json.dumps writes NaN and Infinity too: not JSON, the server must say so
            f"{server.url}/v1/audio/speech",
            content=json.dumps(body),
            headers={**auth, "Content-Type": "application/json"},
            timeout=30,
        ),
        httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("clip.wav", upload, "audio/wav")},
            headers=auth,
            timeout=30,
        ),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, (body, upload[:40], response.text)
        assert response.json()["error"]["message"]
        assert "Traceback" not in response.text
