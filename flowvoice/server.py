"""The browser conversation server: Starlette app, one session per WebSocket connection.

Routes: the static client at ``/`` (``flowvoice/web``), the WebSocket at ``/ws`` (wire
protocol in :mod:`flowvoice.transport`), the OpenAI Realtime API at ``/v1/realtime``
(:mod:`flowvoice.realtime_api`), the OpenAI speech endpoints under ``/v1/audio``
(:mod:`flowvoice.speech_api`), ``/health`` and ``/metrics`` (Prometheus text).
Models are shared by every session through the process-wide resource cache.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from flowvoice.conversation import Conversation
from flowvoice.graph.spec import LoadedGraph
from flowvoice.health import (
    EXIT_ENGINE_DOWN,
    apply_engine_settings,
    engine_metrics,
    health,
    watch_engines,
)
from flowvoice.keepalive import TimedWebSocket, uvicorn_keepalive
from flowvoice.native_memory import keep_large_buffers_off_the_heap
from flowvoice.prometheus import ServerMetrics
from flowvoice.realtime_api.transport import RealtimeTransport, realtime_subprotocol, realtime_token
from flowvoice.runtime.session import Session, SessionError
from flowvoice.speech_api import SpeechAPI
from flowvoice.tls import TLSFiles
from flowvoice.transport import (
    INTERNAL,
    NODE_FAILED,
    BrowserTransport,
    Limits,
    WebSocketTransport,
)

log = logging.getLogger("flowvoice.server")

WEB_DIR = Path(__file__).parent / "web"
TOKEN_ENV = "FLOWVOICE_TOKEN"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Time a finished session's queued messages get to reach the client before the socket closes.
CLOSE_GRACE_S = 5.0
#: Hard limit enforced by uvicorn (closes the connection); ``Limits`` refuse smaller ones.
WS_MAX_SIZE = 1 << 20


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Same-origin, loopback and explicitly allowed origins pass; a missing Origin too
    (non-browser clients send none)."""
    if origin is None:
        return True
    if origin in allowed or "*" in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname in LOOPBACK_HOSTS:
        return True
    if not host:
        return False
    default_port = 443 if parts.scheme == "https" else 80
    try:
        served = urlsplit(f"//{host}")
        return (parts.hostname, parts.port or default_port) == (
            served.hostname,
            served.port or default_port,
        )
    except ValueError:
        return False


class VoiceServer:
    """State of one app: the graph, the guard settings, live sessions and metrics."""

    def __init__(
        self,
        graph: LoadedGraph,
        token: str | None,
        allowed_origins: list[str],
        limits: Limits,
    ):
        self.graph = graph
        self.token = token
        self.allowed_origins = allowed_origins
        self.limits = limits
        self.metrics = ServerMetrics()
        for e in graph.edges:
            self.metrics.edge_drops[e.name] = 0
        self.live: dict[int, tuple[Session, BrowserTransport]] = {}
        #: The WebRTC gateway (``flowvoice.webrtc.WebRTCGateway``) when aiortc is installed.
        self.webrtc: Any = None
        self.speech = SpeechAPI(graph, token)
        apply_engine_settings(graph.server)

    # -- HTTP ---------------------------------------------------------------------------------
    async def health(self, request: Request) -> JSONResponse:
        code, engines = health()
        return JSONResponse(
            {"graph": self.graph.name, "sessions": self.metrics.sessions_active, **engines},
            status_code=code,
        )

    async def prometheus(self, request: Request) -> PlainTextResponse:
        live = [(s.drops(), t.inbox_dropped, t.protocol_errors) for s, t in self.live.values()]
        return PlainTextResponse(
            self.metrics.render(live) + engine_metrics() + self.speech.metrics_text(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    # -- WebSocket ----------------------------------------------------------------------------
    def refusal(self, connection: HTTPConnection, given: str | None = None) -> str | None:
        """Why this connection (a WebSocket or a WebRTC offer) must be refused, or None
        (``given``: the client's token, by default ``?token=``)."""
        origin, host = connection.headers.get("origin"), connection.headers.get("host")
        if not origin_allowed(origin, host, self.allowed_origins):
            return f"origin {origin!r} not allowed"
        if self.token is not None:
            if given is None:
                given = connection.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return "missing or wrong token"
        return None

    async def websocket(self, websocket: WebSocket) -> None:
        reason = self.refusal(websocket)
        if reason:
            log.warning("refused WebSocket from %s: %s", websocket.client, reason)
            await websocket.close(code=1008)  # before accept: an HTTP 403
            return
        await websocket.accept()
        spec = self.graph.server
        timed = TimedWebSocket(websocket, spec.idle_timeout_s, spec.write_timeout_s)
        try:
            await self.run_session(WebSocketTransport(timed, self.limits), websocket.client)
        finally:
            if timed.reason:
                log.warning("WebSocket from %s closed: %s", websocket.client, timed.reason)

    async def realtime(self, websocket: WebSocket) -> None:
        """The OpenAI Realtime API; the token may come as a Bearer header or subprotocol."""
        reason = self.refusal(websocket, realtime_token(websocket))
        if reason:
            log.warning("refused Realtime WebSocket from %s: %s", websocket.client, reason)
            await websocket.close(code=1008)
            return
        await websocket.accept(subprotocol=realtime_subprotocol(websocket))
        transport = RealtimeTransport(websocket)
        session = Session(self.graph, services=[transport])
        transport.attach(session, websocket.query_params.get("model") or "flowvoice")
        await self.run_session(transport, websocket.client, session)

    async def run_session(
        self, transport: BrowserTransport, client: object, session: Session | None = None
    ) -> None:
        """One conversation over ``transport`` (in ``session``, by default a new one), until
        the client or the session ends."""
        if session is None:
            session = Session(self.graph, services=[transport])

        def forward(event: dict) -> None:
            self.metrics.observe_event(event)
            transport.send_event(event)

        session.subscribe(forward)
        transport.on_played = Conversation.of_session(session).playback.played
        self.metrics.sessions_active += 1
        self.metrics.sessions_total += 1
        self.live[session.id] = (session, transport)
        log.info("session %d started (%s)", session.id, client)
        try:
            await self._converse(session, transport)
        finally:
            del self.live[session.id]
            self.metrics.sessions_active -= 1
            self.metrics.edge_drops.update(session.drops())
            self.metrics.input_drops += transport.inbox_dropped
            self.metrics.protocol_errors.update(transport.protocol_errors)
            log.info("session %d ended", session.id)

    async def _converse(self, session: Session, transport: BrowserTransport) -> None:
        """Run the session beside the transport's reader and writer; whichever ends first
        (client gone, send failed, session over) ends the others."""
        async with anyio.create_task_group() as tg:

            async def until_done(loop: Callable[[], Awaitable[None]]) -> None:
                await loop()
                tg.cancel_scope.cancel()

            tg.start_soon(until_done, transport.read_loop)
            tg.start_soon(until_done, transport.write_loop)
            code = 1000
            try:
                await session.run()
            except SessionError as exc:
                log.warning("session %d: %s", session.id, exc)
                self.metrics.session_errors[exc.node] += 1
                transport.send_event(
                    {
                        "type": "error",
                        "code": NODE_FAILED,
                        "node": exc.node,
                        "node_type": exc.node_type,
                        "message": str(exc),
                    }
                )
                code = 1011
            except Exception as exc:
                log.exception("session %d crashed", session.id)
                transport.send_event({"type": "error", "code": INTERNAL, "message": repr(exc)})
                code = 1011
            transport.close(code)
            await anyio.sleep(CLOSE_GRACE_S)
            tg.cancel_scope.cancel()


def create_app(
    graph: LoadedGraph,
    *,
    token: str | None = None,
    allowed_origins: list[str] | None = None,
    limits: Limits | None = None,
) -> Starlette:
    """The Starlette app serving ``graph``.

    ``token`` (default: env ``FLOWVOICE_TOKEN``) must then be given as ``/ws?token=``;
    ``allowed_origins`` adds origins besides same-origin and loopback ones.
    """
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    server = VoiceServer(graph, token, list(allowed_origins or []), limits or Limits())
    app = Starlette(
        routes=[
            Route("/health", server.health),
            Route("/metrics", server.prometheus),
            WebSocketRoute("/ws", server.websocket),
            *webrtc_routes(server),
            WebSocketRoute("/v1/realtime", server.realtime),
            *server.speech.routes(),
            Mount("/", StaticFiles(directory=WEB_DIR, html=True)),
        ]
    )
    app.state.server = server
    return app


def webrtc_routes(server: VoiceServer) -> list[Route]:
    """``POST /webrtc/offer`` when aiortc is installed (the ``webrtc`` extra), else none
    (the page then falls back to ``/ws``)."""
    try:
        from flowvoice.webrtc import WebRTCGateway
    except ImportError:
        return []
    server.webrtc = WebRTCGateway(server.refusal, server.run_session, server.limits)
    return [Route("/webrtc/offer", server.webrtc.offer, methods=["POST"])]


async def prewarm(graph: LoadedGraph) -> float:
    """Set up one session's nodes so models are loaded and cached; returns seconds taken."""
    start = time.perf_counter()
    session = Session(graph)
    try:
        await session.setup()
    finally:
        await session.teardown()
    return time.perf_counter() - start


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (errors such as 'address in use' surface here, clearly)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections (with
    # proto 0 it does not, and small audio messages wait for delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def serve(
    graph: LoadedGraph,
    host: str,
    port: int,
    token: str | None = None,
    tls: TLSFiles | None = None,
) -> None:
    """Serve ``graph`` until interrupted: load the models once, bind, print the URL, run;
    over HTTPS with ``tls``.

    When hung engines cannot recover in the process, the process exits with
    :data:`~flowvoice.health.EXIT_ENGINE_DOWN` for a supervisor to restart it.
    Raises :class:`SessionError` when a node cannot set up and ``OSError`` when the
    address cannot be bound.
    """
    import uvicorn

    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    app = create_app(graph, token=token)
    if host not in LOOPBACK_HOSTS and token is None:
        print(
            f"flowvoice: warning: serving on {host} without a token; anyone who can reach "
            f"port {port} can talk to the agent (set --token or {TOKEN_ENV})",
            file=sys.stderr,
        )
    if host not in LOOPBACK_HOSTS and tls is None:
        print(
            "flowvoice: note: browsers on other machines get no microphone over plain http; "
            "serve HTTPS for them (--tls-self-signed, or --tls-cert and --tls-key)",
            file=sys.stderr,
        )
    ssl_files = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)} if tls else {}

    keep_large_buffers_off_the_heap()

    async def main() -> None:
        seconds = await prewarm(graph)
        log.info("models ready in %.2f s", seconds)
        sock = bind_socket(host, port)
        shown = f"[{host}]" if ":" in host else host
        # The token never goes to a log: a terminal sees it, a container log a placeholder.
        query = (
            (f"?token={token}" if sys.stdout.isatty() else f"?token=${TOKEN_ENV}") if token else ""
        )
        print(
            f"flowvoice: serving {graph.name} at {'https' if tls else 'http'}://{shown}:{sock.getsockname()[1]}/{query}",
            flush=True,
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws_max_size=WS_MAX_SIZE,
            lifespan="off",
            **ssl_files,
            **uvicorn_keepalive(graph.server),
        )
        server = uvicorn.Server(config)

        def stop(reason: str) -> None:
            down.append(reason)
            server.should_exit = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_engines, stop)
            await server.serve(sockets=[sock])
            tg.cancel_scope.cancel()

    down: list[str] = []
    asyncio.run(main())
    if down:  # a thread stuck in a hung engine would block the interpreter's exit forever
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_ENGINE_DOWN)
