"""What the nodes that call an OpenAI-compatible server share: the connection params, the
client (key from an environment variable, never from YAML), the model check and plain-words
descriptions of the SDK's errors. Used by ``llm.openai``, ``stt.openai`` and ``tts.openai``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from pydantic import Field

from flowvoice.node import NodeParams, NodeSetupError
from flowvoice.nodes._deps import require

#: OpenAI's own API, when neither ``base_url`` nor $OPENAI_BASE_URL names another server.
OPENAI_API_URL = "https://api.openai.com/v1"


class OpenAIServerParams(NodeParams):
    """Where the server is and which environment variable holds its key."""

    base_url: str | None = Field(
        None,
        description="API base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1; "
        "default $OPENAI_BASE_URL, else OpenAI's.",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (never the key "
        "itself); optional for a local base_url.",
    )


def openai_module() -> ModuleType:
    """The ``openai`` package, or a NodeSetupError naming the extra."""
    return require("openai", "openai", "pip install 'flowvoice[openai]'")


def open_client(params: OpenAIServerParams, timeout_s: float) -> Any:
    """An ``openai.AsyncOpenAI`` for ``params``, with no retries of its own (callers decide).

    ``timeout_s`` bounds each wait for the server (connect at most 5 s, then every read)."""
    openai = openai_module()
    key = os.environ.get(params.api_key_env, "")
    base_url = params.base_url or os.environ.get("OPENAI_BASE_URL") or None
    if not key:
        if base_url is None:
            raise NodeSetupError(
                f"no API key: set the environment variable {params.api_key_env} (the param "
                "`api_key_env` names it), or set `base_url` to a local server"
            )
        key = "no-key-required"
    return openai.AsyncOpenAI(
        api_key=key,
        # explicit: the client would take an empty $OPENAI_BASE_URL (as compose passes an
        # unset variable) for the URL
        base_url=base_url or OPENAI_API_URL,
        timeout=openai.Timeout(timeout_s, connect=min(5.0, timeout_s)),
        max_retries=0,
    )


def server_url(client: Any) -> str:
    """The client's base URL, for messages."""
    return str(client.base_url).rstrip("/")


async def served_models(client: Any) -> list[str]:
    """The ids the server lists at ``/models``; empty when it lists none."""
    openai = openai_module()
    try:
        return [m.id async for m in client.models.list()]
    except (openai.NotFoundError, openai.PermissionDeniedError):
        return []  # the server does not list models: nothing to check


def unserved_model(model: str, served: list[str], where: str) -> str | None:
    """Why ``model`` cannot be used, when the server lists its models and not that one."""
    if not served or model in served:
        return None
    return f"model {model!r} is not served by {where} (it serves {', '.join(sorted(served)[:10])})"


def describe_api_error(
    exc: Exception, where: str, model: str, key_env: str
) -> tuple[str, bool] | None:
    """(what went wrong in plain words, whether retrying may help) for an ``openai`` error or
    a transport error inside a stream (cut or stalled); None for any other exception."""
    openai = openai_module()
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return f"cannot reach {where} ({type(exc).__name__}: {exc})", True
    if isinstance(exc, openai.AuthenticationError):
        return f"{where} rejected the API key from ${key_env} ({exc.status_code})", False
    if isinstance(exc, openai.NotFoundError):
        return f"model {model!r} was not found at {where} ({exc.message})", False
    if isinstance(exc, openai.RateLimitError | openai.InternalServerError):
        return f"{where} is overloaded or failing ({exc.status_code}: {exc.message})", True
    if isinstance(exc, openai.APIStatusError):
        return f"{where} refused the request ({exc.status_code}: {exc.message})", False
    if isinstance(exc, _transport_errors()):
        what = "stalled" if "Timeout" in type(exc).__name__ else "broke off"
        return f"the stream from {where} {what} ({type(exc).__name__}: {exc})", True
    return None


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP clients' transport errors a stream raises unwrapped (httpx2 under openai 3,
    httpx before)."""
    errors = []
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(name).TransportError)
    return tuple(errors)


class OpenAIConnection:
    """A speech node's client of one server: opened at setup, which fails (NodeSetupError)
    when the server cannot be reached or lists its models without ``model``."""

    def __init__(self, params: OpenAIServerParams, model: str, timeout_s: float):
        self.params, self.model = params, model
        self.client = open_client(params, timeout_s)
        self.base_url = server_url(self.client)

    async def check(self, *more: Callable[[], Awaitable[str | None]]) -> None:
        """Check the model, then each of ``more`` (a problem in words, or None)."""

        async def model_problem() -> str | None:
            return unserved_model(self.model, await served_models(self.client), self.base_url)

        for check in (model_problem, *more):
            try:
                problem = await check()
            except openai_module().APIConnectionError as exc:
                raise NodeSetupError(
                    f"{self.describe(exc)}: is the server running, and is `base_url` right?"
                ) from exc
            except Exception as exc:
                raise NodeSetupError(self.describe(exc)) from exc
            if problem:
                raise NodeSetupError(problem)

    def describe(self, exc: Exception) -> str:
        """:func:`describe_api_error`'s words for ``exc``; re-raised when it is not an API
        or transport error."""
        described = describe_api_error(exc, self.base_url, self.model, self.params.api_key_env)
        if described is None:
            raise exc
        return described[0]

    async def close(self) -> None:
        await self.client.close()
