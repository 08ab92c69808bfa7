"""Reclaiming connections whose client went silent or stopped reading.

Three settings of the graph's ``server`` block (and ``flowvoice run`` options) bound how long
a dead connection holds its session: WebSocket pings (``ping_interval_s``, ``ping_timeout_s``:
the server pings, a client that does not answer is dropped; the ASGI server does this),
``idle_timeout_s`` (no message at all from the client: a browser streams microphone audio
every 20 ms) and ``write_timeout_s`` (one send that the client does not take off the wire).
:class:`TimedWebSocket` applies the last two around the transport's socket and keeps the
reason, which the server logs.
"""

from __future__ import annotations

from typing import Any

import anyio

from flowvoice.graph.spec import ServerSpec
from flowvoice.transport import WebSocketLike

#: WebSocket close code for a connection closed by a timeout ("going away").
GOING_AWAY = 1001
#: Disconnect codes of a connection that ended without a close handshake.
ABNORMAL = (1005, 1006)
#: How long closing a timed-out socket may take (a client that stops reading never acks it).
CLOSE_TIMEOUT_S = 1.0


def uvicorn_keepalive(server: ServerSpec) -> dict[str, float | None]:
    """The ``uvicorn.Config`` options of the ``server`` block's WebSocket pings."""
    return {
        "ws_ping_interval": server.ping_interval_s or None,
        "ws_ping_timeout": server.ping_timeout_s or None,
    }


class ConnectionTimedOut(Exception):
    """A send took longer than the write timeout."""


class TimedWebSocket:
    """``websocket`` with the idle timeout on ``receive`` and the write timeout on sends
    (seconds; 0: none).

    An idle client reads as a disconnect; a send past the write timeout raises
    :class:`ConnectionTimedOut`. Either way :attr:`reason` says why, for the log.
    """

    def __init__(self, websocket: WebSocketLike, idle_s: float, write_s: float):
        self.websocket = websocket
        self.idle_s, self.write_s = idle_s, write_s
        self.reason: str | None = None

    async def receive(self) -> dict[str, Any]:
        with anyio.move_on_after(self.idle_s or float("inf")):
            message = await self.websocket.receive()
            code = message.get("code")
            if message["type"] == "websocket.disconnect" and code in ABNORMAL:
                self.reason = (
                    f"the connection ended without a close frame (code {code}): the client "
                    "vanished (no pong within ping_timeout_s, or a reset)"
                )
            return message
        self.reason = f"no message from the client for {self.idle_s:g} s (idle_timeout_s)"
        with anyio.move_on_after(CLOSE_TIMEOUT_S):
            await self.websocket.close(GOING_AWAY)
        return {"type": "websocket.disconnect", "code": GOING_AWAY}

    async def send_bytes(self, data: bytes) -> None:
        await self._timed_send(self.websocket.send_bytes, data)

    async def send_text(self, data: str) -> None:
        await self._timed_send(self.websocket.send_text, data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.websocket.close(code, reason)

    async def _timed_send(self, send: Any, data: Any) -> None:
        with anyio.move_on_after(self.write_s or float("inf")) as waited:
            await send(data)
        if waited.cancelled_caught:
            self.reason = f"the client took no data for {self.write_s:g} s (write_timeout_s)"
            raise ConnectionTimedOut(self.reason)
