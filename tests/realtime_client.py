"""A Realtime API test client: the real ``openai`` SDK connection, every server event checked
strictly against ``openai.types.realtime`` as it arrives."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import numpy as np
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
RATE = 24000
CHUNK_MS = 20


def openai_client(port: int, api_key: str = "not-needed") -> AsyncOpenAI:
    """An SDK client for a local flowvoice (``websocket_base_url`` keeps it on plain ws)."""
    return AsyncOpenAI(
        api_key=api_key,
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
    )


class Events:
    """The server events received so far (raw dicts, each validated), and waiting for more."""

    def __init__(self, connection: Any):
        self.connection = connection
        self.received: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.invalid: list[str] = []
        self._new = asyncio.Event()

    async def pump(self) -> None:
        """Receive until the connection closes."""
        try:
            while True:
                raw = await self.connection.recv_bytes()
                event = json.loads(raw)
                try:
                    SERVER_EVENT.validate_python(event)
                except Exception as exc:  # a protocol violation: the test fails on it
                    self.invalid.append(f"{event.get('type')}: {exc}")
                self.connection.parse_event(raw)  # what the SDK itself makes of it
                self.received.append(event)
                self.times.append(time.monotonic())
                self._new.set()
        except Exception:
            self._new.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e["type"] == kind]

    def types(self) -> list[str]:
        return [e["type"] for e in self.received]

    async def wait_for(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = 60,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event of ``kind`` (from index ``after``) matching ``where``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.received[after:]:
                if event["type"] == kind and where(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {kind} within {timeout} s; got {self.types()[-30:]}; "
                    f"errors {self.of('error')}"
                )
            self._new.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    def audio(self, response_id: str) -> np.ndarray:
        """The decoded 24 kHz audio of a response."""
        chunks = [
            np.frombuffer(base64.b64decode(e["delta"]), "<i2")
            for e in self.of("response.output_audio.delta")
            if e["response_id"] == response_id
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@asynccontextmanager
async def realtime_session(
    port: int, api_key: str = "not-needed"
) -> AsyncIterator[tuple[Any, Events]]:
    """An SDK Realtime connection and its events (received in the background)."""
    client = openai_client(port, api_key)
    async with client.realtime.connect(
        model="flowvoice", websocket_connection_options={"proxy": None}
    ) as connection:
        events = Events(connection)
        pump = asyncio.create_task(events.pump())
        try:
            await events.wait_for("session.created", timeout=30)
            yield connection, events
        finally:
            pump.cancel()
        assert events.invalid == []


async def stream_audio(connection: Any, samples: np.ndarray) -> float:
    """Append 24 kHz audio in real time, 20 ms a message; returns when the last was sent."""
    step = RATE * CHUNK_MS // 1000
    start = time.monotonic()
    for index, offset in enumerate(range(0, len(samples), step)):
        chunk = np.asarray(samples[offset : offset + step], "<i2").tobytes()
        await connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        await asyncio.sleep(max(0.0, start + (index + 1) * CHUNK_MS / 1000 - time.monotonic()))
    return time.monotonic()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)
