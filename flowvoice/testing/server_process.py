"""A ``flowvoice run GRAPH`` server in a subprocess on 127.0.0.1 (tests, the load benchmark,
``deploy/measure_scaling.py``)."""

from __future__ import annotations

import functools
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def psutil_module() -> Any:
    """The psutil module, or a clear error naming the package."""
    try:
        import psutil
    except ImportError:
        raise RuntimeError(
            "reading a server's memory and CPU time needs psutil: pip install psutil"
        ) from None
    return psutil


def exit_on_signal(signum: int, _frame: object) -> None:
    """A SIGTERM handler that ends the program like Ctrl-C does, so ``with`` blocks (and
    :func:`running_server`) stop the servers they started."""
    raise SystemExit(128 + signum)


def stop_process(proc: subprocess.Popen, timeout: float = 15, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to ``proc`` (SIGKILL after ``timeout`` if it is still running); its exit
    code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(port: int) -> bool:
    """True when 127.0.0.1:``port`` answers ``GET /health`` with 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class ServerProcess:
    """``python -m flowvoice [-v] run GRAPH --host 127.0.0.1 --port P``, output in
    ``log_path``; ``env`` is added to this process's environment."""

    def __init__(
        self,
        graph: str | Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        verbose: bool = False,
    ):
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.log_path = log_path
        command = [sys.executable, "-m", "flowvoice", *(["-v"] if verbose else []), "run"]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*command, str(graph), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def wait_healthy(self, timeout: float = 30) -> float:
        """Poll /health until it answers; returns the seconds it took. RuntimeError (with the
        server's output) when the process exits or ``timeout`` passes first."""
        start = time.monotonic()
        while not healthy(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"flowvoice run exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if time.monotonic() - start > timeout:
                raise RuntimeError(
                    f"flowvoice run not healthy after {timeout:.0f} s:\n{self.tail()}"
                )
            time.sleep(0.2)
        return time.monotonic() - start

    @functools.cached_property
    def _ps(self) -> Any:
        """psutil's view of the server process (psutil only needed for memory and CPU)."""
        return psutil_module().Process(self.proc.pid)

    def rss_mb(self) -> float:
        return self._ps.memory_info().rss / 2**20

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far."""
        times = self._ps.cpu_times()
        return times.user + times.system

    def output(self) -> str:
        """Everything the server has printed so far."""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 15) -> int:
        """Send ``sig`` (SIGKILL after ``timeout`` if it is still running); the exit code."""
        return stop_process(self.proc, timeout, sig)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it has not exited within 15 s."""
        self.kill(signal.SIGTERM)


@contextmanager
def running_server(
    graph: str | Path, log_path: Path, start_timeout: float = 300
) -> Iterator[ServerProcess]:
    """A healthy server for the block, stopped when it ends."""
    server = ServerProcess(graph, log_path)
    try:
        server.wait_healthy(start_timeout)
        yield server
    finally:
        server.stop()
