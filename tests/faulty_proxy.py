"""A proxy in front of a real speech server that breaks chosen replies, for fault tests.

Requests pass through to ``upstream`` (``http://127.0.0.1:P``) unchanged, except the first
``faults[path]`` replies to ``path`` (e.g. ``/v1/audio/speech``), which it breaks as
``mode`` says:

- ``"500"``: an HTTP 500 with an OpenAI-shaped error body, the server never asked;
- ``"cut"``: the real status and headers and ``after_bytes`` of the body, then the
  connection is dropped (a server dying mid-stream);
- ``"stall"``: the real status and headers and ``after_bytes`` of the body, then nothing,
  with the connection held open (a hung server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "host"}


@dataclass
class FaultyProxy:
    upstream: str
    mode: str
    faults: dict[str, int] = field(default_factory=dict)
    after_bytes: int = 0
    broken: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST"])])

    async def forward(self, request: Request) -> Response:
        path = request.url.path
        fault = self.faults.get(path, 0) > 0
        if fault:
            self.faults[path] -= 1
            self.broken.append(path)
            if self.mode == "500":
                error = {"message": "injected failure", "type": "server_error", "code": None}
                return JSONResponse({"error": error}, status_code=500)
        client = httpx.AsyncClient(timeout=60)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        upstream = await client.send(
            client.build_request(
                request.method, self.upstream + path, headers=headers, content=await request.body()
            ),
            stream=True,
        )

        async def body() -> AsyncIterator[bytes]:
            try:
                sent = 0
                async for chunk in upstream.aiter_raw():
                    if fault and sent + len(chunk) > self.after_bytes:
                        yield chunk[: self.after_bytes - sent]
                        if self.mode == "stall":
                            await anyio.sleep(3600)
                        raise ConnectionResetError("injected: the server died mid-stream")
                    sent += len(chunk)
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        return StreamingResponse(body(), status_code=upstream.status_code, headers=kept)
