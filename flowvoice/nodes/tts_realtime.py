"""Text to speech through RealtimeTTS engines: ``tts.kokoro``, ``tts.coqui``, ``tts.orpheus``.

One adapter, :class:`RealtimeTTSNode`, drives any RealtimeTTS ``BaseEngine`` directly (no
``TextToAudioStream``: the graph's ``text.sentences`` node already splits the reply, and the
stream's own sentence splitting, threads and buffering would only add latency): each
``Sentence`` goes to ``engine.synthesize`` in a worker thread, the chunks the engine puts on
its queue are converted to PCM16 ``AudioFrame``s at the engine's rate as they come. An
interrupt sets the engine's stop event and drops whatever it still produces. A loaded engine
is shared by every session of the process (one synthesis at a time).

Driving engines directly uses parts of RealtimeTTS that its stream uses but does not document:
each engine's ``queue`` (replaced by a sink), ``timings`` and ``stop_synthesis_event``, and
CoquiEngine's ``parent_synthesize_pipe`` and ``synthesize_process``. They were read and tested
against RealtimeTTS 0.8.10 (tests/test_tts_realtime_engines.py runs the real engine classes),
and the extras pin ``realtimetts<0.9``; :class:`LoadedEngine` checks them at setup.

The engines fetch weights from the Hugging Face hub the first time they run. Offline, that
fails late or hangs (Coqui waits forever for its worker process), so each node checks for
its weights locally before constructing the engine and fails at setup with the exact
download command. ``tts.realtimetts`` runs any other engine class by import path.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio.from_thread
import numpy as np
from pydantic import Field, field_validator

from flowvoice.graph.registry import register
from flowvoice.node import NodeParams, NodeSetupError
from flowvoice.nodes._deps import require
from flowvoice.nodes._hub import download_hint, missing_files
from flowvoice.nodes.tts import Push, _TTSNode
from flowvoice.runtime.engine import SharedEngine

log = logging.getLogger(__name__)

#: Text the engines can say something for (Kokoro fails on '...' with no audio).
SPEAKABLE = re.compile(r"\w")

#: PortAudio sample formats that engines report in ``get_stream_info()``.
PA_FLOAT32, PA_INT32, PA_INT16 = 1, 2, 8
_DTYPES = {PA_FLOAT32: np.float32, PA_INT32: np.int32, PA_INT16: np.int16}


def pcm16(chunk: bytes | np.ndarray, sample_format: int) -> np.ndarray:
    """An engine's audio chunk (bytes or array in ``sample_format``) as mono int16 samples."""
    dtype = _DTYPES.get(sample_format)
    if dtype is None:
        raise ValueError(f"unsupported engine sample format {sample_format}")
    data = np.frombuffer(chunk, dtype) if isinstance(chunk, bytes) else np.asarray(chunk)
    data = data.reshape(-1)
    if data.dtype == np.int16:
        return data.copy()
    if data.dtype == np.int32:
        return (data >> 16).astype(np.int16)
    return (np.clip(data, -1.0, 1.0) * 32767).astype(np.int16)


class _EngineSink:
    """Stands in for an engine's ``queue``: forwards chunks to the synthesis in progress."""

    def __init__(self) -> None:
        self.target: Callable[[Any], None] | None = None

    def put(self, item: Any, *args: Any, **kwargs: Any) -> None:
        if self.target is not None:
            self.target(item)

    def empty(self) -> bool:
        return True


class LoadedEngine:
    """A constructed RealtimeTTS engine, shared across sessions (through a
    :class:`SharedEngine`, which runs one synthesis at a time)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.sample_format, self.channels, self.sample_rate = engine.get_stream_info()
        if self.channels != 1 or self.sample_format not in _DTYPES:
            raise NodeSetupError(
                f"engine {type(engine).__name__} streams {self.channels} channel(s) in PortAudio "
                f"format {self.sample_format}; mono int16/int32/float32 is supported"
            )
        self._sink = _EngineSink()
        engine.queue = self._sink

    def synthesize(self, text: str, push: Push, cancelled: threading.Event) -> bool:
        """Synthesize ``text`` (blocking, holding the engine), pushing PCM16 chunks; stops soon
        after ``cancelled``. Text without a word to say (``...``, ``*``) is done at once."""
        if not SPEAKABLE.search(text):
            return True

        def forward(chunk: Any) -> None:
            if cancelled.is_set():
                self.engine.stop()  # the engine checks its stop event between chunks
                return
            samples = pcm16(chunk, self.sample_format)
            if len(samples):
                push(samples)

        self.settle()
        self._sink.target = forward
        try:
            done = self.engine.synthesize(text) is not False
            if not done and cancelled.is_set():
                self.stopped()
            return done or cancelled.is_set()
        except Exception:  # an engine bug must cost one sentence, not the session
            log.exception("%s failed on %r", type(self.engine).__name__, text[:60])
            return False
        finally:
            self._sink.target = None
            self._forget_timings()

    def settle(self) -> None:
        """Before a synthesis: clear what an earlier stopped one left in the engine."""

    def stopped(self) -> None:
        """After a synthesis the stop event ended early (holding the engine)."""

    def _forget_timings(self) -> None:
        """Drop the word timings the engine recorded (RealtimeTTS's stream reads them; nobody
        does here, and Kokoro adds one per word forever)."""
        timings = getattr(self.engine, "timings", None)
        while timings is not None:
            try:
                timings.get_nowait()
            except queue.Empty:
                break
        if hasattr(self.engine, "reset_audio_duration"):
            self.engine.reset_audio_duration()  # the offset of the next timings


class CoquiLoadedEngine(LoadedEngine):
    """CoquiEngine: its ``synthesize`` returns as soon as the stop event is set, leaving the
    XTTS process's remaining chunks and its "finished" in the pipe; the next sentence would
    read them as its own (the previous sentence's audio, then an early end). After a stop the
    pipe is read up to that "finished" (bounded; what is left is read before the next
    synthesis)."""

    #: How long the XTTS process gets to notice the stop and finish its current chunk.
    DRAIN_TIMEOUT_S = 10.0

    def __init__(self, engine: Any):
        super().__init__(engine)
        for name in ("parent_synthesize_pipe", "synthesize_process"):
            if not hasattr(engine, name):
                raise NodeSetupError(
                    f"this RealtimeTTS CoquiEngine has no {name!r}: flowvoice's tts.coqui "
                    "was checked against RealtimeTTS 0.8.x (pip install 'realtimetts<0.9')"
                )
        self._unsettled = False

    def stopped(self) -> None:
        self._unsettled = True
        self.settle()

    def settle(self) -> None:
        if self._unsettled:
            self._unsettled = not self._drain(self.DRAIN_TIMEOUT_S)
            if self._unsettled:
                log.warning(
                    "Coqui XTTS did not finish a stopped sentence within %.0f s",
                    self.DRAIN_TIMEOUT_S,
                )

    def _drain(self, timeout_s: float) -> bool:
        """Read the pipe up to the end of the stopped synthesis; False on timeout."""
        pipe = self.engine.parent_synthesize_pipe
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if pipe.poll(min(left, 0.1)):
                status, _ = pipe.recv()
                if status in ("finished", "error", "shutdown"):
                    return True
        return False


class RealtimeTTSParams(NodeParams):
    """Params every RealtimeTTS-backed node shares."""


class RealtimeTTSNode(_TTSNode):
    """Adapter base: a RealtimeTTS engine behind the ``Sentence -> AudioFrame`` contract.

    Subclasses implement :meth:`check_weights` (fast, local, raises NodeSetupError naming the
    download) and :meth:`create_engine` (imports and constructs the engine; runs once per
    process in a worker thread). Sentences, playback ledger and latency marks are handled as
    for every TTS node; an empty sentence (end of reply) produces nothing.
    """

    #: The pip extra that installs the engine (named in setup errors).
    extra: ClassVar[str] = "pip install 'flowvoice[realtimetts]'"
    engine_label: ClassVar[str] = "RealtimeTTS engine"
    #: How the constructed engine is driven.
    loaded_engine: ClassVar[type[LoadedEngine]] = LoadedEngine

    def check_weights(self) -> None:
        """Raise NodeSetupError when the engine's weights are not on this machine."""

    @classmethod
    def create_engine(cls, params: Any) -> Any:
        """Construct the engine for ``params`` (blocking; heavy imports happen here). A class
        method: the shared engine keeps it to reload a hung engine, and must not keep a node."""
        raise NotImplementedError

    def resource_key(self) -> tuple[Any, ...]:
        return (self.type_name, self.params.model_dump_json())

    @classmethod
    def _require(cls, module: str, package: str) -> Any:
        return require(module, package, cls.extra)

    async def setup(self) -> None:
        self.check_weights()
        self._require("RealtimeTTS", "realtimetts")
        self._require("pyaudio", "PyAudio")  # every RealtimeTTS engine module imports it
        label, create, params = (
            f"{self.engine_label} ({self.type_name})",
            self.create_engine,
            self.params,
        )
        loaded = self.loaded_engine
        self.engine = await self.context.resources.get(
            self.resource_key(),
            lambda: SharedEngine(label, lambda: loaded(create(params))),
            label=label,
        )
        self.sample_rate = self.engine.engine.sample_rate

    def synthesize(
        self, engine: LoadedEngine, text: str, push: Push, cancelled: threading.Event
    ) -> None:
        if not engine.synthesize(text, push, cancelled):
            anyio.from_thread.run_sync(
                functools.partial(
                    self.context.publish,
                    "error",
                    turn=self.context.frame_turn,
                    node=self.name,
                    message=f"{self.type_name}: the engine failed to synthesize {text[:60]!r}",
                )
            )


# -- Kokoro ------------------------------------------------------------------------------------

KOKORO_REPO = "hexgrad/Kokoro-82M"


class KokoroParams(RealtimeTTSParams):
    voice: str = Field(
        "af_heart",
        description="Kokoro voice (af_heart, am_adam, bf_emma, ...) or a blend such as "
        "'0.3*af_sarah + 0.7*am_adam'; weights come from hexgrad/Kokoro-82M.",
    )
    speed: float = Field(1.0, gt=0.2, le=4.0, description="Speaking rate factor.")

    @field_validator("voice")
    @classmethod
    def _known_form(cls, voice: str) -> str:
        for name in kokoro_voices(voice) or [voice]:
            if not KOKORO_VOICE.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a Kokoro voice name (like af_heart, am_adam, bf_emma: "
                    "language a/b/e/f/h/i/j/p/z, f or m, '_', name)"
                )
        return voice


#: A Kokoro voice name: language letter, gender letter, name (af_heart, bm_george, ...).
KOKORO_VOICE = re.compile(r"[abefhijpz][fm]_[a-z0-9]+")


def kokoro_voices(voice: str) -> list[str]:
    """The voice names a Kokoro voice or blend formula ('0.3*af_sarah + 0.7*am_adam') uses."""
    return [part.split("*")[-1].strip() for part in voice.split("+") if part.strip()]


@register("tts.kokoro")
class KokoroTTS(RealtimeTTSNode):
    """Kokoro-82M through RealtimeTTS's KokoroEngine (24 kHz; fast on a GPU)."""

    Params = KokoroParams
    params: KokoroParams
    extra = "pip install 'flowvoice[kokoro]'"
    engine_label = "Kokoro-82M"

    def check_weights(self) -> None:
        voices = kokoro_voices(self.params.voice)
        files = ["config.json", "kokoro-v1_0.pth"] + [f"voices/{v}.pt" for v in voices]
        missing = missing_files(KOKORO_REPO, files)
        if missing:
            raise NodeSetupError(
                f"Kokoro weights are not downloaded (missing {', '.join(missing)}): run "
                f"{download_hint(KOKORO_REPO)} (or just the files: "
                f"{download_hint(KOKORO_REPO, missing)})"
            )
        english = all(v[:1] in "ab" for v in voices)
        if english and importlib.util.find_spec("en_core_web_sm") is None:
            raise NodeSetupError(
                "Kokoro's English phonemizer needs the spaCy model en_core_web_sm, which is not "
                "installed: run `python -m spacy download en_core_web_sm`"
            )

    @classmethod
    def create_engine(cls, params: KokoroParams) -> Any:
        engine_module = cls._require("RealtimeTTS.engines.kokoro_engine", "kokoro")
        return engine_module.KokoroEngine(voice=params.voice, default_speed=params.speed)


# -- Coqui XTTS --------------------------------------------------------------------------------

XTTS_REPO = "coqui/XTTS-v2"
XTTS_FILES = ["config.json", "model.pth", "vocab.json", "speakers_xtts.pth"]


def default_coqui_dir() -> str:
    """Where XTTS weights are looked for: $COQUI_MODEL_PATH, else the flowvoice cache."""
    return os.environ.get("COQUI_MODEL_PATH") or str(Path.home() / ".cache/flowvoice/coqui")


class CoquiParams(RealtimeTTSParams):
    models_path: str = Field(
        default_factory=default_coqui_dir,
        description="Directory holding one sub-directory per XTTS version (default: "
        "$COQUI_MODEL_PATH or ~/.cache/flowvoice/coqui).",
    )
    version: str = Field("v2.0.2", description="XTTS-v2 revision (a sub-directory name).")
    voice: str = Field(
        "",
        description="Reference WAV to clone (mono 22.05/44.1 kHz), or a Coqui speaker name; "
        "empty uses the default speaker.",
    )
    language: str = Field("en", description="Language code of the text.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses CUDA when torch sees a GPU."
    )
    speed: float = Field(1.0, gt=0.2, le=4.0, description="Speaking rate factor.")
    stream_chunk_size: int = Field(
        20, ge=1, le=200, description="XTTS tokens per streamed chunk (lower: earlier audio)."
    )


@register("tts.coqui")
class CoquiTTS(RealtimeTTSNode):
    """Coqui XTTS-v2 through RealtimeTTS's CoquiEngine (24 kHz, streams within a sentence)."""

    Params = CoquiParams
    params: CoquiParams
    extra = "pip install 'flowvoice[coqui]'"
    engine_label = "Coqui XTTS-v2"
    loaded_engine = CoquiLoadedEngine

    def model_dir(self) -> Path:
        return Path(self.params.models_path).expanduser() / self.params.version

    def check_weights(self) -> None:
        folder = self.model_dir()
        missing = [name for name in XTTS_FILES if not (folder / name).is_file()]
        if missing:
            hint = download_hint(
                XTTS_REPO, XTTS_FILES, "--revision", self.params.version, "--local-dir", str(folder)
            )
            raise NodeSetupError(
                f"XTTS-v2 weights are not in {folder} (missing {', '.join(missing)}): run {hint} "
                "(or set models_path / $COQUI_MODEL_PATH to where they are)"
            )
        voice = self.params.voice
        if voice.lower().endswith(".wav") and not Path(voice).expanduser().is_file():
            raise NodeSetupError(f"Coqui reference voice {voice!r} does not exist")

    @classmethod
    def create_engine(cls, p: CoquiParams) -> Any:
        engine_module = cls._require("RealtimeTTS.engines.coqui_engine", "coqui-tts")
        engine = engine_module.CoquiEngine(
            specific_model=p.version,
            local_models_path=str(Path(p.models_path).expanduser()),
            voice=p.voice,
            language=p.language,
            speed=p.speed,
            stream_chunk_size=p.stream_chunk_size,
            device=None if p.device == "auto" else p.device,
        )
        atexit.register(stop_coqui_worker, engine)
        return engine


def stop_coqui_worker(engine: Any) -> None:
    """End a CoquiEngine's XTTS process (not a daemon: at exit the interpreter would wait
    for it forever, and ``docker stop`` for its 10 s)."""
    process = getattr(engine, "synthesize_process", None)
    if process is None:
        return
    if process.is_alive():
        process.terminate()
        process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)


# -- Orpheus -----------------------------------------------------------------------------------

SNAC_REPO = "hubertsiuzdak/snac_24khz"


class OrpheusParams(RealtimeTTSParams):
    api_url: str = Field(
        "http://127.0.0.1:1234/v1/completions",
        description="Completions endpoint of the OpenAI-compatible server that serves the "
        "Orpheus LLM (LM Studio, llama.cpp server, vLLM).",
    )
    model: str = Field("orpheus-3b-0.1-ft", description="Model name on that server.")
    voice: str = Field(
        "tara", description="Orpheus voice: tara, leah, jess, leo, dan, mia, zac or zoe."
    )
    temperature: float = Field(0.6, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(1200, ge=28, description="Audio tokens per sentence at most.")
    check_timeout_s: float = Field(
        3.0, gt=0, le=60, description="How long setup waits for the server to answer."
    )


@register("tts.orpheus")
class OrpheusTTS(RealtimeTTSNode):
    """Orpheus-3B via RealtimeTTS's OrpheusEngine: an LLM server emits SNAC audio tokens."""

    Params = OrpheusParams
    params: OrpheusParams
    extra = "pip install 'flowvoice[orpheus]'"
    engine_label = "Orpheus"

    def check_weights(self) -> None:
        if missing_files(SNAC_REPO, ["config.json", "pytorch_model.bin"]):
            raise NodeSetupError(
                f"the SNAC decoder Orpheus needs is not downloaded: run {download_hint(SNAC_REPO)}"
            )
        self._check_server()

    def _check_server(self) -> None:
        httpx = self._require("httpx", "httpx")
        p = self.params
        base = p.api_url.rsplit("/completions", 1)[0]
        serve_hint = (
            f"start an OpenAI-compatible server with the Orpheus model as {p.model!r} "
            f"(e.g. `vllm serve canopylabs/orpheus-3b-0.1-ft --served-model-name {p.model} "
            "--port 1234`, or LM Studio / llama.cpp's server with an Orpheus GGUF)"
        )
        try:
            response = httpx.get(f"{base}/models", timeout=p.check_timeout_s)
        except httpx.HTTPError as exc:
            raise NodeSetupError(
                f"the Orpheus server at {base} does not answer ({exc}); {serve_hint}"
            ) from exc
        if response.status_code == 200:
            served = [m.get("id") for m in response.json().get("data", [])]
            if served and p.model not in served:
                raise NodeSetupError(
                    f"the server at {base} does not serve {p.model!r} (it serves "
                    f"{', '.join(map(str, served))}); {serve_hint}"
                )

    @classmethod
    def create_engine(cls, p: OrpheusParams) -> Any:
        engine_module = cls._require("RealtimeTTS.engines.orpheus_engine", "snac")
        cls._require("snac", "snac")
        engine = engine_module.OrpheusEngine(
            api_url=p.api_url,
            model=p.model,
            voice=engine_module.OrpheusVoice(p.voice),
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
        )
        importlib.import_module("RealtimeTTS.engines.orpheus_decoder")  # loads SNAC now
        return engine


# -- any engine by import path -----------------------------------------------------------------


class GenericParams(RealtimeTTSParams):
    engine: str = Field(
        description="Engine class as 'module:Class' or 'module.Class', e.g. "
        "'RealtimeTTS:SystemEngine' or 'mypkg.tts:MyEngine' (a RealtimeTTS BaseEngine)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the engine's constructor."
    )


def import_object(path: str) -> Any:
    """The object at ``module:attr`` or ``module.attr``."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise NodeSetupError(f"engine {path!r} is not 'module:Class'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise NodeSetupError(f"cannot import engine {path!r}: {exc}") from exc


@register("tts.realtimetts")
class GenericRealtimeTTS(RealtimeTTSNode):
    """Any RealtimeTTS engine class, by import path, constructed with the given options."""

    Params = GenericParams
    params: GenericParams

    @classmethod
    def create_engine(cls, params: GenericParams) -> Any:
        return import_object(params.engine)(**params.options)
