"""Real LLM servers on 127.0.0.1 for the remote LLM node tests.

- :func:`llama_server`: ``python -m llama_cpp.server`` with the shipped gemma3-270m GGUF (the
  file llm.llamacpp assembles), an OpenAI-compatible API with a real model behind it.
- :func:`ollama_app`: a Starlette app speaking Ollama's ``/api/chat`` NDJSON streaming
  protocol. It renders the chat like an Ollama Modelfile with example ``MESSAGE``s (the model
  is a base model) and streams the completion from the llama.cpp server: real model output.
  It records every request and whether the client hung up before the reply ended.
- :func:`serve_app`: uvicorn in a thread on a given socket, started when asked (a socket that
  is bound but not yet listening refuses connections: a server that is "still starting").
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowvoice.testing.server_process import free_port, stop_process

ALIAS = "gemma3-270m"
SERVER_MODULES = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


@dataclass
class LlamaServer:
    url: str  # the OpenAI base URL, .../v1
    log: Path
    api_key: str

    def disconnects(self) -> int:
        """Streams the server saw the client abandon (it prints a line for each)."""
        return self.log.read_text(errors="replace").count("Disconnected from client")


@contextmanager
def llama_server(tmp: Path, start_timeout: float = 90.0) -> Iterator[LlamaServer]:
    """Start llama_cpp.server with gemma3-270m on a free port; stop it afterwards."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs pip install 'llama-cpp-python[server]' (missing {', '.join(missing)})")
    from flowvoice.nodes.llm import GEMMA, resolve_gguf

    model = resolve_gguf(GEMMA)
    port, key = free_port(), "test-key-123"
    log = tmp / "llama_server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "2", "--n_ctx", "2048", "--chat_format", "gemma",
        "--interrupt_requests", "False", "--verbose", "False", "--api_key", key,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited:\n{log.read_text()[-2000:]}")
            try:
                headers = {"Authorization": f"Bearer {key}"}
                if httpx.get(f"{url}/models", headers=headers, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not up within {start_timeout} s")
            time.sleep(0.2)
        yield LlamaServer(url, log, key)
    finally:
        stop_process(process, 10)


@dataclass
class OllamaRecord:
    """What the fake Ollama saw: one entry per /api/chat request."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Per request: "done" (reply sent to the end) or "abandoned" (client hung up), with time.
    endings: list[tuple[str, float]] = field(default_factory=list)


def ollama_app(llama: LlamaServer, record: OllamaRecord) -> Any:
    """A Starlette app serving Ollama's /api/chat (NDJSON stream) from the llama.cpp server."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from flowvoice.nodes.chat_history import FEW_SHOT

    def render(messages: list[dict[str, str]]) -> str:
        """The chat as a transcript: the 'template' of this base model, with example turns."""
        system = [m["content"] for m in messages if m["role"] == "system"]
        lines = [*system, ""] if system else []
        for question, answer in FEW_SHOT:
            lines += [f"User: {question}", f"Assistant: {answer}"]
        for m in messages:
            if m["role"] != "system":
                speaker = "User" if m["role"] == "user" else "Assistant"
                lines.append(f"{speaker}: {' '.join(m['content'].split())}")
        return "\n".join([*lines, "Assistant:"])

    def line(content: str, done: bool, **extra: Any) -> str:
        stamp = datetime.now(timezone.utc).isoformat()
        message = {"role": "assistant", "content": content}
        return json.dumps({"model": ALIAS, "created_at": stamp, "message": message,
                           "done": done, **extra}) + "\n"  # fmt: skip

    async def chat(request: Request) -> Any:
        body = await request.json()
        record.requests.append(body)
        if body.get("model") != ALIAS:
            error = f'model "{body.get("model")}" not found, try pulling it first'
            return JSONResponse({"error": error}, status_code=404)
        options = body.get("options") or {}
        payload = {
            "model": ALIAS,
            "prompt": render(body["messages"]),
            "max_tokens": options.get("num_predict", 64),
            "temperature": options.get("temperature", 0.0),
            "stop": options.get("stop", ["\nUser:", "\n"]),
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {llama.api_key}"}

        async def stream() -> Any:
            ending = "abandoned"
            try:
                async with (
                    httpx.AsyncClient(timeout=60) as client,
                    client.stream(
                        "POST", f"{llama.url}/completions", json=payload, headers=headers
                    ) as upstream,
                ):
                    async for sse in upstream.aiter_lines():
                        data = sse.removeprefix("data: ").strip()
                        if not sse.startswith("data: ") or data == "[DONE]":
                            continue
                        text = json.loads(data)["choices"][0]["text"]
                        if text:
                            yield line(text, False)
                yield line("", True, done_reason="stop")
                ending = "done"
            finally:
                record.endings.append((ending, time.monotonic()))

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])


@contextmanager
def serve_app(app: Any, sock: socket.socket, delay: float = 0.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on the bound ``sock`` after ``delay`` seconds (a thread)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

    def run() -> None:
        time.sleep(delay)
        server.run(sockets=[sock])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def bound_socket() -> socket.socket:
    """A socket bound to a free loopback port, not listening yet (connections are refused)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def wait_listening(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not up within {timeout} s")
