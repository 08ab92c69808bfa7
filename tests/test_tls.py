"""HTTPS: certificate handling, and ``flowvoice run --tls-...`` as a user runs it (a real
subprocess serving the page and ``/ws`` over TLS), up to a spoken question answered in a
headless Chromium that trusts nothing (``--ignore-certificate-errors``, as a user who
proceeds past the warning)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from speech_audio import wer
from test_browser import CHROMIUM, browser_for, open_page, spoken_wav, state  # noqa: F401
from websockets.sync.client import connect

from flowvoice import tls
from flowvoice.testing.server_process import stop_process

ROOT = Path(__file__).resolve().parents[1]
SERVING = re.compile(r"serving \S+ at (https?)://([^/\s]+)/")


def test_self_signed_certificate_covers_the_lan_names_and_is_kept(tmp_path: Path) -> None:
    files = tls.tls_files(
        self_signed=True, extra_names=["voice.lan", "10.1.2.3"], directory=tmp_path
    )
    assert files is not None
    names = set(tls.certificate_names(files.cert))
    assert {"localhost", "127.0.0.1", "::1", "voice.lan", "10.1.2.3"} <= names
    assert os.stat(files.key).st_mode & 0o777 == 0o600, "the key is readable by its owner only"
    tls.check_pair(files)  # a matching pair that ssl loads
    first = files.fingerprint()
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", first)
    # The same names again: the kept certificate (a device that trusted it keeps trusting it).
    again = tls.tls_files(self_signed=True, extra_names=["voice.lan"], directory=tmp_path)
    assert again.fingerprint() == first
    # A name it does not cover: made anew.
    other = tls.tls_files(self_signed=True, extra_names=["kitchen.lan"], directory=tmp_path)
    assert other.fingerprint() != first and "kitchen.lan" in tls.certificate_names(other.cert)


def test_bad_certificate_input_is_a_clear_error(tmp_path: Path) -> None:
    pair = tls.self_signed_files(tmp_path / "a", ["localhost"])
    stranger = tls.self_signed_files(tmp_path / "b", ["localhost"])
    with pytest.raises(tls.TLSError, match="without its key"):
        tls.tls_files(str(pair.cert), None)
    with pytest.raises(tls.TLSError, match="without its certificate"):
        tls.tls_files(None, str(pair.key))
    with pytest.raises(tls.TLSError, match="nope.pem does not exist"):
        tls.tls_files(str(tmp_path / "nope.pem"), str(pair.key))
    with pytest.raises(tls.TLSError, match="cannot use TLS certificate"):
        tls.tls_files(str(pair.cert), str(stranger.key))  # a key of another certificate
    with pytest.raises(tls.TLSError, match="neither an IP address nor a host name"):
        tls.make_self_signed(["localhost", "bad name\u00ff!"])
    assert tls.tls_files() is None, "plain HTTP when nothing is asked"
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the certificate's folder should be
    with pytest.raises(tls.TLSError, match="cannot keep the self-signed certificate"):
        tls.tls_files(self_signed=True, directory=blocked / "tls")


def test_run_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    pair = tls.self_signed_files(tmp_path, ["localhost"])
    done = subprocess.run(
        [sys.executable, "-m", "flowvoice", "run", "echo", "--tls-cert", str(pair.cert)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert done.returncode == 2
    assert "error: a TLS certificate was given without its key" in done.stderr
    assert "Traceback" not in done.stderr


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWVOICE_TLS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


@contextmanager
def flowvoice_run(*args: str, env: dict[str, str], ready_s: float = 300) -> Iterator[tuple]:
    """``flowvoice run ARGS --port 0`` in a subprocess until the block ends; yields
    (scheme, host:port, stderr lines so far) once it prints the address it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowvoice", "run", *args, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    errors: list[str] = []
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    threading.Thread(target=lambda: [errors.append(x) for x in proc.stderr], daemon=True).start()
    try:
        deadline = time.monotonic() + ready_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise AssertionError(f"flowvoice run did not start:\n{''.join(errors)}")
            try:
                match = SERVING.search(lines.get(timeout=min(left, 1.0)))
            except queue.Empty:
                continue
            if match:
                yield match.group(1), match.group(2), errors
                return
    finally:
        stop_process(proc, 15)


def test_run_serves_page_and_websocket_over_https_with_a_self_signed_certificate(
    tmp_path: Path,
) -> None:
    env = _env(XDG_CACHE_HOME=str(tmp_path), FLOWVOICE_TLS_NAMES="voice.lan")
    with flowvoice_run("echo", "--tls-self-signed", env=env, ready_s=120) as (scheme, at, err):
        cert = tmp_path / "flowvoice" / "tls" / "cert.pem"
        # Verified against the certificate it made: valid for 127.0.0.1.
        trusted = ssl.create_default_context(cafile=str(cert))
        page = httpx.get(f"https://{at}/", verify=trusted, timeout=30)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{at}/", timeout=10)  # no plain HTTP on the TLS port
        pcm = (np.sin(np.arange(320) / 5) * 8000).astype("<i2").tobytes()
        with connect(f"wss://{at}/ws", ssl=trusted, open_timeout=30) as ws:
            for _ in range(10):
                ws.send(pcm)
            echoed = ws.recv(timeout=30)
    assert scheme == "https"
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert isinstance(echoed, bytes) and len(echoed) > 8, "the echo graph sent audio back"
    log = "".join(err)
    assert f"self-signed certificate {cert}" in log and "voice.lan" in log
    assert re.search(r"SHA-256 fingerprint ([0-9A-F]{2}:){31}", log)
    assert "voice.lan" in tls.certificate_names(cert)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")
@pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("sox")),
    reason="needs espeak-ng and sox to make the spoken question",
)
def test_spoken_question_answered_over_https_in_the_browser(browser_for, tmp_path: Path) -> None:  # noqa: F811
    files = tls.self_signed_files(tmp_path / "tls", ["localhost"])  # not 127.0.0.1: a warning
    wav = spoken_wav(tmp_path / "question.wav", "What is the capital of France?")
    args = ("default", "--tls-cert", str(files.cert), "--tls-key", str(files.key))
    with flowvoice_run(*args, env=_env()) as (scheme, at, _):
        browser = browser_for(f"{wav}%noloop", extra_args=("--ignore-certificate-errors",))
        page = open_page(browser, f"https://{at}/")
        secure = page.evaluate("window.isSecureContext")
        page.click("#start")
        page.wait_for_function(
            "window.flowvoice.assistantTexts.some(t => t.trim())"
            " && window.flowvoice.samplesPlayed > 8000",
            timeout=180_000,
        )
        seen = state(page)
        bubbles = page.locator(".bubble").all_inner_texts()
    print(f"\npage state: {seen}")
    assert scheme == "https" and secure
    assert seen["connected"] and seen["framesSent"] > 100
    assert wer("What is the capital of France?", " ".join(seen["userTurns"])) <= 0.35
    assert any("capital" in b.lower() for b in bubbles)
    assert seen["errors"] == [] and page.problems == []
