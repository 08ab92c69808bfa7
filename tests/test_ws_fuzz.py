"""Fuzzing the WebSocket message parser with hypothesis.

Three levels: the parser functions against a model of the wire protocol (module docstring of
flowvoice/transport.py), the transport's read loop over a scripted socket (every bad message
gives exactly one ``error`` event, good audio reaches the session unchanged), and a short run
against a real server (the session survives whatever it is sent; the server too).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterator
from typing import Any

import anyio
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from json_strategies import json_values
from reliability import ECHO_YAML, clients, http_get, marked_frame, wait_until
from serving import RunningServer, running_server

from flowvoice.graph.spec import load_graph
from flowvoice.server import create_app
from flowvoice.transport import (
    BAD_JSON,
    BAD_MESSAGE,
    DEFAULT_SAMPLE_RATE,
    ODD_LENGTH,
    TOO_LARGE,
    UNKNOWN_TYPE,
    ClientAudio,
    Limits,
    ProtocolError,
    WebSocketTransport,
    parse_audio,
    parse_control,
)

LIMITS = Limits()
Message = str | bytes

# -- strategies -------------------------------------------------------------------------------

field_values = json_values | st.integers(-5, 300_000) | st.floats(-10, 1e7)
typed_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "played", "Hello", "", "bye"]) | st.text(max_size=8)},
    optional={"sample_rate": field_values, "turn": field_values, "ms": field_values},
).map(json.dumps)
oversize_text = st.integers(LIMITS.max_text_bytes - 40, LIMITS.max_text_bytes + 40).map(
    lambda n: json.dumps({"type": "hello", "pad": "x" * n})
)
texts = typed_messages | json_values.map(json.dumps) | st.text(max_size=64) | oversize_text
binaries = st.binary(max_size=1200) | st.integers(
    LIMITS.max_binary_bytes - 3, LIMITS.max_binary_bytes + 3
).map(lambda n: b"\x01" * n)
messages = st.lists(texts | binaries, max_size=25)


# -- a model of the protocol ------------------------------------------------------------------


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expected_code(message: Message) -> str | None:
    """The error code the wire protocol calls for, or None for a valid message."""
    if isinstance(message, bytes):
        if len(message) > LIMITS.max_binary_bytes:
            return TOO_LARGE
        return ODD_LENGTH if len(message) % 2 else None
    if len(message.encode()) > LIMITS.max_text_bytes:
        return TOO_LARGE
    try:
        data = json.loads(message)
    except ValueError:
        return BAD_JSON
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return BAD_MESSAGE
    if data["type"] == "hello":
        rate = data.get("sample_rate", DEFAULT_SAMPLE_RATE)
        return None if _int(rate) and 8000 <= rate <= 192000 else BAD_MESSAGE
    if data["type"] == "played":
        turn, ms = data.get("turn"), data.get("ms")
        number = isinstance(ms, int | float) and not isinstance(ms, bool) and not math.isnan(ms)
        return None if _int(turn) and turn >= 0 and number and ms >= 0 else BAD_MESSAGE
    return UNKNOWN_TYPE


def parse(message: Message) -> str | None:
    """What the parser says: an error code or None; anything but ProtocolError propagates."""
    try:
        if isinstance(message, bytes):
            samples = parse_audio(message, LIMITS)
            assert samples.dtype == np.int16 and samples.tobytes() == message
        else:
            control = parse_control(message, LIMITS)
            assert control == json.loads(message)
    except ProtocolError as exc:
        assert str(exc), "an error says what is wrong"
        return exc.code
    return None


# -- the parser ---------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(texts | binaries)
@example('{"type": "played", "turn": 3, "ms": NaN}')
@example('{"type": "hello", "sample_rate": 16000.0}')
@example('{"type": "hello", "sample_rate": true}')
@example('{"type": "played", "turn": 1, "ms": 1' + "0" * 5000 + "}")
@example("\u00e9" * (LIMITS.max_text_bytes // 2 + 1))  # under the limit in characters only
def test_parser_follows_the_protocol(message: Message) -> None:
    assert parse(message) == expected_code(message)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    depth = LIMITS.max_text_bytes // 2 - 8
    # Too deep for the parser (RecursionError) or parsed as a list, not an object: which one
    # depends on the interpreter's recursion limit (importing torch raises it).
    assert parse("[" * depth + "]" * depth) in (BAD_JSON, BAD_MESSAGE)


@pytest.mark.parametrize("ms", ["Infinity", "1e999"])
def test_played_time_must_be_finite(ms: str) -> None:
    assert parse(f'{{"type": "played", "turn": 1, "ms": {ms}}}') == BAD_MESSAGE


def test_lone_surrogate_is_a_protocol_error() -> None:
    assert parse('{"type": "\ud800"}') is not None


# -- the transport's read loop ------------------------------------------------------------------


class ScriptedSocket:
    """Delivers ``incoming`` as ASGI receive events, then a disconnect; records what is sent."""

    def __init__(self, incoming: list[Message]):
        self.incoming = deque(
            {"type": "websocket.receive", "bytes" if isinstance(m, bytes) else "text": m}
            for m in incoming
        )
        self.sent: list[Message] = []
        self.close_code: int | None = None

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep(0)
        if self.incoming:
            return self.incoming.popleft()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def send_text(self, data: str) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.close_code = code


async def run_transport(incoming: list[Message]) -> tuple[ScriptedSocket, list[ClientAudio]]:
    socket = ScriptedSocket(incoming)
    transport = WebSocketTransport(socket, LIMITS)
    audio: list[ClientAudio] = []

    async def drain() -> None:
        async for chunk in transport.audio():
            audio.append(chunk)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            tg.start_soon(transport.write_loop)
            await transport.read_loop()
            transport.close(1000)
    return socket, audio


def expected_audio(incoming: list[Message]) -> Iterator[tuple[bytes, int]]:
    """(payload, sample rate) of each valid, non-empty audio message, in order."""
    rate = DEFAULT_SAMPLE_RATE
    for message in incoming:
        if expected_code(message) is not None:
            continue
        if isinstance(message, bytes):
            if message:
                yield message, rate
        elif json.loads(message)["type"] == "hello":
            rate = json.loads(message).get("sample_rate", DEFAULT_SAMPLE_RATE)


@settings(max_examples=150, deadline=None)
@given(messages)
def test_read_loop_answers_every_bad_message(incoming: list[Message]) -> None:
    socket, audio = anyio.run(run_transport, incoming)
    errors = [json.loads(m) for m in socket.sent if isinstance(m, str)]
    assert [e["code"] for e in errors] == [
        code for m in incoming if (code := expected_code(m)) is not None
    ]
    assert all(e["type"] == "error" and e["message"] for e in errors)
    assert [(c.samples.tobytes(), c.sample_rate) for c in audio] == list(expected_audio(incoming))
    assert socket.close_code == 1000


# -- a real server --------------------------------------------------------------------------------

SENTINEL = 12345


@pytest.fixture(scope="module")
def echo_server() -> Iterator[RunningServer]:
    with running_server(create_app(load_graph(ECHO_YAML))) as server:
        yield server


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(incoming=messages)
def test_real_server_survives_fuzzed_messages(
    echo_server: RunningServer, incoming: list[Message]
) -> None:
    bad = sum(expected_code(m) is not None for m in incoming)
    with clients(echo_server.ws_url, 1) as (client,):
        for message in incoming:
            client.send(message)
        # back to 16 kHz, then two sentinel frames: whatever partial frame the fuzzed audio
        # left pending, the second one is echoed whole
        client.send(json.dumps({"type": "hello", "sample_rate": 16000}))
        client.send(marked_frame(SENTINEL) * 2)
        wait_until(lambda: SENTINEL in client.marks(), 10, "the sentinel's echo")
        assert len(client.events("error")) == bad
        assert not client.closed.is_set()
    assert http_get(echo_server.port, "/health")[0] == 200


def test_deeply_nested_json_over_a_socket_keeps_the_session(echo_server: RunningServer) -> None:
    depth = LIMITS.max_text_bytes // 2 - 8
    with clients(echo_server.ws_url, 1) as (client,):
        client.send("[" * depth + "]" * depth)
        client.echo(1, timeout=2)
        assert [e["code"] for e in client.events("error")] in ([BAD_JSON], [BAD_MESSAGE])
