"""A stand-in OpenAI-compatible LLM server for fault tests: run it, kill it, start it again.

    python tests/fake_openai.py PORT [--delay SECONDS]

Serves model ``fake`` on 127.0.0.1:PORT: ``GET /v1/models`` and streaming
``POST /v1/chat/completions`` (server-sent events) whose reply is :data:`REPLY`, one word
per chunk, ``--delay`` seconds apart, so a test can kill the process mid-reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MODEL = "fake"
REPLY = "Hello there. This reply streams one word at a time, slowly enough to be cut short."


def app(delay: float) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        model = {"id": MODEL, "object": "model", "created": 0, "owned_by": "tests"}
        return JSONResponse({"object": "list", "data": [model]})

    async def completions(request: Request) -> StreamingResponse:
        await request.json()

        async def events() -> AsyncIterator[str]:
            for i, word in enumerate(REPLY.split(" ")):
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": MODEL,
                    "choices": [
                        {"index": 0, "delta": {"content": (" " if i else "") + word}}
                        | {"finish_reason": None}
                    ],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
                await asyncio.sleep(delay)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    uvicorn.run(app(args.delay), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
