"""LLMs behind an HTTP API: ``llm.ollama`` (Ollama's /api/chat) and ``llm.openai`` (any
OpenAI-compatible server: OpenAI, vLLM, llama.cpp's server, LM Studio, Ollama's /v1).

Both stream the reply as it is generated and share :class:`~flowvoice.nodes.llm_base.StreamingLLM`'s
history and reply bookkeeping with ``llm.llamacpp``. An interrupt cancels the node's dispatch;
the HTTP response is then closed (shielded from the cancellation, bounded in time), so the
server sees the disconnect and stops generating.

A server that is down, a missing model or a rejected key never ends the session: the turn
gets an ``error`` event (and, unless ``error_reply`` is empty, a short spoken apology).
Connection failures and overload (429 / 5xx) before the first token are retried with
exponential backoff, which also covers a server that is still starting.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import anyio
from pydantic import Field

from flowvoice.graph.registry import register
from flowvoice.nodes._deps import require
from flowvoice.nodes.llm_base import Emit, LLMParams, ReplyFailed, StreamingLLM
from flowvoice.nodes.openai_api import (
    OpenAIServerParams,
    describe_api_error,
    open_client,
    served_models,
    server_url,
    unserved_model,
)

#: How long closing an abandoned HTTP stream may take.
CLOSE_TIMEOUT_S = 2.0


class Retryable(Exception):
    """A failure worth retrying (server unreachable, overloaded); the message says why."""


class RemoteLLMParams(LLMParams):
    model: str = Field(description="Model name on the server.")
    retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed request before the first token."
    )
    retry_backoff_s: float = Field(
        0.5, ge=0, le=30, description="Wait before the first retry; doubles each time."
    )
    timeout_s: float = Field(
        60.0, gt=0, le=600, description="Longest wait for the server (connect, next chunk)."
    )
    error_reply: str = Field(
        "Sorry, I can't reach my language model right now.",
        description="Spoken when the reply fails (server down, unknown model, bad key); "
        "empty for silence. The error itself is published as an 'error' event.",
    )


class RemoteLLM(StreamingLLM):
    """Shared streaming, retry, cancellation and error reporting of the HTTP LLM nodes."""

    Params = RemoteLLMParams
    params: RemoteLLMParams

    def open_stream(self) -> Awaitable[tuple[AsyncIterator[str], Callable[[], Awaitable[Any]]]]:
        """Start the request: (text pieces, an async ``close`` for the response)."""
        raise NotImplementedError

    def describe_error(self, exc: Exception) -> Exception | None:
        """:class:`Retryable` or :class:`ReplyFailed` for a known client error, else None."""
        raise NotImplementedError

    async def generate(self, emit: Emit) -> None:
        p = self.params
        delay = p.retry_backoff_s
        for attempt in range(p.retries + 1):
            started = False
            try:
                pieces, close = await self.open_stream()
                try:
                    async for piece in pieces:
                        started = True
                        await emit(piece)
                finally:
                    with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                        await close()
                return
            except Exception as exc:
                error = exc if isinstance(exc, ReplyFailed) else self.describe_error(exc)
                if error is None:
                    raise
                if isinstance(error, Retryable) and not started and attempt < p.retries:
                    await anyio.sleep(delay)
                    delay *= 2
                    continue
                message = f"the reply was cut off: {error}" if started else str(error)
                await self.fail(message, started)
                raise ReplyFailed(message) from exc


# -- Ollama ------------------------------------------------------------------------------------


class OllamaParams(RemoteLLMParams):
    model: str = Field("llama3.2:3b", description="Ollama model tag (pulled with `ollama pull`).")
    host: str | None = Field(
        None, description="Ollama server URL; default $OLLAMA_HOST, else http://127.0.0.1:11434."
    )
    num_ctx: int | None = Field(
        None, ge=256, le=1_048_576, description="Context window (tokens); default: the model's."
    )
    keep_alive: str | int | None = Field(
        None,
        description="How long Ollama keeps the model loaded after a request ('5m', '1h', or "
        "seconds; -1 keeps it loaded); default: the server's.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="More Ollama options (top_p, repeat_penalty, ...)."
    )


@register("llm.ollama")
class OllamaLLM(RemoteLLM):
    """Answers each user turn with a reply streamed from an Ollama server (/api/chat)."""

    Params = OllamaParams
    params: OllamaParams

    async def setup(self) -> None:
        ollama = require("ollama", "ollama", "pip install 'flowvoice[ollama]'")
        self._ollama = ollama
        self._httpx = require("httpx", "httpx", "pip install 'flowvoice[ollama]'")
        p = self.params
        self._client = ollama.AsyncClient(
            host=p.host, timeout=self._httpx.Timeout(p.timeout_s, connect=min(5.0, p.timeout_s))
        )
        self.host = p.host or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"

    async def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await client.close()

    async def open_stream(self) -> tuple[AsyncIterator[str], Callable[[], Awaitable[Any]]]:
        p = self.params
        options = {"temperature": p.temperature, "num_predict": p.max_tokens, **p.options}
        if p.num_ctx:
            options["num_ctx"] = p.num_ctx
        parts = await self._client.chat(
            model=p.model,
            messages=self.history.chat_messages(),
            stream=True,
            options=options,
            keep_alive=p.keep_alive,
        )

        async def pieces() -> AsyncIterator[str]:
            async for part in parts:
                if part.message.content:
                    yield part.message.content

        return pieces(), parts.aclose

    def describe_error(self, exc: Exception) -> Exception | None:
        p, httpx = self.params, self._httpx
        if isinstance(exc, self._ollama.ResponseError):
            if exc.status_code == 404 or "not found" in str(exc.error).lower():
                return ReplyFailed(
                    f"model {p.model!r} is not available on the Ollama server at {self.host}: "
                    f"run `ollama pull {p.model}` ({exc.error})"
                )
            if exc.status_code == 429 or exc.status_code >= 500:
                return Retryable(f"the Ollama server at {self.host} failed: {exc}")
            return ReplyFailed(f"the Ollama server at {self.host} refused the request: {exc}")
        if isinstance(exc, (httpx.TransportError, ConnectionError)):
            return Retryable(
                f"cannot reach the Ollama server at {self.host} ({type(exc).__name__}: {exc}); "
                "is `ollama serve` running? (set `host` or $OLLAMA_HOST)"
            )
        return None


# -- OpenAI-compatible ---------------------------------------------------------------------------


class OpenAIParams(RemoteLLMParams, OpenAIServerParams):
    model: str = Field("gpt-4o-mini", description="Model name on the server.")
    prompt_style: Literal["chat", "completion"] = Field(
        "chat",
        description="'chat': /chat/completions with messages; 'completion': /completions with "
        "a few-shot transcript prompt (for base models).",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON fields for the request (server-specific sampling options, "
        "e.g. top_k or repeat_penalty on vLLM and llama.cpp).",
    )
    check_model: bool = Field(
        True,
        description="Before the first request, ask /models whether the server has `model` "
        "(local servers silently answer with another model otherwise).",
    )


@register("llm.openai")
class OpenAILLM(RemoteLLM):
    """Answers each user turn with a reply streamed from an OpenAI-compatible API."""

    Params = OpenAIParams
    params: OpenAIParams

    async def setup(self) -> None:
        p = self.params
        self._client = open_client(p, p.timeout_s)  # retried here, before the first token only
        self.base_url = server_url(self._client)
        self._model_checked = not p.check_model

    async def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await client.close()

    async def _check_model(self) -> None:
        """Fail clearly when the server lists its models and ``model`` is not among them."""
        problem = unserved_model(
            self.params.model, await served_models(self._client), self.base_url
        )
        if problem:
            raise ReplyFailed(problem)
        self._model_checked = True

    async def open_stream(self) -> tuple[AsyncIterator[str], Callable[[], Awaitable[Any]]]:
        if not self._model_checked:
            await self._check_model()
        p = self.params
        common: dict[str, Any] = {
            "model": p.model,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
        }
        if p.extra_body:
            common["extra_body"] = p.extra_body
        if p.prompt_style == "completion":
            stream = await self._client.completions.create(
                prompt=self.history.completion_prompt(),
                stop=self.history.completion_stop(),
                stream=True,
                **common,
            )
        else:
            stream = await self._client.chat.completions.create(
                messages=self.history.chat_messages(), stream=True, **common
            )

        async def pieces() -> AsyncIterator[str]:
            async for chunk in stream:
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = choice.text if p.prompt_style == "completion" else choice.delta.content
                if text:
                    yield text

        return pieces(), stream.close

    def describe_error(self, exc: Exception) -> Exception | None:
        p = self.params
        described = describe_api_error(exc, self.base_url, p.model, p.api_key_env)
        if described is None:
            return None
        message, retryable = described
        return Retryable(message) if retryable else ReplyFailed(message)
