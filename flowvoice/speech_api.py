"""OpenAI-compatible speech endpoints served from the graph's own STT and TTS engines.

``flowvoice run`` serves, besides ``/ws``::

    POST /v1/audio/transcriptions   multipart: file (WAV), model, language, prompt,
                                    response_format json|text, stream (server-sent events)
    POST /v1/audio/speech           JSON: model, input, voice, response_format wav|pcm,
                                    sample_rate (speaches' extension); the audio streams
                                    as it is synthesized
    GET  /v1/models                 the two models below
    GET  /v1/audio/voices           {"voices": [...]}

so a machine running flowvoice is a speech server for other replicas (``stt.openai``,
``tts.openai``) and for any OpenAI-audio client. The engines are the graph's first STT node
(an :class:`UtteranceSTT`) and first TTS node (a :class:`_TTSNode`), set up once in a
session of their own: their models come from the process-wide cache, shared with the voice
sessions. Models are named ``whisper-1`` / ``tts-1`` (OpenAI's names, so stock clients work)
or by node type (``stt.whisper``, ``tts.piper``); voices are ``default`` and the TTS node's
own voice.

``pcm`` is 16-bit little-endian mono at 24 kHz, OpenAI's rate, unless ``sample_rate`` asks
for another; its Content-Type names the rate (``audio/pcm; rate=24000``). ``wav`` (the
default) streams a WAV header with unknown length, then the same PCM at the engine's rate.
A client that leaves mid-stream cancels the synthesis. Bad requests get 4xx with an
OpenAI-shaped error body; with a token set (``FLOWVOICE_TOKEN``), requests need
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import io
import json
import logging
import struct
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from flowvoice.graph.spec import LoadedGraph, LoadedNode
from flowvoice.nodes.audio import Resampler
from flowvoice.nodes.stt import LEAD_S, RATE, TAIL_S, TranscriptionFailed, UtteranceSTT
from flowvoice.nodes.tts import SynthesisFailed, _TTSNode
from flowvoice.runtime.session import Session, SessionError

log = logging.getLogger("flowvoice.speech_api")

#: Largest upload (OpenAI's limit).
MAX_UPLOAD_BYTES = 25 * 2**20
#: Largest speech request body, and longest ``input`` (OpenAI's limit).
MAX_SPEECH_BODY = 64 * 1024
MAX_INPUT_CHARS = 4096
STT_ALIAS, TTS_ALIAS = "whisper-1", "tts-1"
DEFAULT_VOICE = "default"
PCM_RATE = 24000
Write = Callable[[bytes], Awaitable[None]]


class RequestError(Exception):
    """A request the API refuses: HTTP ``status``, an OpenAI-style ``param`` and ``code``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str = ""):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code or "invalid_request"

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        error = {"message": str(self), "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


def supported_format(value: Any, formats: tuple[str, ...]) -> str:
    """``value`` if it is one of ``formats``, else a 400 naming them."""
    if value not in formats:
        raise RequestError(
            400,
            f"response_format {value!r} is not supported: use {' or '.join(map(repr, formats))}",
            "response_format",
        )
    return value


@dataclasses.dataclass
class Counts:
    """Requests per endpoint: served, in progress, and abandoned by the client mid-stream."""

    total: int = 0
    active: int = 0
    cancelled: int = 0


class ProducedResponse(Response):
    """A streamed body written by ``produce(write)``; the client leaving cancels it, and an
    error in it aborts the connection (the client sees the body cut short)."""

    def __init__(
        self, produce: Callable[[Write], Awaitable[None]], media_type: str, counts: Counts
    ):
        self.produce, self.counts = produce, counts
        self.background = None
        self.raw_headers = [(b"content-type", media_type.encode("latin-1"))]  # no length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        gone = False
        self.counts.active += 1
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal gone
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    gone = True
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                await self.produce(write)
                tg.cancel_scope.cancel()
        finally:
            self.counts.active -= 1
            self.counts.cancelled += gone
        if not gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


Handler = Callable[["SpeechAPI", Request], Awaitable[Response]]


def _endpoint(handler: Handler) -> Handler:
    """An endpoint: the token checked first, a RequestError answered as its error response."""

    @functools.wraps(handler)
    async def answer(api: SpeechAPI, request: Request) -> Response:
        try:
            api.check_token(request)
            return await handler(api, request)
        except RequestError as exc:
            return exc.response()

    return answer


def _first(graph: LoadedGraph, base: type) -> LoadedNode | None:
    return next((n for n in graph.nodes.values() if issubclass(n.node_type, base)), None)


class SpeechAPI:
    """The endpoints over one graph's speech engines (set up on first use)."""

    def __init__(self, graph: LoadedGraph, token: str | None):
        self.graph, self.token = graph, token
        self.stt_node, self.tts_node = _first(graph, UtteranceSTT), _first(graph, _TTSNode)
        self._session: Session | None = None  # the engines' own, made on first use
        self._lock = anyio.Lock()
        self.counts = {"transcriptions": Counts(), "speech": Counts()}

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self.models),
            Route("/v1/audio/voices", self.voices),
            Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
            Route("/v1/audio/speech", self.speech, methods=["POST"]),
        ]

    # -- what is served ----------------------------------------------------------------------
    def stt_models(self) -> list[str]:
        return [STT_ALIAS, self.stt_node.type_name] if self.stt_node else []

    def tts_models(self) -> list[str]:
        return [TTS_ALIAS, self.tts_node.type_name] if self.tts_node else []

    def voice_names(self) -> list[str]:
        if self.tts_node is None:
            return []
        own = getattr(self.tts_node.params, "voice", None)
        return [DEFAULT_VOICE] + ([Path(str(own)).stem] if own else [])

    async def _engine(self, node: LoadedNode | None, what: str) -> Any:
        """The set-up node instance, or a RequestError saying the graph has none."""
        if node is None:
            raise RequestError(404, f"graph {self.graph.name!r} has no {what} node", "model")
        async with self._lock:
            if self._session is None:
                nodes = {n.name: n for n in (self.stt_node, self.tts_node) if n is not None}
                session = Session(dataclasses.replace(self.graph, nodes=nodes, edges=[]))
                try:
                    await session.setup()
                except SessionError as exc:
                    await session.teardown()
                    raise RequestError(503, f"the {what} engine cannot start: {exc}") from exc
                self._session = session
        return self._session.nodes[node.name]

    # -- helpers -----------------------------------------------------------------------------
    def check_token(self, request: Request) -> None:
        if self.token is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise RequestError(401, "missing or wrong API key (Authorization: Bearer ...)")

    @staticmethod
    def _check_model(model: object, served: list[str], what: str) -> None:
        if not isinstance(model, str) or not model:
            raise RequestError(400, "'model' is required", "model")
        if model not in served:
            raise RequestError(
                404,
                f"model {model!r} does not exist here; {what} models: {', '.join(served)}",
                "model",
                "model_not_found",
            )

    @staticmethod
    def _check_size(request: Request, limit: int) -> None:
        length = request.headers.get("content-length")
        if length is None:
            raise RequestError(411, "a Content-Length header is required")
        if not length.isdigit() or int(length) > limit:
            raise RequestError(
                413, f"the request is {length} bytes; the limit is {limit} bytes", code="too_large"
            )

    # -- GET -------------------------------------------------------------------------------
    @_endpoint
    async def models(self, request: Request) -> Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "flowvoice"}
            for m in self.stt_models() + self.tts_models()
        ]
        return JSONResponse({"object": "list", "data": data})

    @_endpoint
    async def voices(self, request: Request) -> Response:
        return JSONResponse({"voices": self.voice_names()})

    # -- transcriptions ----------------------------------------------------------------------
    @_endpoint
    async def transcriptions(self, request: Request) -> Response:
        self._check_size(request, MAX_UPLOAD_BYTES)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise RequestError(400, "expected multipart/form-data with the audio as 'file'")
        try:
            form = await request.form(max_files=1, max_fields=32)
        except Exception as exc:  # starlette's MultiPartException, a malformed body
            raise RequestError(400, f"cannot read the form: {exc}") from exc
        self._check_model(form.get("model"), self.stt_models(), "transcription")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise RequestError(400, "'file' is required: the audio to transcribe (WAV)", "file")
        audio = decode_wav(await upload.read())
        response_format = supported_format(form.get("response_format") or "json", ("json", "text"))
        language = str(form.get("language") or "") or None
        prompt = str(form.get("prompt") or "") or None
        stream = str(form.get("stream") or "false").lower() == "true"
        stt: UtteranceSTT = await self._engine(self.stt_node, "speech-to-text")
        counts = self.counts["transcriptions"]
        counts.total += 1

        async def transcribe(on_text: Any = None) -> str:
            try:
                return await stt.transcribe_audio(audio, prompt, on_text, language)
            except ValueError as exc:
                raise RequestError(400, str(exc), "language") from exc
            except TranscriptionFailed as exc:
                raise RequestError(502, f"transcription failed: {exc}") from exc

        if stream:
            return ProducedResponse(
                lambda write: _stream_transcript(transcribe, write), "text/event-stream", counts
            )
        counts.active += 1
        try:
            text = await transcribe()
        finally:
            counts.active -= 1
        if response_format == "text":
            return PlainTextResponse(text + "\n")
        return JSONResponse({"text": text})

    # -- speech ------------------------------------------------------------------------------
    @_endpoint
    async def speech(self, request: Request) -> Response:
        self._check_size(request, MAX_SPEECH_BODY)
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise RequestError(400, f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        self._check_model(body.get("model"), self.tts_models(), "speech")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise RequestError(400, "'input' must be non-empty text", "input")
        if len(text) > MAX_INPUT_CHARS:
            raise RequestError(
                400, f"'input' is {len(text)} characters; the limit is {MAX_INPUT_CHARS}", "input"
            )
        voice = body.get("voice")
        voice = voice.get("id") if isinstance(voice, dict) else voice
        if voice not in self.voice_names():
            raise RequestError(
                400,
                f"voice {voice!r} is not offered here; voices: {', '.join(self.voice_names())}",
                "voice",
            )
        response_format = supported_format(body.get("response_format") or "wav", ("wav", "pcm"))
        if body.get("speed", 1.0) != 1.0:
            raise RequestError(400, "only speed 1.0 is supported by this server", "speed")
        if (body.get("stream_format") or "audio") != "audio":
            raise RequestError(400, "only stream_format 'audio' is supported", "stream_format")
        rate = body.get("sample_rate")
        if rate is not None and (not isinstance(rate, int) or not 8000 <= rate <= 48000):
            raise RequestError(400, "'sample_rate' must be an integer, 8000-48000", "sample_rate")
        tts: _TTSNode = await self._engine(self.tts_node, "text-to-speech")
        if response_format == "pcm":
            rate = rate or PCM_RATE
            media_type = f"audio/pcm; rate={rate}"
        else:
            rate = rate or tts.sample_rate
            media_type = "audio/wav"
        self.counts["speech"].total += 1

        async def produce(write: Write) -> None:
            if response_format == "wav":
                await write(streaming_wav_header(rate))
            await _synthesize(tts, text.strip(), rate, write)

        return ProducedResponse(produce, media_type, self.counts["speech"])

    def metrics_text(self) -> str:
        """Prometheus lines for the endpoints' counters."""
        lines = []
        for name, kind, attr in (
            ("flowvoice_speech_requests_total", "counter", "total"),
            ("flowvoice_speech_active", "gauge", "active"),
            ("flowvoice_speech_cancelled_total", "counter", "cancelled"),
        ):
            lines += [f"# TYPE {name} {kind}"]
            lines += [
                f'{name}{{endpoint="{e}"}} {getattr(c, attr)}' for e, c in self.counts.items()
            ]
        return "\n".join(lines) + "\n"


async def _stream_transcript(transcribe: Callable[..., Awaitable[str]], write: Write) -> None:
    """Server-sent ``transcript.text.delta`` events as the text grows, then ``done``."""
    shown = ""

    async def event(data: dict[str, Any] | str) -> None:
        await write(f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode())

    async def grown(text: str) -> None:
        nonlocal shown
        if text.startswith(shown) and len(text) > len(shown):
            await event({"type": "transcript.text.delta", "delta": text[len(shown) :]})
            shown = text

    try:
        text = await transcribe(grown)
    except RequestError as exc:
        await event({"error": {"message": str(exc), "type": "server_error", "code": exc.code}})
        return
    if text != shown:
        await grown(text)
    await event({"type": "transcript.text.done", "text": text})
    await event("[DONE]")


async def _synthesize(tts: _TTSNode, text: str, rate: int, write: Write) -> None:
    """Write ``text`` spoken by ``tts`` as PCM16 at ``rate``, chunk by chunk."""
    resampler: Resampler | None = None

    async def send(samples: np.ndarray) -> None:
        nonlocal resampler
        if tts.sample_rate != rate and resampler is None:
            resampler = Resampler(tts.sample_rate, rate)
        out = resampler(samples) if resampler is not None else samples
        if len(out):
            await write(np.asarray(out, "<i2").tobytes())

    try:
        await tts.stream_audio(text, send)
    except SynthesisFailed:
        log.warning("speech synthesis failed", exc_info=True)
        raise
    if resampler is not None:
        tail = resampler(np.zeros(0, np.int16), last=True)
        if len(tail):
            await write(np.asarray(tail, "<i2").tobytes())


def streaming_wav_header(rate: int) -> bytes:
    """A PCM16 mono WAV header whose sizes say 'unknown' (0xFFFFFFFF), for a streamed body."""
    unknown = 0xFFFFFFFF
    return (
        struct.pack("<4sI4s", b"RIFF", unknown, b"WAVE")
        + struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16)
        + struct.pack("<4sI", b"data", unknown)
    )


def decode_wav(data: bytes) -> np.ndarray:
    """A WAV upload as 16 kHz mono int16 with LEAD_S / TAIL_S of silence around it (as
    stt.whisper pads its utterances); RequestError when it is not 16-bit PCM WAV audio."""
    if not data:
        raise RequestError(400, "'file' is empty", "file")
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, struct.error) as exc:
        raise RequestError(
            400, f"'file' is not a WAV file this server reads ({exc}); send 16-bit PCM WAV", "file"
        ) from exc
    if width != 2:
        raise RequestError(400, f"'file' is {8 * width}-bit audio; send 16-bit PCM WAV", "file")
    if not 8000 <= rate <= 192000:
        raise RequestError(400, f"'file' has a sample rate of {rate} Hz", "file")
    samples = np.frombuffer(frames[: len(frames) - len(frames) % (2 * channels)], "<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    samples = samples.astype(np.int16)
    if not len(samples):
        raise RequestError(400, "'file' holds no audio", "file")
    if rate != RATE:
        samples = Resampler(rate, RATE)(samples, last=True)
    lead, tail = np.zeros(int(LEAD_S * RATE), np.int16), np.zeros(int(TAIL_S * RATE), np.int16)
    return np.concatenate([lead, samples, tail])
