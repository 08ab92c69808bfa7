"""One simulated user of ``flowvoice bench load``: a WebSocket client that speaks like a mic.

It streams 20 ms PCM16 frames on a real-time schedule (silence between questions, as an
open microphone does), speaks a question, keeps the line open until the whole reply has been
received and played (real time from its first byte), pauses, and asks the next one. Per
question it times end of the question audio sent -> first reply audio byte received, and
keeps the server's ``metrics`` latency trace of the reply turn.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from flowvoice.transport import AUDIO_HEADER

RATE = 16000
FRAME = RATE // 50  # 20 ms
#: After the reply's last byte, the line stays quiet this long before the reply counts as over.
QUIET_S = 0.3


@dataclass
class Exchange:
    """One spoken question and its reply, as this client saw them."""

    question: str
    spoken_at: float
    """Monotonic time the last frame of the question was sent (end of its speech)."""
    turn: int | None = None
    client_ms: float | None = None
    """End of the question sent -> first reply audio byte received, None if unanswered."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    """The server's trace of the reply turn (``metrics`` event), from end of speech."""
    user: str = ""
    reply: str = ""


@dataclass
class Inbox:
    """What the server sent: per turn, arrival times, audio seconds and events."""

    first_audio: dict[int, float] = field(default_factory=dict)
    audio_s: dict[int, float] = field(default_factory=dict)
    last_audio_at: float = 0.0
    committed_at: dict[int, float] = field(default_factory=dict)
    user: dict[int, str] = field(default_factory=dict)
    reply: dict[int, str] = field(default_factory=dict)
    final: set[int] = field(default_factory=set)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    closed: bool = False

    def add(self, message: str | bytes, now: float) -> None:
        if isinstance(message, bytes):
            turn, rate = AUDIO_HEADER.unpack_from(message)
            self.first_audio.setdefault(turn, now)
            samples = (len(message) - AUDIO_HEADER.size) // 2
            self.audio_s[turn] = self.audio_s.get(turn, 0.0) + samples / rate
            self.last_audio_at = now
            return
        event: dict[str, Any] = json.loads(message)
        kind, turn = event.get("type"), event.get("turn")
        if kind == "user_turn":
            self.committed_at[turn] = now
            self.user[turn] = event.get("text", "")
        elif kind == "assistant_text":
            self.reply[turn] = self.reply.get(turn, "") + event.get("text", "")
            if event.get("final"):
                self.final.add(turn)
        elif kind == "metrics":
            self.metrics[turn] = event.get("latency_ms", {})
        elif kind == "error":
            self.errors.append(str(event.get("message", event)))

    def reply_turn(self, asked_at: float, spoken_at: float) -> int | None:
        """The first turn committed after ``asked_at`` whose audio began after ``spoken_at``."""
        replies = [
            (first, turn)
            for turn, first in self.first_audio.items()
            if first >= spoken_at and self.committed_at.get(turn, math.inf) >= asked_at
        ]
        return min(replies)[1] if replies else None

    def reply_over(self, turn: int, now: float) -> bool:
        """The reply's text is complete and its audio has been played out."""
        played_out = self.first_audio[turn] + self.audio_s[turn]
        return turn in self.final and now >= played_out and now - self.last_audio_at >= QUIET_S


class Mic:
    """Sends 20 ms frames on a real-time schedule: each one when it would have been captured."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.next_at = time.monotonic()

    async def send(self, samples: np.ndarray) -> None:
        data = np.asarray(samples, "<i2")
        for offset in range(0, len(data), FRAME):
            self.next_at += FRAME / RATE
            delay = self.next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.ws.send(data[offset : offset + FRAME].tobytes())

    async def silence(self, seconds: float) -> None:
        await self.send(np.zeros(int(seconds * RATE), np.int16))

    async def silence_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Silence until ``done()`` (True) or ``timeout_s`` (False)."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline:
                return False
            await self.send(np.zeros(FRAME, np.int16))
        return True


async def _read(ws: ClientConnection, inbox: Inbox) -> None:
    try:
        async for message in ws:
            inbox.add(message, time.monotonic())
    except ConnectionClosed:
        pass
    finally:
        inbox.closed = True


async def converse(
    url: str,
    questions: Sequence[tuple[str, np.ndarray]],
    *,
    lead_s: float = 0.5,
    pause_s: float = 1.0,
    reply_timeout_s: float = 15.0,
    reply_max_s: float = 30.0,
    after_reply: Callable[[Exchange], Awaitable[None]] | None = None,
) -> tuple[list[Exchange], list[str]]:
    """Speak ``questions`` ((text, 16 kHz samples) pairs) to the server at ``url`` after
    ``lead_s`` of silence; returns the exchanges and any errors the server reported.

    A question gets ``reply_timeout_s`` for its reply to start and ``reply_max_s`` more for
    it to finish; the next question follows ``pause_s`` after the reply (``after_reply`` is
    awaited first, the microphone kept open meanwhile).
    """
    inbox = Inbox()
    exchanges: list[Exchange] = []
    async with connect(
        url, proxy=None, compression=None, max_size=None, open_timeout=30, close_timeout=5
    ) as ws:
        reader = asyncio.create_task(_read(ws, inbox))
        mic = Mic(ws)
        try:
            await ws.send(json.dumps({"type": "hello", "sample_rate": RATE}))
            await mic.silence(lead_s)
            for text, samples in questions:
                asked_at = time.monotonic()
                await mic.send(samples)
                exchange = Exchange(text, spoken_at=time.monotonic())
                exchanges.append(exchange)

                def replied(ex: Exchange = exchange, start: float = asked_at) -> bool:
                    ex.turn = inbox.reply_turn(start, ex.spoken_at)
                    return ex.turn is not None or inbox.closed

                await mic.silence_until(replied, reply_timeout_s)
                turn = exchange.turn
                if turn is not None:
                    exchange.client_ms = (inbox.first_audio[turn] - exchange.spoken_at) * 1000
                    await mic.silence_until(
                        lambda t=turn: inbox.reply_over(t, time.monotonic()) or inbox.closed,
                        reply_max_s,
                    )
                if inbox.closed:
                    break
                if after_reply is not None:
                    await after_reply(exchange)
                    mic.next_at = time.monotonic()  # no burst of frames owed for the wait
                await mic.silence(pause_s)
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
    for exchange in exchanges:
        if exchange.turn is not None:
            exchange.latency_ms = inbox.metrics.get(exchange.turn, {})
            exchange.user = inbox.user.get(exchange.turn, "")
            exchange.reply = inbox.reply.get(exchange.turn, "")
    if inbox.closed and len(exchanges) < len(questions):
        inbox.errors.append(f"connection closed after {len(exchanges)} questions")
    return exchanges, inbox.errors
