"""``tts.openai``: each sentence spoken by a server speaking the OpenAI audio API
(``POST /v1/audio/speech``): flowvoice's own ``flowvoice run``, Kokoro-FastAPI, speaches,
vLLM-Omni, LocalAI or OpenAI.

The request asks for ``response_format: pcm`` (16-bit little-endian mono, no header) and the
body is read as it streams: every chunk becomes an ``AudioFrame`` at once (an odd trailing
byte waits for the next chunk). The rate is the one the server names in its Content-Type
(``audio/pcm; rate=22050``, as flowvoice's server does), else ``sample_rate``: 24 kHz,
OpenAI's and Kokoro's; speaches sends the voice's own rate unless asked
(``extra_body: {sample_rate: 24000}``).

An interrupt cancels the sentence, which closes the response: the server sees the client
leave. Sentences, playback ledger and latency marks are :class:`_TTSNode`'s, as for the
in-process engines, and so is ``stall_timeout_s``: a stream that stops sending fails the
session naming the node, as a hung engine does.

A server that is down, or that lists its models or voices without ``model`` / ``voice``,
fails the node at setup. Later failures (server gone, 4xx/5xx, a stream cut, or silent for
``timeout_s``) cost one sentence: an ``error`` event names the node and the reply goes on.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import Field

from flowvoice.graph.registry import register
from flowvoice.nodes.openai_api import OpenAIConnection, OpenAIServerParams, openai_module
from flowvoice.nodes.tts import Send, SynthesisFailed, _TTSNode

#: OpenAI's ``pcm``: 24 kHz.
OPENAI_PCM_RATE = 24000
_RATE_PARAM = re.compile(r";\s*rate\s*=\s*(\d+)", re.IGNORECASE)


class OpenAITTSParams(OpenAIServerParams):
    model: str = Field(
        "tts-1",
        description="Speech model on the server ('tts-1' at OpenAI and at flowvoice's own "
        "server, 'kokoro' on Kokoro-FastAPI).",
    )
    voice: str = Field(
        "alloy",
        description="Voice name on the server ('alloy' at OpenAI, 'af_heart' on Kokoro; "
        "flowvoice's server takes 'default' or its graph's voice).",
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, description="Speaking speed (1 = normal).")
    instructions: str | None = Field(
        None, description="How to speak (tone, accent), for models that take instructions."
    )
    sample_rate: int = Field(
        OPENAI_PCM_RATE,
        ge=8000,
        le=192000,
        description="Rate of the server's PCM when its Content-Type does not name one "
        "(24000 for OpenAI and Kokoro).",
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Longest wait for the server: connect, the first audio, and between two "
        "chunks (silent this long: the sentence fails; a graph's stall_timeout_s on the node "
        "fails the session instead, if shorter).",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON fields for the request (server extensions, e.g. speaches' "
        "sample_rate, vLLM-Omni's stream: true).",
    )


def pcm_rate(content_type: str) -> int | None:
    """The ``rate=`` parameter of a Content-Type such as ``audio/pcm; rate=22050``."""
    found = _RATE_PARAM.search(content_type)
    return int(found.group(1)) if found else None


@register("tts.openai")
class OpenAITTS(_TTSNode):
    """Speaks each sentence through an OpenAI-compatible server (/v1/audio/speech), streamed."""

    Params = OpenAITTSParams
    params: OpenAITTSParams

    async def setup(self) -> None:
        p = self.params
        self.sample_rate = p.sample_rate
        self._api = OpenAIConnection(p, p.model, p.timeout_s)
        await self._api.check(self._voice_problem)

    async def teardown(self) -> None:
        if hasattr(self, "_api"):
            await self._api.close()

    async def _voice_problem(self) -> str | None:
        """Why ``voice`` cannot be used, when the server lists its voices at
        ``/audio/voices`` (flowvoice, Kokoro-FastAPI, vLLM-Omni) without it."""
        openai = openai_module()
        try:
            listing = await self._api.client.get("/audio/voices", cast_to=object)
        except (openai.NotFoundError, openai.PermissionDeniedError, openai.BadRequestError):
            return None
        voices = listing.get("voices", []) if isinstance(listing, dict) else []
        names = [
            v if isinstance(v, str) else str(v.get("id") or v.get("name"))
            for v in voices
            if isinstance(v, str | dict)
        ]
        if not names or self.params.voice in names:
            return None
        return (
            f"voice {self.params.voice!r} is not offered by {self._api.base_url} (it offers "
            f"{', '.join(sorted(names)[:20])})"
        )

    async def stream_audio(self, text: str, send: Send) -> None:
        p = self.params
        fields: dict[str, Any] = {"speed": p.speed} if p.speed != 1.0 else {}
        if p.instructions:
            fields["instructions"] = p.instructions
        try:
            async with self._api.client.audio.speech.with_streaming_response.create(
                model=p.model,
                voice=p.voice,
                input=text,
                response_format="pcm",
                extra_body=p.extra_body or None,
                **fields,
            ) as response:
                rate = pcm_rate(response.headers.get("content-type", "")) or p.sample_rate
                self.sample_rate = rate
                odd = b""
                async for chunk in response.iter_bytes():
                    data = odd + chunk
                    odd = data[len(data) & ~1 :]
                    if len(data) > 1:
                        await send(np.frombuffer(data[: len(data) & ~1], "<i2").copy())
        except Exception as exc:
            raise SynthesisFailed(self._api.describe(exc)) from exc
