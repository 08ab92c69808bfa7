"""The ``/v1/realtime`` connection: JSON events both ways, audio as base64 PCM16 at 24 kHz.

:class:`RealtimeTransport` is a :class:`~flowvoice.transport.WebSocketTransport` (the
``websocket.source`` / ``websocket.sink`` nodes find it the same way, so the same graph
serves ``/ws`` and ``/v1/realtime``), with the Realtime encoding: client events go to the
:class:`~flowvoice.realtime_api.driver.RealtimeDriver`, assistant audio leaves as
``response.output_audio.delta`` events in the same ordered outbox as every other event.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import numpy as np

from flowvoice.realtime_api import events as ev
from flowvoice.realtime_api.client_events import INVALID_EVENT, ClientEventError, parse_event
from flowvoice.realtime_api.config import RATE
from flowvoice.realtime_api.driver import RealtimeDriver
from flowvoice.runtime.session import Session
from flowvoice.transport import (
    ClientAudio,
    Limits,
    ProtocolError,
    WebSocketLike,
    WebSocketTransport,
)

#: Bounds sized for base64 audio: a 512 KiB message holds ~8 s of 24 kHz PCM16.
REALTIME_LIMITS = Limits(max_text_bytes=512 * 1024, inbox_chunks=2000)
#: Silence pushed after the audio on a commit, so the VAD ends the speech (its hang-over).
COMMIT_PADDING_S = 0.6
#: After a commit's audio reached the graph, time for the VAD to take it in.
COMMIT_SETTLE_S = 0.15
#: The longest a commit waits for the graph to take the queued audio.
COMMIT_DRAIN_TIMEOUT_S = 5.0


class RealtimeTransport(WebSocketTransport):
    """One Realtime client. :meth:`attach` it to its session before the loops run."""

    def __init__(self, websocket: WebSocketLike, limits: Limits | None = None):
        super().__init__(websocket, limits or REALTIME_LIMITS)
        self.sample_rate = RATE
        self.driver: RealtimeDriver | None = None

    def attach(self, session: Session, model: str) -> RealtimeDriver:
        """Make the session's driver (``model``: what the client asked for); sends
        ``session.created``."""
        self.driver = RealtimeDriver(
            session, self.push_event, self._send_input, self._flush_input, model
        )
        return self.driver

    def push_event(self, event: ev.Event) -> None:
        """Queue one server event."""
        self._push(None, json.dumps(event))

    # -- node and server side ----------------------------------------------------------------
    def send_event(self, event: dict[str, Any]) -> None:
        """A session event: the driver translates it (most have no Realtime counterpart)."""
        assert self.driver is not None
        self.driver.session_event(event)

    def audio_message(self, turn: int, sample_rate: int, samples: np.ndarray) -> str | None:
        assert self.driver is not None
        delta = self.driver.audio(turn, sample_rate, samples)
        return json.dumps(delta) if delta is not None else None

    def error_event(self, exc: ProtocolError, message: str) -> dict[str, Any]:
        param = event_id = None
        if isinstance(exc, ClientEventError):
            param, event_id = exc.param, exc.event_id
        return ev.error(exc.code, message, param=param, client_event_id=event_id)

    # -- client side -------------------------------------------------------------------------
    async def _handle(self, message: dict[str, Any]) -> None:
        assert self.driver is not None
        text = message.get("text")
        if text is None:
            raise ClientEventError(
                INVALID_EVENT,
                "binary messages are not part of the Realtime API: send audio as "
                "input_audio_buffer.append events (base64 PCM16, 24 kHz)",
            )
        await self.driver.handle(parse_event(text, self.limits.max_text_bytes))

    async def _send_input(self, samples: np.ndarray) -> None:
        await self._inbox.send(ClientAudio(samples, RATE, time.monotonic_ns()))

    async def _flush_input(self) -> None:
        """Push trailing silence so the VAD ends the speech, and let the graph take it all."""
        await self._send_input(np.zeros(int(COMMIT_PADDING_S * RATE), np.int16))
        with anyio.move_on_after(COMMIT_DRAIN_TIMEOUT_S):
            while len(self._inbox):
                await anyio.sleep(0.01)
        await anyio.sleep(COMMIT_SETTLE_S)


# -- the handshake (a Starlette WebSocket, duck-typed) ---------------------------------------

API_KEY_SUBPROTOCOL = "openai-insecure-api-key."


def realtime_token(websocket: Any) -> str:
    """The client's token: ``Authorization: Bearer``, a browser's
    ``openai-insecure-api-key.<key>`` subprotocol, or ``?token=``."""
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for offered in websocket.scope.get("subprotocols", []):
        if offered.startswith(API_KEY_SUBPROTOCOL):
            return offered[len(API_KEY_SUBPROTOCOL) :]
    return websocket.query_params.get("token", "")


def realtime_subprotocol(websocket: Any) -> str | None:
    """``realtime`` when the client offered it (browsers fail the handshake otherwise)."""
    return "realtime" if "realtime" in websocket.scope.get("subprotocols", []) else None
