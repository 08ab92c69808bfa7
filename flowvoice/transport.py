"""The WebSocket wire protocol and the per-connection transports that nodes talk to:
:class:`BrowserTransport` (what every transport shares) and :class:`WebSocketTransport`
(``/ws``); the WebRTC one is :mod:`flowvoice.webrtc`.

Client -> server (``/ws``)
    binary  PCM16LE mono audio at the hello's sample rate (16000 until told), ~20 ms each.
    text    ``{"type": "hello", "sample_rate": 48000}`` -- the real capture rate (optional).
            ``{"type": "played", "turn": 3, "ms": 1240}`` -- assistant audio of that turn
            heard so far (cumulative).

Server -> client
    binary  assistant audio: an 8-byte header, then PCM16LE mono samples.
            Header (little-endian): ``uint32 turn`` at offset 0, ``uint32 sample_rate`` at
            offset 4 (``struct`` format ``"<II"``); the samples start at offset 8.
    text    JSON events, each with a ``type``: ``partial_transcript``, ``final_transcript``,
            ``user_turn``, ``assistant_text``, ``interrupt``, ``metrics``, ``error``
            (``{"type": "error", "code": ..., "message": ...}``, plus ``node`` and
            ``node_type`` when a node failed).

Malformed client messages get an ``error`` event (codes below) and are otherwise ignored.
This module imports no web framework: the WebSocket is duck-typed (ASGI-style
``receive`` / ``send_bytes`` / ``send_text`` / ``close``).
"""

from __future__ import annotations

import json
import logging
import math
import struct
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import numpy as np

from flowvoice.runtime.channel import Channel, ChannelClosed, Overflow

log = logging.getLogger("flowvoice.transport")

AUDIO_HEADER = struct.Struct("<II")
"""Server audio header: turn, sample rate (uint32 little-endian each)."""

DEFAULT_SAMPLE_RATE = 16000
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000

# Error codes sent in ``error`` events.
ODD_LENGTH = "odd_length"
TOO_LARGE = "too_large"
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_TYPE = "unknown_type"
NODE_FAILED = "node_failed"
INTERNAL = "internal"


class WebSocketLike(Protocol):
    async def receive(self) -> dict[str, Any]: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def send_text(self, data: str) -> None: ...
    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(frozen=True)
class Limits:
    """Bounds on what one connection may send and queue."""

    max_binary_bytes: int = 64 * 1024
    max_text_bytes: int = 4 * 1024
    inbox_chunks: int = 500
    outbox_audio_messages: int = 256
    #: Protocol errors answered with an ``error`` event; later ones are only counted.
    error_events: int = 100


@dataclass(slots=True)
class ClientAudio:
    """One message of client audio, as received."""

    samples: np.ndarray
    sample_rate: int
    t_ns: int


class ProtocolError(ValueError):
    """A malformed client message; ``code`` is the ``error`` event's code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def encode_audio(turn: int, sample_rate: int, samples: np.ndarray) -> bytes:
    """Header + PCM16LE payload of one server audio message."""
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    return AUDIO_HEADER.pack(turn, sample_rate) + pcm


def decode_audio(data: bytes) -> tuple[int, int, np.ndarray]:
    """Inverse of :func:`encode_audio`: ``(turn, sample_rate, samples)``."""
    turn, rate = AUDIO_HEADER.unpack_from(data)
    return turn, rate, np.frombuffer(data, dtype="<i2", offset=AUDIO_HEADER.size)


def parse_audio(data: bytes, limits: Limits) -> np.ndarray:
    """Client PCM16LE bytes -> int16 samples, or :class:`ProtocolError`."""
    if len(data) > limits.max_binary_bytes:
        raise ProtocolError(
            TOO_LARGE, f"audio message of {len(data)} bytes exceeds {limits.max_binary_bytes}"
        )
    if len(data) % 2:
        raise ProtocolError(ODD_LENGTH, f"PCM16 audio needs an even byte count, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def load_typed_json(
    text: str, max_bytes: int, codes: tuple[str, str, str] = (TOO_LARGE, BAD_JSON, BAD_MESSAGE)
) -> dict[str, Any]:
    """A client's JSON object with a string ``type``, or :class:`ProtocolError` with one of
    ``codes``: (too large, not JSON, not such an object)."""
    too_large, bad_json, bad_message = codes
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(too_large, f"text message exceeds {max_bytes} bytes")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(bad_json, f"invalid JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(bad_message, 'expected a JSON object with a string "type"')
    return message


def parse_control(text: str, limits: Limits) -> dict[str, Any]:
    """Validate one client JSON message; returns it or raises :class:`ProtocolError`."""
    message = load_typed_json(text, limits.max_text_bytes)
    kind = message["type"]
    if kind == "hello":
        rate = message.get("sample_rate", DEFAULT_SAMPLE_RATE)
        if not _is_int(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise ProtocolError(
                BAD_MESSAGE,
                f"hello.sample_rate must be an integer from {MIN_SAMPLE_RATE} to "
                f"{MAX_SAMPLE_RATE}, got {rate!r}",
            )
    elif kind == "played":
        turn, ms = message.get("turn"), message.get("ms")
        if not _is_int(turn) or turn < 0 or not _is_number(ms) or ms < 0:
            raise ProtocolError(BAD_MESSAGE, "played needs a turn (int >= 0) and ms (number >= 0)")
    else:
        raise ProtocolError(
            UNKNOWN_TYPE, f"unknown message type {kind!r}; expected hello or played"
        )
    return message


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class BrowserTransport:
    """What every browser transport shares: client audio in, JSON events and audio out.

    ``websocket.source`` reads :meth:`audio`, ``websocket.sink`` calls :meth:`send_audio`
    and :meth:`discard_audio`, and the server forwards session events with
    :meth:`send_event`. Client control messages (``hello``, ``played``) are parsed and
    answered the same way whatever carries them. The server runs :meth:`read_loop` and
    :meth:`write_loop` beside the session and calls :meth:`close` when it ends.
    """

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.sample_rate = DEFAULT_SAMPLE_RATE
        #: Called with (turn, seconds) when the client reports how much of a turn it played.
        self.on_played: Callable[[int, float], None] | None = None
        self.protocol_errors: Counter[str] = Counter()
        self._inbox: Channel[ClientAudio] = Channel(
            self.limits.inbox_chunks, Overflow.DROP_OLDEST, name="client audio"
        )

    @property
    def inbox_dropped(self) -> int:
        """Client audio messages dropped because the source fell behind."""
        return self._inbox.dropped

    async def audio(self) -> AsyncIterator[ClientAudio]:
        """Client audio messages in arrival order, until the connection ends."""
        while True:
            try:
                yield await self._inbox.receive()
            except ChannelClosed:
                return

    async def send_audio(self, turn: int, sample_rate: int, samples: np.ndarray) -> None:
        """Queue assistant audio; waits while too much audio is already queued."""
        raise NotImplementedError

    def send_event(self, event: dict[str, Any]) -> None:
        """Queue a JSON event."""
        raise NotImplementedError

    def discard_audio(self, before_turn: int) -> int:
        """Drop queued, not yet played audio of turns older than ``before_turn``."""
        raise NotImplementedError

    async def read_loop(self) -> None:
        """Receive from the client until it is gone, then end the audio input."""
        raise NotImplementedError

    async def write_loop(self) -> None:
        """Send to the client until :meth:`close` (or until the client is gone)."""
        raise NotImplementedError

    def close(self, code: int = 1000) -> None:
        """Send what is queued, then end the connection (``code`` as a WebSocket close code)."""
        raise NotImplementedError

    # -- for subclasses -----------------------------------------------------------------------
    async def receive_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Hand one message of client audio to the source (dropping the oldest if behind)."""
        if len(samples):
            await self._inbox.send(ClientAudio(samples, sample_rate, time.monotonic_ns()))

    def end_audio(self) -> None:
        """The client is gone: :meth:`audio` ends once the queued messages are read."""
        self._inbox.close()

    def receive_text(self, text: str) -> None:
        """Handle one client JSON message; a malformed one gets an ``error`` event."""
        try:
            control = parse_control(text, self.limits)
        except ProtocolError as exc:
            self.protocol_error(exc)
            return
        if control["type"] == "hello":
            self.sample_rate = control.get("sample_rate", DEFAULT_SAMPLE_RATE)
        else:
            self.client_played(control["turn"], control["ms"] / 1000)

    def client_played(self, turn: int, seconds: float) -> None:
        """The client reports it has played ``seconds`` of the turn's audio (cumulative)."""
        if self.on_played is not None:
            self.on_played(turn, seconds)

    def protocol_error(self, exc: ProtocolError) -> None:
        """Count a malformed client message and answer it with an ``error`` event."""
        self.protocol_errors[exc.code] += 1
        count = sum(self.protocol_errors.values())
        if count <= self.limits.error_events:
            message = str(exc)
            if count == self.limits.error_events:
                message += " (further protocol errors are not reported)"
            self.push_event(self.error_event(exc, message))

    def error_event(self, exc: ProtocolError, message: str) -> dict[str, Any]:
        """The ``error`` event answering a malformed client message."""
        return {"type": "error", "code": exc.code, "message": message}

    def push_event(self, event: dict[str, Any]) -> None:
        """Queue an event for the client as it is (:meth:`send_event` may translate)."""
        self.send_event(event)


class WebSocketTransport(BrowserTransport):
    """One browser WebSocket: the wire protocol above.

    All outgoing messages go through one ordered outbox, so an ``interrupt`` event always
    follows the audio it supersedes.
    """

    def __init__(self, websocket: WebSocketLike, limits: Limits | None = None):
        super().__init__(limits)
        self.websocket = websocket
        self._outbox: deque[tuple[int | None, str | bytes]] = deque()
        self._queued_audio = 0
        self._wake = anyio.Event()
        self._room = anyio.Event()
        self._close_code: int | None = None

    # -- node side ----------------------------------------------------------------------------
    async def send_audio(self, turn: int, sample_rate: int, samples: np.ndarray) -> None:
        """Queue assistant audio; waits while too much audio is already queued."""
        while self._queued_audio >= self.limits.outbox_audio_messages:
            self._room = anyio.Event()
            await self._room.wait()
        message = self.audio_message(turn, sample_rate, samples)
        if message is not None:
            self._queued_audio += 1
            self._push(turn, message)

    def audio_message(self, turn: int, sample_rate: int, samples: np.ndarray) -> bytes | str | None:
        """The message carrying a chunk of assistant audio (None: nothing to send)."""
        return encode_audio(turn, sample_rate, samples)

    def send_event(self, event: dict[str, Any]) -> None:
        """Queue a JSON event."""
        self._push(None, json.dumps(event, default=str))

    def discard_audio(self, before_turn: int) -> int:
        """Drop queued, not yet sent audio of turns older than ``before_turn``."""
        kept = deque(m for m in self._outbox if m[0] is None or m[0] >= before_turn)
        dropped = len(self._outbox) - len(kept)
        self._outbox = kept
        self._queued_audio -= dropped
        self._room.set()
        return dropped

    # -- server side --------------------------------------------------------------------------
    async def read_loop(self) -> None:
        """Receive client messages until the client disconnects, then end the audio input."""
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    await self._handle(message)
                except ProtocolError as exc:
                    self.protocol_error(exc)
        finally:
            self.end_audio()

    async def _handle(self, message: dict[str, Any]) -> None:
        """One client message: binary audio or a JSON control message."""
        data, text = message.get("bytes"), message.get("text")
        if data is not None:
            await self.receive_audio(parse_audio(data, self.limits), self.sample_rate)
        elif text is not None:
            self.receive_text(text)

    async def write_loop(self) -> None:
        """Send queued messages in order; after :meth:`close`, drain and close the socket.

        Returns when the socket is closed or a send fails (the client is gone).
        """
        try:
            while True:
                while not self._outbox:
                    if self._close_code is not None:
                        await self.websocket.close(self._close_code)
                        return
                    self._wake = anyio.Event()
                    await self._wake.wait()
                turn, message = self._outbox.popleft()
                if turn is not None:
                    self._queued_audio -= 1
                    self._room.set()
                if isinstance(message, bytes):
                    await self.websocket.send_bytes(message)
                else:
                    await self.websocket.send_text(message)
        except Exception as exc:  # the peer went away mid-send
            log.debug("websocket send failed: %r", exc)

    def close(self, code: int = 1000) -> None:
        """Ask the writer to send what is queued, then close the socket with ``code``."""
        self._close_code = code
        self._wake.set()

    def _push(self, turn: int | None, message: str | bytes) -> None:
        self._outbox.append((turn, message))
        self._wake.set()
