"""Security checks beyond tests/test_ws_protocol.py (which covers the basic Origin rules, a
missing or wrong token, the token from the environment, eight static-path escapes, and
oversize binary messages).

Here: the token never reaches the logs, near-miss tokens and tokens sent elsewhere than the
query are refused, a valid token does not excuse a foreign Origin, more path-escape spellings
(absolute, double-encoded, overlong UTF-8, NUL), oversize text and fragmented messages, and
plain HTTP on /ws.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from reliability import (
    ECHO_YAML,
    clients,
    http_get,
    raw_websocket,
    wait_until,
)
from serving import RunningServer, running_server
from websockets.exceptions import ConnectionClosed

from flowvoice.graph.spec import load_graph
from flowvoice.server import WS_MAX_SIZE, create_app
from flowvoice.testing.server_process import ServerProcess

TOKEN = "tok-5be1c0ffee"


@pytest.fixture(scope="module")
def guarded() -> Iterator[RunningServer]:
    """An echo server requiring TOKEN."""
    with running_server(create_app(load_graph(ECHO_YAML), token=TOKEN)) as server:
        yield server


def handshake(server: RunningServer, path: str, **headers: str) -> int:
    sock, status = raw_websocket(server.port, path, headers)
    sock.close()
    return status


@pytest.mark.parametrize(
    "path",
    [
        "/ws?token=",
        f"/ws?token={TOKEN.upper()}",
        f"/ws?token={TOKEN[:-1]}",
        f"/ws?token={TOKEN}x",
        f"/ws?token=%20{TOKEN}",
        f"/ws?token={TOKEN}%00",
        f"/ws?Token={TOKEN}",
        f"/ws/?token={TOKEN}",
    ],
)
def test_near_miss_tokens_are_refused(guarded: RunningServer, path: str) -> None:
    assert handshake(guarded, path) in (403, 404), path


def test_token_only_counts_in_the_query(guarded: RunningServer) -> None:
    for header in ("Authorization", "Cookie", "Sec-WebSocket-Protocol"):
        value = f"token={TOKEN}" if header == "Cookie" else TOKEN
        assert handshake(guarded, "/ws", **{header: value}) == 403, header
    assert handshake(guarded, f"/ws?token={TOKEN}") == 101


def test_valid_token_does_not_excuse_a_foreign_origin(guarded: RunningServer) -> None:
    for origin in ("http://evil.example", "null", f"http://evil.example:{guarded.port}"):
        assert handshake(guarded, f"/ws?token={TOKEN}", Origin=origin) == 403, origin
    assert handshake(guarded, f"/ws?token={TOKEN}", Origin=guarded.url) == 101


@pytest.mark.parametrize(
    "path",
    [
        "/%2fetc%2fpasswd",
        "/%252e%252e/server.py",
        "/.%2e/server.py",
        "/%2e%2e%5cserver.py",
        "/%c0%ae%c0%ae/server.py",
        "/index.html%00.py",
        "/./../server.py",
        "/web/%2e%2e/%2e%2e/pyproject.toml",
        "/" + "../" * 12 + "etc/passwd",
        "/etc/passwd",
        "/proc/self/environ",
    ],
)
def test_static_files_stay_in_their_folder(guarded: RunningServer, path: str) -> None:
    status, body = http_get(guarded.port, path)
    assert status in (400, 404), (path, status)
    assert "create_app" not in body and "[project]" not in body and "root:" not in body
    assert TOKEN not in body


def test_plain_http_on_the_websocket_path(guarded: RunningServer) -> None:
    assert http_get(guarded.port, f"/ws?token={TOKEN}")[0] in (400, 404, 426)
    assert http_get(guarded.port, "/health")[0] == 200


def test_oversize_text_and_fragmented_messages_close_only_their_connection(
    guarded: RunningServer,
) -> None:
    url = f"{guarded.ws_url}?token={TOKEN}"
    with clients(url, 1) as (bystander,):
        bystander.echo(1)
        oversize = [
            "x" * (WS_MAX_SIZE + 1),
            (b"\x00" * (64 * 1024) for _ in range(WS_MAX_SIZE // (64 * 1024) + 1)),  # fragments
        ]
        for message in oversize:
            with clients(url, 1) as (client,):
                with suppress(ConnectionClosed):  # closed while fragments still go out
                    client.send(message)
                assert client.wait_closed() == 1009  # message too big
        bystander.echo(2)
    wait_until(lambda: not guarded.voice.live, 10, "sessions to end")


def run_with_token(tmp_path: Path) -> ServerProcess:
    """`flowvoice -v run` (debug logging) with TOKEN from the environment, used for a while:
    refused and accepted handshakes, static files and metrics, then stopped."""
    env = {"FLOWVOICE_TOKEN": TOKEN}
    proc = ServerProcess(ECHO_YAML, tmp_path / "flowvoice.log", env, verbose=True)
    try:
        proc.wait_healthy()
        url = f"ws://127.0.0.1:{proc.port}/ws"
        refused = [("/ws", {}), (f"/ws?token={TOKEN[:-1]}", {})]
        refused.append((f"/ws?token={TOKEN}", {"Origin": "http://evil.example"}))
        for path, headers in refused:
            sock, status = raw_websocket(proc.port, path, headers)
            sock.close()
            assert status == 403
        with clients(f"{url}?token={TOKEN}", 1) as (client,):
            client.echo(1)
            client.send("{bad json")
            wait_until(lambda: client.events("error"), 5, "the protocol error")
        for path in (f"/?token={TOKEN}", f"/metrics?token={TOKEN}", f"/nope?token={TOKEN}"):
            http_get(proc.port, path)
    finally:
        proc.kill(signal.SIGTERM)
    return proc


def test_token_never_reaches_the_log(tmp_path: Path) -> None:
    proc = run_with_token(tmp_path)
    lines = proc.output().splitlines()
    logged = [line for line in lines if not line.startswith("flowvoice: serving ")]
    assert sum("refused WebSocket" in line for line in logged) == 3, "refusals are logged"
    assert not [line for line in logged if TOKEN in line]


def test_token_not_printed_when_output_is_a_log(tmp_path: Path) -> None:
    proc = ServerProcess(ECHO_YAML, tmp_path / "flowvoice.log", {"FLOWVOICE_TOKEN": TOKEN})
    try:
        proc.wait_healthy()
    finally:
        proc.kill(signal.SIGTERM)
    assert TOKEN not in proc.output()
