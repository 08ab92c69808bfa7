"""Headless chromium for browser tests and ``flowvoice bench transports``: its flags, and a
``flowvoice run`` server with a chromium in a network namespace of their own, with only
``lo`` up (the WebRTC tests and benchmark).

In that namespace every ICE candidate and every media packet is on 127.0.0.1 by
construction, never the machine's LAN address. The server is started under ``unshare -rn``;
chromium enters its namespace through a wrapper script (``nsenter``), and Playwright drives it
over a pipe from outside. Chromium gathers loopback candidates only with
``--allow-loopback-in-peer-connection``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flowvoice.testing.server_process import stop_process

CHROMIUM = Path("/usr/bin/chromium")
#: The server's port inside its namespace (nothing else listens there).
PORT = 8765
#: Headless chromium with a fake microphone (add ``--use-file-for-fake-audio-capture=WAV``)
#: that may play audio without a user gesture.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
]
#: WebRTC on 127.0.0.1, microphone access granted without a prompt.
WEBRTC_LOOPBACK_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def namespaces_work() -> bool:
    """True when this machine lets us make a network namespace (``unshare -rn``)."""
    if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip")):
        return False
    probe = ["unshare", "-rn", "sh", "-c", "ip link set lo up"]
    return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0


@contextmanager
def server_in_namespace(
    graph: str | Path,
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    start_timeout_s: float = 300,
) -> Iterator[subprocess.Popen]:
    """``flowvoice run GRAPH ARGS`` on 127.0.0.1:PORT in a new network namespace; yields the
    process once it serves (its models loaded). Output goes to ``log``."""
    command = [sys.executable, "-m", "flowvoice", "run", str(graph), *args]
    command += ["--host", "127.0.0.1", "--port", str(PORT)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + start_timeout_s
        while "serving" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flowvoice run did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        stop_process(proc, 15)


def chromium_in(proc: subprocess.Popen, folder: Path) -> Path:
    """A script that runs chromium inside ``proc``'s network namespace (for Playwright's
    ``executable_path``)."""
    wrapper = folder / "chromium-in-namespace"
    enter = f"nsenter -t {proc.pid} -n -U --preserve-credentials"
    wrapper.write_text(f'#!/bin/sh\nexec {enter} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def page_url(transport: str) -> str:
    return f"http://127.0.0.1:{PORT}/?transport={transport}"
