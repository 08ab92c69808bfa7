"""Who may open /v1/realtime when the server has a token: a Bearer header (the SDKs), a
browser's ``openai-insecure-api-key.<token>`` subprotocol, or ``?token=``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import RunningServer, running_server
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from flowvoice.graph.spec import load_graph
from flowvoice.server import create_app

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    app = create_app(load_graph(ROOT / "graphs" / "echo.yaml"), token=TOKEN)
    with running_server(app) as running:
        yield running


def open_realtime(server: RunningServer, query: str = "", **options) -> ClientConnection:
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=flowvoice{query}"
    return connect(url, proxy=None, open_timeout=10, **options)


def first_event(socket: ClientConnection) -> dict:
    return json.loads(socket.recv(timeout=10))


@pytest.mark.parametrize(
    "options",
    [
        {"additional_headers": {"Authorization": f"Bearer {TOKEN}"}},
        {"subprotocols": ["realtime", f"openai-insecure-api-key.{TOKEN}"]},
    ],
    ids=["bearer", "subprotocol"],
)
def test_the_token_opens_the_session(server: RunningServer, options: dict) -> None:
    with open_realtime(server, **options) as socket:
        created = first_event(socket)
        assert created["type"] == "session.created"
        assert created["session"]["model"] == "flowvoice"
        if "subprotocols" in options:
            assert socket.subprotocol == "realtime"  # browsers fail the handshake without it


def test_the_token_in_the_query_opens_the_session(server: RunningServer) -> None:
    with open_realtime(server, f"&token={TOKEN}") as socket:
        assert first_event(socket)["type"] == "session.created"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"additional_headers": {"Authorization": "Bearer wrong"}},
        {"additional_headers": {"Authorization": f"Basic {TOKEN}"}},
        {"subprotocols": ["realtime", "openai-insecure-api-key.wrong"]},
    ],
    ids=["none", "wrong-bearer", "not-bearer", "wrong-subprotocol"],
)
def test_a_missing_or_wrong_token_is_refused(server: RunningServer, options: dict) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_realtime(server, **options)
    assert refused.value.response.status_code == 403
