"""``stt.openai``: each VAD segment transcribed by a server speaking the OpenAI audio API
(``POST /v1/audio/transcriptions``): flowvoice's own ``flowvoice run``, speaches, vLLM,
LocalAI or OpenAI.

The utterance handling (pre-roll, partials of the growing utterance, the transcription at a
pause that becomes the final, one final per segment) is :class:`UtteranceSTT`'s, as for
``stt.whisper``; each transcription here is one request with the audio as a 16 kHz WAV.

With ``stream`` the request asks for server-sent events and the text grows as they arrive
(partial transcripts while the user speaks). Three reply shapes are read: OpenAI's
``transcript.text.delta`` / ``transcript.text.done`` events, vLLM's chat-shaped chunks
(``choices[0].delta.content``), and a plain JSON or text body from a server that does not
stream. A transcription whose text is no longer needed (the speech resumed after a pause, or
a partial's utterance ended) is cancelled, which closes its request.

A server that is down, or does not list ``model``, fails the node at setup. Later failures
(server gone, 5xx, a stream cut or stalled longer than ``timeout_s``) cost one utterance: its
final is empty and an ``error`` event names the node; the session goes on.
"""

from __future__ import annotations

import io
import json
import wave
from typing import Any

import numpy as np
from pydantic import Field

from flowvoice.graph.registry import register
from flowvoice.nodes.openai_api import OpenAIConnection, OpenAIServerParams
from flowvoice.nodes.stt import RATE, OnText, TranscriptionFailed, UtteranceParams, UtteranceSTT


class OpenAISTTParams(UtteranceParams, OpenAIServerParams):
    model: str = Field(
        "whisper-1",
        description="Transcription model on the server ('whisper-1' at OpenAI and at "
        "flowvoice's own server; speaches and vLLM take a model id such as "
        "'Systran/faster-whisper-small.en').",
    )
    language: str | None = Field(
        None, description="Spoken language (ISO-639-1, e.g. 'en'); null: the server decides."
    )
    stream: bool = Field(
        True,
        description="Ask for the text as server-sent events, so partials grow as it arrives; "
        "a server that answers with plain JSON is read too. OpenAI's whisper-1 refuses to "
        "stream: set false there.",
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Longest wait for the server: connect, the reply, and between two "
        "events of a stream (a stream silent this long is stalled: the utterance fails).",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra form fields for the request (server extensions, e.g. speaches' "
        "vad_filter).",
    )


def wav_bytes(samples: np.ndarray, sample_rate: int = RATE) -> bytes:
    """Mono int16 samples as a PCM16 WAV file in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.asarray(samples, "<i2").tobytes())
    return buffer.getvalue()


def stream_piece(data: str) -> tuple[str, str] | None:
    """One server-sent event's data as ("delta", text) or ("done", full text); None when it
    carries no text ("[DONE]", usage, segments). Reads OpenAI's events and vLLM's chunks."""
    if data.strip() == "[DONE]":
        return None
    event = json.loads(data)
    if "error" in event:
        error = event["error"]
        raise TranscriptionFailed(
            f"the server reported an error mid-stream: "
            f"{error.get('message', error) if isinstance(error, dict) else error}"
        )
    kind = event.get("type")
    if kind == "transcript.text.delta":
        return "delta", event.get("delta") or ""
    if kind == "transcript.text.done":
        return "done", event.get("text") or ""
    choices = event.get("choices")  # vLLM: object "transcription.chunk"
    if choices:
        return "delta", (choices[0].get("delta") or {}).get("content") or ""
    return None


@register("stt.openai")
class OpenAISTT(UtteranceSTT):
    """Transcribes each VAD segment on an OpenAI-compatible server (/v1/audio/transcriptions)."""

    Params = OpenAISTTParams
    params: OpenAISTTParams

    async def setup(self) -> None:
        p = self.params
        self._api = OpenAIConnection(p, p.model, p.timeout_s)
        await self._api.check()

    async def teardown(self) -> None:
        if hasattr(self, "_api"):
            await self._api.close()

    async def transcribe_audio(
        self,
        audio: np.ndarray,
        prompt: str | None = None,
        on_text: OnText | None = None,
        language: str | None = None,
    ) -> str:
        p = self.params
        fields: dict[str, Any] = {"model": p.model, "stream": p.stream}
        if language or p.language:
            fields["language"] = language or p.language
        if prompt:
            fields["prompt"] = prompt
        try:
            async with self._api.client.audio.transcriptions.with_streaming_response.create(
                file=("utterance.wav", wav_bytes(audio), "audio/wav"),
                extra_body=p.extra_body or None,
                **fields,
            ) as response:
                return await self._read(response, on_text)
        except TranscriptionFailed:
            raise
        except ValueError as exc:  # a body or event that is not the JSON it should be
            where = self._api.base_url
            raise TranscriptionFailed(f"{where} sent a malformed reply ({exc})") from exc
        except Exception as exc:
            raise TranscriptionFailed(self._api.describe(exc)) from exc

    async def _read(self, response: Any, on_text: OnText | None) -> str:
        """The text of a reply: streamed events as they come, or a JSON / text body."""
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            body = (await response.read()).decode("utf-8", "replace")
            text = (json.loads(body).get("text", "") if "json" in kind else body).strip()
            if on_text is not None:
                await on_text(text)
            return text
        text = ""
        async for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            piece = stream_piece(line[5:])
            if piece is None:
                continue
            kind, value = piece
            if kind == "done":
                return value.strip()
            if value:
                text += value
                if on_text is not None:
                    await on_text(text.strip())
        if not text:
            raise TranscriptionFailed(f"the stream from {self._api.base_url} ended without text")
        return text.strip()
