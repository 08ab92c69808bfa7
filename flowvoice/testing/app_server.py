"""A flowvoice app under a real uvicorn on 127.0.0.1, in a thread of this process (tests and
``flowvoice bench soak``, which look inside the server: its sessions, tasks and nodes)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from flowvoice.keepalive import uvicorn_keepalive
from flowvoice.server import WS_MAX_SIZE, bind_socket


class RunningServer:
    def __init__(self, app: Starlette, port: int, server: uvicorn.Server):
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self._server = server

    @property
    def voice(self) -> Any:
        """The app's :class:`flowvoice.server.VoiceServer`."""
        return self.app.state.server

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run ``coro`` on the server's event loop and return its result."""
        loop = self._server.loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def task_names(self) -> list[str]:
        """Names of the tasks alive on the server's loop (minus the server's own)."""

        async def names() -> list[str]:
            current = asyncio.current_task()
            return sorted(
                repr(t.get_coro()) for t in asyncio.all_tasks() if t is not current and not t.done()
            )

        return self.call(names())


class _Server(uvicorn.Server):
    loop: asyncio.AbstractEventLoop

    async def serve(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)


def keepalive_of(app: Starlette) -> dict[str, Any]:
    """uvicorn's ping settings from a flowvoice app's graph; none for another app."""
    server = getattr(app.state, "server", None)
    return uvicorn_keepalive(server.graph.server) if server is not None else {}


@contextmanager
def running_server(app: Starlette) -> Iterator[RunningServer]:
    """Serve ``app`` on a free 127.0.0.1 port until the block ends (with its graph's pings)."""
    sock = bind_socket("127.0.0.1", 0)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws_max_size=WS_MAX_SIZE,
        **keepalive_of(app),
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.01)
    try:
        yield RunningServer(app, sock.getsockname()[1], server)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
