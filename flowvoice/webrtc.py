"""The WebRTC transport: the browser's microphone and the assistant's voice over a peer
connection (aiortc, the ``webrtc`` extra), the JSON events over a data channel.

Signalling is one request: ``POST /webrtc/offer`` with ``{"sdp": ..., "type": "offer"}``
(the browser's offer, ICE gathering complete) answers ``{"sdp": ..., "type": "answer"}`` with
every server candidate in it. The offer must carry an audio track (the microphone) and a
data channel; events on the channel are those of ``/ws`` (:mod:`flowvoice.transport`), both
ways, plus ``track_sent`` (``{"turn": 3, "ms": 1240}``: assistant audio of that turn sent
over the track so far), since the browser's ``<audio>`` cannot tell turns apart; the page
reports ``played`` a jitter buffer later.

Assistant audio goes out as a track paced to the wall clock in 20 ms frames behind a short
queue, which an interrupt empties at once. A ``voice_paused`` holds it (the page mutes what
its jitter buffer still holds) and ``voice_resumed`` first sends again what the page had not
played. A peer whose audio stops for ``peer_timeout_s`` is gone; its session ends and the
connection is closed.

ICE uses host candidates and no STUN unless ``FLOWVOICE_ICE_SERVERS`` lists servers (JSON,
the browser's ``RTCIceServer`` shape). An offer that reached the server on a loopback address
is answered with the loopback candidate 127.0.0.1 only (aioice leaves loopback out by
default), so a browser on the same machine connects over 127.0.0.1 (Chromium gathers loopback
candidates only with ``--allow-loopback-in-peer-connection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from starlette.requests import Request
from starlette.responses import JSONResponse

from flowvoice.nodes.audio import Resampler
from flowvoice.transport import BAD_MESSAGE, BrowserTransport, Limits, ProtocolError

log = logging.getLogger("flowvoice.webrtc")
# aioice logs every candidate-pair check at INFO: a conversation's log is no place for them.
if logging.getLogger("aioice").level == logging.NOTSET:
    logging.getLogger("aioice").setLevel(logging.WARNING)

ICE_SERVERS_ENV = "FLOWVOICE_ICE_SERVERS"
MAX_PEERS_ENV = "FLOWVOICE_WEBRTC_MAX_PEERS"
TRACK_RATE = 48000
FRAME_SAMPLES = TRACK_RATE // 50  # 20 ms, Opus's frame
OFFER_MAX_BYTES = 64 * 1024
LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "::1"})
#: Pacing that fell further behind than this restarts its clock instead of bursting.
MAX_LATE_S = 0.2
#: A voice frame sent later than this after its time counts as late.
LATE_S = 0.04
#: How far back a resumed voice may go to replay what the listener's jitter buffer held.
REWIND_MAX_S = 1.0
#: How often ``track_sent`` reports a turn's progress.
SENT_REPORT_S = 0.1


class OfferError(ValueError):
    """An offer this server cannot answer; the message says why."""


@dataclass(frozen=True)
class WebRTCSettings:
    """Limits and network settings of the WebRTC transport."""

    #: Peer connections open at once; further offers are refused (503).
    max_peers: int = 16
    #: STUN/TURN servers for real networks; none on a LAN or the same machine.
    ice_servers: tuple[RTCIceServer, ...] = ()
    #: Seconds to wait for the peer's first audio after the answer.
    connect_timeout_s: float = 15.0
    #: Seconds without audio from the peer after which it counts as gone.
    peer_timeout_s: float = 5.0
    #: Assistant audio queued behind the track, in seconds (the sink's lead must fit).
    queue_s: float = 0.4
    #: Events queued until the data channel opens; older ones are dropped beyond it.
    pending_events: int = 200
    #: Addresses offered as host candidates when the offer came in on a loopback address.
    loopback_hosts: tuple[str, ...] = field(default=("127.0.0.1",))

    @classmethod
    def from_env(cls) -> WebRTCSettings:
        """Defaults, with ICE servers from ``FLOWVOICE_ICE_SERVERS`` and the peer cap from
        ``FLOWVOICE_WEBRTC_MAX_PEERS`` (0 refuses every offer: pages use the WebSocket)."""
        settings = cls()
        servers = os.environ.get(ICE_SERVERS_ENV, "").strip()
        if servers:
            settings = replace(settings, ice_servers=parse_ice_servers(servers))
        peers = os.environ.get(MAX_PEERS_ENV, "").strip()
        if peers:
            if not peers.isdigit():
                raise ValueError(f"{MAX_PEERS_ENV} must be a whole number >= 0, got {peers!r}")
            settings = replace(settings, max_peers=int(peers))
        return settings


def parse_ice_servers(text: str) -> tuple[RTCIceServer, ...]:
    """``[{"urls": "stun:host:3478"}, {"urls": [...], "username": u, "credential": c}]``."""
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("not a list")
        return tuple(
            RTCIceServer(
                urls=item["urls"],
                username=item.get("username"),
                credential=item.get("credential"),
            )
            for item in items
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"{ICE_SERVERS_ENV} must be a JSON list of {{urls, username?, credential?}} "
            f'objects, e.g. [{{"urls": "stun:stun.example.org:3478"}}] ({exc})'
        ) from None


# -- host candidates --------------------------------------------------------------------------
_offered_hosts: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "offered_hosts", default=None
)
_interface_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    hosts = _offered_hosts.get()
    return list(hosts) if hosts is not None else _interface_addresses(use_ipv4, use_ipv6)


@contextlib.contextmanager
def offered_hosts(hosts: tuple[str, ...] | None) -> Iterator[None]:
    """Within the block (this task and those it starts), ICE gathers host candidates on
    ``hosts`` only; None means every interface but loopback (aioice's own choice)."""
    reset = _offered_hosts.set(hosts)
    try:
        yield
    finally:
        _offered_hosts.reset(reset)


# aioice looks its host addresses up per gathering; this lets one answer offer chosen ones.
aioice.ice.get_host_addresses = _host_addresses


# -- assistant audio out ----------------------------------------------------------------------
class PacedAudioTrack(MediaStreamTrack):
    """Assistant audio as a 48 kHz mono track, one 20 ms frame per 20 ms of wall clock.

    :meth:`put` queues audio (waiting while ``queue_s`` is full); :meth:`discard` empties
    the queue of older turns at once; while held it sends silence and keeps the queue, and
    :meth:`rewind` puts back what the listener did not hear (its jitter buffer, muted during
    the hold). ``on_sent(turn, seconds)`` is told each turn's cumulative audio as it leaves.
    """

    kind = "audio"

    def __init__(self, on_sent: Callable[[int, float], None], queue_s: float):
        super().__init__()
        self.on_sent = on_sent
        self.held = False
        self._max_queued = int(queue_s * TRACK_RATE)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()
        self._queued = 0
        self._room = asyncio.Event()
        self._resampler: tuple[int, Resampler] | None = None  # (turn, resampler)
        self._sent: dict[int, int] = {}  # turn -> samples sent
        self._history: deque[np.ndarray] = deque()  # the latest sent audio of _history_turn
        self._history_turn: int | None = None
        self._start: float | None = None
        self._pts = 0
        #: Frames that left more than LATE_S after their time, and the latest one's lateness
        #: (a busy event loop; the browser's jitter buffer grows to absorb it).
        self.late_frames = 0
        self.max_late_s = 0.0

    @property
    def queued_s(self) -> float:
        return self._queued / TRACK_RATE

    async def put(self, turn: int, sample_rate: int, samples: np.ndarray) -> None:
        while self._queued >= self._max_queued:
            self._room.clear()
            await self._room.wait()
        if sample_rate != TRACK_RATE:
            if (
                self._resampler is None
                or self._resampler[0] != turn
                or (self._resampler[1].in_rate != sample_rate)
            ):
                self._resampler = (turn, Resampler(sample_rate, TRACK_RATE))
            samples = self._resampler[1](samples)
        if len(samples):
            self._chunks.append((turn, np.asarray(samples, np.int16)))
            self._queued += len(samples)

    def discard(self, before_turn: int) -> int:
        """Drop queued audio of turns older than ``before_turn``; returns samples dropped."""
        if self._history_turn is not None and self._history_turn < before_turn:
            self._history.clear()
        kept = deque(c for c in self._chunks if c[0] >= before_turn)
        dropped = self._queued - sum(len(c[1]) for c in kept)
        self._chunks = kept
        self._queued -= dropped
        self._room.set()
        return dropped

    def rewind(self, turn: int, heard_s: float) -> float:
        """Queue again, first, the audio of ``turn`` sent after ``heard_s`` (at most
        ``REWIND_MAX_S`` back); returns the seconds put back."""
        if turn != self._history_turn:
            return 0.0
        back = min(
            self._sent.get(turn, 0) - int(heard_s * TRACK_RATE),
            sum(len(c) for c in self._history),
        )
        if back <= 0:
            return 0.0
        tail = np.concatenate(list(self._history))[-back:]
        self._history.clear()
        self._chunks.appendleft((turn, tail))
        self._queued += back
        self._sent[turn] -= back
        return back / TRACK_RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None or now - (self._start + self._pts / TRACK_RATE) > MAX_LATE_S:
            self._start = now - self._pts / TRACK_RATE
        await asyncio.sleep(max(0.0, self._start + self._pts / TRACK_RATE - now))
        late = time.monotonic() - (self._start + self._pts / TRACK_RATE)
        self.max_late_s = max(self.max_late_s, late)
        self.late_frames += late > LATE_S
        samples = np.zeros(FRAME_SAMPLES, np.int16)
        if not self.held:
            self._take(samples)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = TRACK_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        self._pts += FRAME_SAMPLES
        return frame

    def _take(self, out: np.ndarray) -> None:
        filled = 0
        while filled < len(out) and self._chunks:
            turn, chunk = self._chunks[0]
            n = min(len(out) - filled, len(chunk))
            out[filled : filled + n] = chunk[:n]
            if n == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = (turn, chunk[n:])
            filled += n
            self._queued -= n
            self._remember(turn, out[filled - n : filled])
            self._sent[turn] = self._sent.get(turn, 0) + n
            self.on_sent(turn, self._sent[turn] / TRACK_RATE)
        if filled:
            self._room.set()

    def _remember(self, turn: int, sent: np.ndarray) -> None:
        if turn != self._history_turn:
            self._history.clear()
            self._history_turn = turn
        self._history.append(sent.copy())
        while sum(len(c) for c in self._history) - len(self._history[0]) >= REWIND_MAX_S * (
            TRACK_RATE
        ):
            self._history.popleft()


# -- the transport ----------------------------------------------------------------------------
def mono_samples(frame: av.AudioFrame) -> np.ndarray:
    """The first channel of a decoded s16 frame (aiortc decodes Opus to stereo)."""
    data = frame.to_ndarray()
    if frame.format.is_planar:
        return np.ascontiguousarray(data[0], np.int16)
    return np.ascontiguousarray(data.reshape(-1, len(frame.layout.channels))[:, 0], np.int16)


class WebRTCTransport(BrowserTransport):
    """One browser peer connection: its microphone track in, the paced track and the data
    channel's events out."""

    def __init__(
        self, pc: RTCPeerConnection, limits: Limits | None, settings: WebRTCSettings
    ) -> None:
        super().__init__(limits)
        self.pc = pc
        self.settings = settings
        self.track = PacedAudioTrack(self._sent, settings.queue_s)
        self.mic: MediaStreamTrack | None = None
        self.channel: Any = None  # the browser's RTCDataChannel, once open
        self._pending: deque[str] = deque(maxlen=settings.pending_events)
        self._reported: dict[int, float] = {}  # turn -> seconds last sent as track_sent
        self._heard: dict[int, float] = {}  # turn -> seconds the page last reported played
        self._closing = asyncio.Event()
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)

    # -- peer connection events ---------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.mic is None:
            self.mic = track

    def _on_datachannel(self, channel: Any) -> None:
        self.channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            if isinstance(message, str):
                self.receive_text(message)
            else:
                self.protocol_error(
                    ProtocolError(BAD_MESSAGE, "the data channel carries JSON text, not binary")
                )

        channel.on("close", self._peer_gone)
        while self._pending:
            channel.send(self._pending.popleft())

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._peer_gone()

    def _peer_gone(self) -> None:
        if self.mic is not None:
            self.mic.stop()  # its recv() raises at once: read_loop ends

    # -- node side ----------------------------------------------------------------------------
    async def send_audio(self, turn: int, sample_rate: int, samples: np.ndarray) -> None:
        await self.track.put(turn, sample_rate, samples)

    def discard_audio(self, before_turn: int) -> int:
        return self.track.discard(before_turn)

    def send_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "voice_paused":
            self.track.held = True
        elif event.get("type") == "voice_resumed" and self.track.held:
            # The page muted its jitter buffer at the pause: replay what it did not hear.
            for turn, heard in self._heard.items():
                self.track.rewind(turn, heard)
            self.track.held = False
        text = json.dumps(event, default=str)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        elif self.channel is None:
            self._pending.append(text)

    def client_played(self, turn: int, seconds: float) -> None:
        self._heard[turn] = seconds
        super().client_played(turn, seconds)

    def _sent(self, turn: int, seconds: float) -> None:
        if seconds - self._reported.get(turn, 0.0) >= SENT_REPORT_S:
            self._reported[turn] = seconds
            self.send_event({"type": "track_sent", "turn": turn, "ms": round(seconds * 1000)})

    # -- server side --------------------------------------------------------------------------
    async def read_loop(self) -> None:
        """Feed the microphone track to the source until the peer is gone or falls silent."""
        timeout = self.settings.connect_timeout_s
        try:
            while self.mic is not None:
                try:
                    frame = await asyncio.wait_for(self.mic.recv(), timeout)
                except MediaStreamError:
                    return
                except asyncio.TimeoutError:
                    log.warning("no audio from the peer for %.1f s: ending its session", timeout)
                    return
                timeout = self.settings.peer_timeout_s
                await self.receive_audio(mono_samples(frame), frame.sample_rate)
        finally:
            self.end_audio()

    async def write_loop(self) -> None:
        """Until :meth:`close`, then until the queued audio has played out."""
        await self._closing.wait()
        while self.track.queued_s > 0 and self.track.readyState == "live":
            await asyncio.sleep(0.05)

    def close(self, code: int = 1000) -> None:
        self._closing.set()


# -- signalling -------------------------------------------------------------------------------
class WebRTCGateway:
    """``POST /webrtc/offer``: refuses, answers and runs one session per peer connection.

    ``refusal(request)`` gives the reason to refuse a client (origin, token) or None, and
    ``run_session(transport, client)`` holds one conversation; the gateway owns the peer
    connections and the sessions' tasks and closes each connection when its session ends.
    """

    def __init__(
        self,
        refusal: Callable[[Request], str | None],
        run_session: Callable[[BrowserTransport, object], Awaitable[None]],
        limits: Limits,
        settings: WebRTCSettings | None = None,
    ) -> None:
        self.refusal = refusal
        self.run_session = run_session
        self.limits = limits
        self.settings = settings or WebRTCSettings.from_env()
        self.peers: set[RTCPeerConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def offer(self, request: Request) -> JSONResponse:
        reason = self.refusal(request)
        if reason:
            log.warning("refused WebRTC offer from %s: %s", request.client, reason)
            return _error(403, "refused", reason)
        if len(self.peers) >= self.settings.max_peers:
            return _error(
                503, "busy", f"the server already holds {self.settings.max_peers} peer connections"
            )
        try:
            sdp = await _read_offer(request)
        except OfferError as exc:
            return _error(400, "bad_offer", str(exc))
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.settings.ice_servers)))
        self.peers.add(pc)
        transport = WebRTCTransport(pc, self.limits, self.settings)
        try:
            answer = await self._answer(pc, transport, sdp, _is_loopback(request))
        except Exception as exc:
            await self._close(pc)
            log.info("bad WebRTC offer from %s: %r", request.client, exc)
            message = str(exc) if isinstance(exc, OfferError) else f"cannot use the offer: {exc}"
            return _error(400, "bad_offer", message)
        task = asyncio.create_task(self._converse(pc, transport, request.client))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type})

    async def _answer(
        self, pc: RTCPeerConnection, transport: WebRTCTransport, sdp: str, loopback: bool
    ) -> RTCSessionDescription:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if transport.mic is None:
            raise OfferError("the offer has no audio track to send (the microphone)")
        pc.addTrack(transport.track)
        with offered_hosts(self.settings.loopback_hosts if loopback else None):
            await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription

    async def _converse(
        self, pc: RTCPeerConnection, transport: WebRTCTransport, client: object
    ) -> None:
        try:
            await self.run_session(transport, client)
        except Exception:
            log.exception("WebRTC session of %s failed", client)
        finally:
            await asyncio.shield(self._close(pc))
            track = transport.track
            log.info(
                "WebRTC peer %s closed; voice frames late by over %.0f ms: %d (at most %.0f ms)",
                client,
                1000 * LATE_S,
                track.late_frames,
                1000 * track.max_late_s,
            )

    async def _close(self, pc: RTCPeerConnection) -> None:
        try:
            await pc.close()
        finally:
            self.peers.discard(pc)


async def _read_offer(request: Request) -> str:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > OFFER_MAX_BYTES:
            raise OfferError(f"the offer exceeds {OFFER_MAX_BYTES} bytes")
    try:
        offer = json.loads(body)
    except ValueError as exc:
        raise OfferError(f"the body is not JSON: {exc}") from None
    if not isinstance(offer, dict) or offer.get("type") != "offer":
        raise OfferError('expected a JSON object {"sdp": "...", "type": "offer"}')
    sdp = offer.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise OfferError('"sdp" must be the session description of an offer (starting "v=0")')
    if "m=application" not in sdp:
        raise OfferError("the offer has no data channel for the events (m=application)")
    return sdp


def _is_loopback(request: Request) -> bool:
    server = request.scope.get("server")
    return bool(server) and server[0] in LOOPBACK_ADDRESSES


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "code": code, "message": message}, status_code=status)
