"""Helpers of the reliability, security and scale-out tests.

Marked echo frames (each 20 ms frame carries one sample value, so an echo names the frame
it answers), a WebSocket client that reads in the background, real ``flowvoice run``
processes, Prometheus scrapes, process usage, bounded waits, and the soak scale.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from flowvoice.graph.spec import LoadedGraph, load_graph
from flowvoice.testing.server_process import ServerProcess, free_port, healthy, stop_process
from flowvoice.transport import decode_audio

ROOT = Path(__file__).resolve().parents[1]
ECHO_YAML = ROOT / "graphs" / "echo.yaml"

Message = str | bytes

#: 20 ms at 16 kHz: the echo graph's frame, so one client message echoes as one message.
FRAME_SAMPLES = 320

SOAK_SCALE_ENV = "FLOWVOICE_SOAK_SCALE"
#: Fraction of the full soak counts run by default (CI); FLOWVOICE_SOAK_SCALE=1 runs them all.
DEFAULT_SOAK_SCALE = 0.2


def soak_count(full: int, minimum: int = 5) -> int:
    """``full`` scaled by $FLOWVOICE_SOAK_SCALE (default 0.2), at least ``minimum``."""
    scale = float(os.environ.get(SOAK_SCALE_ENV, DEFAULT_SOAK_SCALE))
    return max(minimum, round(full * scale))


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll ``condition`` until it is true; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - start


# -- graphs ---------------------------------------------------------------------------------


def chain_graph(*stages: str, params: dict[str, dict] | None = None, **edge: Any) -> LoadedGraph:
    """``websocket.source -> stages... -> websocket.sink`` as nodes ``mic``, one per stage
    named after its type (``fault.raise`` is node ``raise``), and ``speaker``.

    ``params`` maps a node type to its params; ``edge`` (``buffer``, ``overflow``) applies to
    the first edge, the one the microphone feeds.
    """
    types = ["websocket.source", *stages, "websocket.sink"]
    names = ["mic", *(kind.rsplit(".", 1)[-1] for kind in stages), "speaker"]
    assert len(set(names)) == len(names), f"stage names collide: {names}"
    nodes = {
        name: {"type": kind, "params": (params or {}).get(kind, {})}
        for name, kind in zip(names, types, strict=True)
    }
    edges: list[Any] = [
        {"from": f"{a}.audio", "to": f"{b}.audio"} for a, b in zip(names, names[1:], strict=False)
    ]
    edges[0].update(edge)
    text = yaml.safe_dump({"name": "chain", "nodes": nodes, "edges": edges}, sort_keys=False)
    return load_graph("<test>", text=text)


# -- marked frames and clients -----------------------------------------------------------------


def marked_frame(value: int) -> bytes:
    """One 20 ms PCM16 message whose every sample is ``value``."""
    return np.full(FRAME_SAMPLES, value, "<i2").tobytes()


def frame_mark(message: bytes) -> tuple[int, int | None]:
    """``(turn, value)`` of a server audio message carrying a marked frame (value None when
    the message has no samples)."""
    turn, _, samples = decode_audio(message)
    return turn, int(samples[0]) if len(samples) else None


class EchoClient:
    """A WebSocket client reading in the background: marked frames out, echoes and events in."""

    def __init__(self, url: str, **kwargs: Any):
        kwargs = {"open_timeout": 10, "max_size": None, "proxy": None, **kwargs}
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(connect(url, **kwargs))
        self.messages: list[Message] = []
        self._marks: list[int | None] = []
        #: Close code the server sent once closed; 1006 when cut without a close frame.
        self.close_code: int | None = None
        self.closed = threading.Event()
        self.closed_at: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                if isinstance(message, bytes):
                    self._marks.append(frame_mark(message)[1])
                self.messages.append(message)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed_at = time.monotonic()
            self.closed.set()

    def send(self, message: Message) -> None:
        self.ws.send(message)

    def send_marked(self, value: int) -> None:
        self.ws.send(marked_frame(value))

    def marks(self) -> list[int | None]:
        """Values of the marked frames echoed so far, in order."""
        return list(self._marks)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(m) for m in list(self.messages) if isinstance(m, str)]
        return [e for e in found if kind is None or e.get("type") == kind]

    def echo(self, value: int, timeout: float = 10) -> float:
        """Send a frame marked ``value`` and wait for its echo; returns the round trip (s)."""
        start = time.monotonic()
        seen = len(self._marks)
        self.send_marked(value)
        wait_until(lambda: value in self._marks[seen:], timeout, f"the echo of frame {value}")
        return time.monotonic() - start

    def wait_closed(self, timeout: float = 10) -> int | None:
        """Wait until the connection ends; returns its close code (1006: cut, no close frame)."""
        if not self.closed.wait(timeout):
            pytest.fail(f"connection still open after {timeout} s")
        return self.close_code

    def close(self) -> None:
        self._stack.close()
        self._reader.join(10)


@contextmanager
def clients(url: str, count: int, **kwargs: Any) -> Iterator[list[EchoClient]]:
    """``count`` connected :class:`EchoClient` s, closed when the block ends."""
    opened: list[EchoClient] = []
    try:
        for _ in range(count):
            opened.append(EchoClient(url, **kwargs))
        yield opened
    finally:
        for client in opened:
            client.close()


def raw_websocket(
    port: int, path: str = "/ws", headers: dict[str, str] | None = None, rcvbuf: int | None = None
) -> tuple[socket.socket, int]:
    """A WebSocket handshake on a bare socket: ``(socket, HTTP status)``.

    The socket is then left alone (a client that never reads); ``rcvbuf`` shrinks its
    receive buffer before connecting, so the kernel holds little on the client side.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **(headers or {}),
    }
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: nothing after the headers is consumed
        if not chunk:
            break
        response += chunk
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
    return sock, status


# -- HTTP, metrics, usage ---------------------------------------------------------------------


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET ``path`` verbatim from 127.0.0.1:``port``: ``(status, body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``flowvoice_<name>{labels}`` in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"flowvoice_{name}" + (f"{{{wanted}}}" if wanted else "")
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def scrape(port: int, name: str, **labels: str) -> float:
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    return metric(text, name, **labels)


@dataclass(frozen=True)
class Usage:
    """What a process holds: resident memory, open file descriptors, threads."""

    rss_mb: float
    fds: int
    threads: int

    def __str__(self) -> str:
        return f"RSS {self.rss_mb:.1f} MB, {self.fds} fds, {self.threads} threads"


def usage(pid: int | None = None) -> Usage:
    proc = psutil.Process(pid)
    return Usage(proc.memory_info().rss / 2**20, proc.num_fds(), proc.num_threads())


# -- flowvoice processes ------------------------------------------------------------------------


@contextmanager
def flowvoice_processes(
    count: int, tmp_path: Path, graph: Path = ECHO_YAML, env: dict[str, str] | None = None
) -> Iterator[list[ServerProcess]]:
    """``count`` flowvoice servers started side by side, healthy, stopped when the block ends."""
    procs: list[ServerProcess] = []
    try:
        for i in range(count):
            procs.append(ServerProcess(graph, tmp_path / f"flowvoice-{i}.log", env))
        for proc in procs:
            proc.wait_healthy()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


# -- nginx in front (deploy/nginx.conf) ---------------------------------------------------------

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def render_nginx_conf(listen: int, replicas: list[int], prefix: Path) -> str:
    """deploy/nginx.conf with its replicas and listen address on 127.0.0.1 and temp paths
    under ``prefix`` (the only changes; each marked line must be there exactly once)."""
    text = NGINX_CONF.read_text()

    def replace_marked(marker: str, build: Callable[[re.Match[str]], str]) -> None:
        nonlocal text
        pattern = re.compile(rf"^(\s*)(\S+) \S+(.*?);\s*# {marker}$", re.M)
        assert len(pattern.findall(text)) == 1, f"deploy/nginx.conf: one '# {marker}' line"
        text = pattern.sub(build, text)

    replace_marked(
        "replicas",
        lambda m: "\n".join(f"{m[1]}{m[2]} 127.0.0.1:{port}{m[3]};" for port in replicas),
    )
    replace_marked("listen", lambda m: f"{m[1]}{m[2]} 127.0.0.1:{listen}{m[3]};")
    temp = "".join(
        f"\n    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    assert text.count("\nhttp {") == 1
    return text.replace("\nhttp {", "\nhttp {" + temp, 1)


@dataclass
class Proxy:
    """A running nginx: its port and prefix (config, access.log, error.log)."""

    port: int
    prefix: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def access_log(self) -> str:
        return (self.prefix / "access.log").read_text(errors="replace")

    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")


@contextmanager
def nginx_proxy(replicas: list[int], tmp_path: Path) -> Iterator[Proxy]:
    """nginx in the foreground (``daemon off``) with its own prefix, stopped at the end."""
    assert NGINX is not None, "nginx is not installed"
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(port, replicas, prefix))
    command = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
    with (prefix / "access.log").open("wb") as out, (prefix / "error.log").open("wb") as err:
        proc = subprocess.Popen(
            [*command, "-g", f"daemon off; pid {prefix / 'nginx.pid'};"],
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    proxy = Proxy(port, prefix)
    try:
        wait_until(lambda: healthy(port) or proc.poll() is not None, 10, "nginx to listen")
        assert proc.poll() is None, f"nginx exited:\n{proxy.error_log()}"
        yield proxy
    finally:
        stop_process(proc, 10)
