"""tts.kokoro and tts.coqui on RealtimeTTS's real KokoroEngine and CoquiEngine classes, with
only the model replaced (tests/realtimetts_sources.py): after an interrupt the next sentence
gets its own audio, Kokoro's word timings do not pile up, a sentence with nothing to say is
no error, and the Coqui worker process is stopped with the server."""

from __future__ import annotations

import importlib.util
import multiprocessing
import sys
import threading

import numpy as np
import pytest
import realtimetts_sources as sources
from harness import run_node
from test_tts_realtime import empty_hub_cache, fake_hub_files  # noqa: F401

from flowvoice.frames import Sentence
from flowvoice.nodes.tts_realtime import XTTS_FILES, LoadedEngine, stop_coqui_worker

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("RealtimeTTS", "pyaudio", "torch")),
        reason="needs RealtimeTTS, PyAudio and torch (the engines import them)",
    ),
]


def level(text: str) -> int:
    """The int16 sample value of ``text``'s fake audio after the adapter's conversion."""
    return int(np.float32(sources.level_of(text)) * 32767)


def is_audio_of(audio: np.ndarray, text: str) -> bool:
    """Whether ``audio`` is ``text``'s fake audio: its level in all but the engine's fades."""
    return len(audio) > 0 and np.mean(audio == level(text)) > 0.8


def speak(loaded: LoadedEngine, text: str, cancel_after: int = 0) -> tuple[bool, np.ndarray]:
    """Synthesize ``text`` as the node does; interrupt once ``cancel_after`` chunks came."""
    cancelled, chunks = threading.Event(), []

    def push(samples: np.ndarray) -> None:
        chunks.append(samples)
        if cancel_after and len(chunks) >= cancel_after:
            cancelled.set()

    ok = loaded.synthesize(text, push, cancelled)
    return ok, np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


async def loaded_engine(type_name: str, params: dict) -> LoadedEngine:
    """The node's shared engine, after it spoke one sentence without error."""
    result = await run_node(type_name, params, [("text", Sentence(text="Warm up."))], timeout=120)
    assert result.events_of("error") == []
    assert is_audio_of(np.concatenate([f.samples for f in result.frames("audio")]), "Warm up.")
    return result.session.nodes["node"].engine.engine


# -- Kokoro ------------------------------------------------------------------------------------


@pytest.fixture
def kokoro(monkeypatch, empty_hub_cache, own_resources):  # noqa: F811
    files = ["config.json", "kokoro-v1_0.pth", "voices/jm_kumo.pt"]
    fake_hub_files(empty_hub_cache, "hexgrad/Kokoro-82M", files)
    monkeypatch.setitem(sys.modules, "kokoro", sources.fake_kokoro_module())
    engine_module = "RealtimeTTS.engines.kokoro_engine"
    sys.modules.pop(engine_module, None)
    yield {"voice": "jm_kumo"}
    sys.modules.pop(engine_module, None)  # imported with the fake kokoro: forget it
    monkeypatch.delattr(sys.modules["RealtimeTTS.engines"], "kokoro_engine", raising=False)


async def test_kokoro_word_timings_stay_bounded_over_1000_sentences(kokoro) -> None:
    loaded = await loaded_engine("tts.kokoro", kokoro)
    from RealtimeTTS.engines.kokoro_engine import KokoroEngine

    assert type(loaded.engine) is KokoroEngine
    for n in range(1000):
        ok, audio = speak(loaded, f"Sentence number {n} has six words.")
        assert ok and is_audio_of(audio, f"Sentence number {n} has six words.")
        assert loaded.engine.timings.qsize() <= 6, "a sentence's timings at most"
    assert loaded.engine.timings.qsize() == 0


async def test_kokoro_sentence_without_words_is_no_error(kokoro) -> None:
    texts = ["...", "*", "Hello there.", "\u2014"]
    script = [("text", Sentence(text=t)) for t in texts]
    result = await run_node("tts.kokoro", kokoro, script, timeout=120)
    assert result.events_of("error") == []
    audio = np.concatenate([f.samples for f in result.frames("audio")])
    assert is_audio_of(audio, "Hello there.") and len(audio) <= 2 * 2400


async def test_kokoro_after_an_interrupt_the_next_sentence_is_its_own(kokoro) -> None:
    loaded = await loaded_engine("tts.kokoro", kokoro)
    first = "One two three four five six seven eight nine ten."
    ok, heard = speak(loaded, first, cancel_after=1)
    assert ok and is_audio_of(heard, first)
    ok, audio = speak(loaded, "And now something else.")
    assert ok and is_audio_of(audio, "And now something else.")


# -- Coqui -------------------------------------------------------------------------------------


@pytest.fixture
def coqui(monkeypatch, tmp_path, own_resources):
    """tts.coqui params for weights in tmp_path (empty files), the XTTS worker replaced."""
    for module in ("requests", "tqdm"):  # coqui_engine imports them (the coqui extra has them)
        pytest.importorskip(module)
    folder = tmp_path / "v2.0.2"
    folder.mkdir()
    for name in XTTS_FILES:
        (folder / name).write_bytes(b"")
    for name, module in sources.fake_xtts_speaker_module().items():
        monkeypatch.setitem(sys.modules, name, module)
    from RealtimeTTS.engines.coqui_engine import CoquiEngine

    monkeypatch.setattr(CoquiEngine, "_synthesize_worker", staticmethod(sources.coqui_worker))
    start_method = multiprocessing.get_start_method(allow_none=True)
    engines: list[LoadedEngine] = []
    yield {"models_path": str(tmp_path), "device": "cpu"}, engines
    for loaded in engines:
        stop_coqui_worker(loaded.engine)
    multiprocessing.set_start_method(start_method, force=True)  # CoquiEngine sets 'spawn'


async def test_coqui_after_an_interrupt_the_next_sentence_is_its_own(coqui) -> None:
    params, engines = coqui
    loaded = await loaded_engine("tts.coqui", params)
    engines.append(loaded)
    from RealtimeTTS.engines.coqui_engine import CoquiEngine

    assert type(loaded.engine) is CoquiEngine
    texts = [f"Sentence {n}: some words to speak, {'and more ' * n}then stop." for n in range(6)]
    for n, text in enumerate(texts):
        # every other sentence is interrupted after its first chunk or two
        ok, audio = speak(loaded, text, cancel_after=n // 2 + 1 if n % 2 == 0 else 0)
        assert ok, text
        assert is_audio_of(audio, text), f"sentence {n} got audio of another sentence"
        chunks = len(audio) // sources.CHUNK_SAMPLES
        if n % 2:  # not interrupted: all of it
            assert chunks == sources.coqui_chunks(text), f"sentence {n}: {chunks} chunks"


async def test_coqui_worker_process_stops_with_the_server(coqui) -> None:
    params, engines = coqui
    loaded = await loaded_engine("tts.coqui", params)
    process = loaded.engine.synthesize_process
    assert process.is_alive()
    stop_coqui_worker(loaded.engine)  # what runs at exit
    assert not process.is_alive()
    stop_coqui_worker(loaded.engine)  # twice is harmless
