"""The WebSocket server: wire protocol, guards, HTTP routes and session lifecycle."""

from __future__ import annotations

import contextlib
import gc
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import psutil
import pytest
from serving import RunningServer, running_server, speech_graph
from speech_audio import speak, wer
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from flowvoice.conversation import Conversation
from flowvoice.frames import AudioFrame, Frame
from flowvoice.graph.registry import register
from flowvoice.graph.spec import LoadedGraph, load_graph
from flowvoice.node import Node, Port
from flowvoice.prometheus import ServerMetrics
from flowvoice.runtime.session import Session
from flowvoice.server import create_app, origin_allowed, prewarm
from flowvoice.transport import Limits, decode_audio

ROOT = Path(__file__).resolve().parents[1]
Message = str | bytes


@register("wstest.fail")
class FailAfter(Node):
    """Raises on its third audio frame (a node failing mid-session)."""

    inputs = {"audio": Port(AudioFrame)}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen = 0

    async def process(self, port: str, frame: Frame) -> None:
        self.seen += 1
        if self.seen == 3:
            raise ValueError("synthetic failure")


@register("wstest.new_turn")
class NewTurnAt(Node):
    """Forwards audio; at the 11th frame, waits a moment then raises the turn (a barge-in)."""

    inputs = {"audio": Port(AudioFrame)}
    outputs = {"audio": Port(AudioFrame)}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen = 0

    async def process(self, port: str, frame: Frame) -> None:
        self.seen += 1
        if self.seen == 11:
            await anyio.sleep(0.05)  # the sink sends the first 10 frames meanwhile
            await self.context.new_turn("barge-in")
        await self.emit("audio", frame)


def graph(nodes: str, edges: str) -> LoadedGraph:
    return load_graph("<test>", text=f"name: test\nnodes:\n{nodes}\nedges:\n{edges}\n")


ECHO = load_graph(ROOT / "graphs" / "echo.yaml")


def tone_graph(frames: int, realtime: bool = False) -> LoadedGraph:
    params = json.dumps({"frames": frames, "realtime": realtime})
    return graph(
        f"  tone: {{type: test.tone, params: {params}}}\n  speaker: {{type: websocket.sink}}",
        "  - tone.audio -> speaker.audio",
    )


def pcm(samples: int, rate: int = 16000, freq: float = 440.0, start: int = 0) -> bytes:
    t = (np.arange(samples) + start) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def recv_until(
    ws: ClientConnection, done: Callable[[list[Message]], bool], timeout: float = 10
) -> list[Message]:
    """Collect messages until ``done(messages)`` or ``timeout`` (then fail)."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"timed out; got {len(messages)} messages: {summary(messages)}")
        try:
            messages.append(ws.recv(timeout=remaining))
        except TimeoutError:
            continue
    return messages


def recv_to_close(ws: ClientConnection, timeout: float = 10) -> tuple[list[Message], int | None]:
    """Collect messages until the server closes the connection; returns them and the code."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"connection not closed in {timeout} s: {summary(messages)}")
        try:
            messages.append(ws.recv(timeout=remaining))
        except TimeoutError:
            continue
        except ConnectionClosed as closed:
            return messages, closed.rcvd.code if closed.rcvd else None


def events(messages: list[Message]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in messages if isinstance(m, str)]


def audio(messages: list[Message]) -> list[tuple[int, int, np.ndarray]]:
    return [decode_audio(m) for m in messages if isinstance(m, bytes)]


def summary(messages: list[Message]) -> list[str]:
    return [m[:120] if isinstance(m, str) else f"<{len(m)} bytes>" for m in messages][-10:]


def has_error(code: str) -> Callable[[list[Message]], bool]:
    return lambda ms: any(e.get("type") == "error" and e["code"] == code for e in events(ms))


def wait_for(condition: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def echo_server():
    with running_server(create_app(ECHO)) as server:
        yield server


# -- HTTP ---------------------------------------------------------------------------------


def test_health_and_static_client() -> None:
    client = TestClient(create_app(ECHO))
    body = client.get("/health").json()
    assert (body["status"], body["graph"], body["sessions"]) == ("ok", "echo", 0)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("app.js", "capture-worklet.js", "playback-worklet.js", "style.css"):
        assert asset in page.text or asset.endswith("worklet.js")
        assert client.get(f"/{asset}").status_code == 200


def raw_get(server: RunningServer, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)  # sent verbatim: no client-side dot-segment removal
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/../server.py",
        "/../../pyproject.toml",
        "/%2e%2e/server.py",
        "/..%2fserver.py",
        "/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/web/../../server.py",
        "//etc/passwd",
        "/..\\server.py",
    ],
)
def test_static_files_cannot_escape_web_folder(echo_server: RunningServer, path: str) -> None:
    status, body = raw_get(echo_server, path)
    assert status in (400, 404), (path, status)
    assert b"create_app" not in body and b"[project]" not in body and b"root:" not in body


def test_metrics_prometheus_format(echo_server: RunningServer) -> None:
    with connect(echo_server.ws_url, open_timeout=5) as ws:
        ws.send(pcm(320))
        recv_until(ws, lambda ms: bool(audio(ms)))
        ws.send(b"\x00")  # one protocol error, counted live
        recv_until(ws, has_error("odd_length"))
        text = raw_get(echo_server, "/metrics")[1].decode()
    sample = re.compile(r'^flowvoice_[a-z_]+(\{([a-z_]+="[^"\n]*",?)+\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert (
            line.startswith("# HELP flowvoice_")
            or line.startswith("# TYPE flowvoice_")
            or (sample.match(line))
        ), line
    assert "flowvoice_sessions_active 1" in text
    assert "flowvoice_sessions_total 1" in text
    assert 'flowvoice_edge_dropped_frames_total{edge="mic.audio->speaker.audio"} 0' in text
    assert 'flowvoice_protocol_errors_total{code="odd_length"} 1' in text
    assert "# TYPE flowvoice_stage_latency_seconds histogram" in text
    wait_for(lambda: echo_server.voice.metrics.sessions_active == 0, what="session end")
    after = raw_get(echo_server, "/metrics")[1].decode()
    assert "flowvoice_sessions_active 0" in after
    assert 'flowvoice_protocol_errors_total{code="odd_length"} 1' in after


def test_latency_histogram_is_cumulative() -> None:
    metrics = ServerMetrics()
    for ms in (40, 250, 900, 20000):
        metrics.observe_event(
            {"type": "metrics", "turn": 1, "latency_ms": {"first_audio_sent": ms}}
        )
    metrics.observe_event({"type": "user_turn", "turn": 1, "text": "hi"})
    lines = metrics.render().splitlines()
    stage = 'stage="first_audio_sent"'
    buckets = [
        ln
        for ln in lines
        if ln.startswith("flowvoice_stage_latency_seconds_bucket") and stage in ln
    ]
    counts = [int(ln.rsplit(" ", 1)[1]) for ln in buckets]
    assert counts == sorted(counts) and counts[-1] == 4 and 'le="+Inf"' in buckets[-1]
    assert f"flowvoice_stage_latency_seconds_count{{{stage}}} 4" in lines
    assert f"flowvoice_stage_latency_seconds_sum{{{stage}}} 21.190000" in lines
    assert 'flowvoice_stage_latency_seconds_bucket{stage="first_audio_sent",le="0.05"} 1' in lines
    assert "flowvoice_turns_total 1" in lines


# -- audio round trip -----------------------------------------------------------------------


def test_echo_round_trip_frames_and_header(echo_server: RunningServer) -> None:
    with connect(echo_server.ws_url, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "hello", "sample_rate": 16000}))
        sent = b"".join(pcm(320, start=i * 320) for i in range(50))
        for i in range(50):
            ws.send(sent[i * 640 : (i + 1) * 640])
        messages = recv_until(ws, lambda ms: sum(len(a[2]) for a in audio(ms)) >= 16000)
        received = audio(messages)
        assert {(turn, rate) for turn, rate, _ in received} == {(0, 16000)}
        assert all(len(samples) == 320 for _, _, samples in received)
        assert np.concatenate([s for _, _, s in received]).tobytes() == sent
        assert [e["type"] for e in events(messages)] == ["metrics"]  # turn 0's trace


def test_client_rate_from_hello_is_resampled_to_16k(echo_server: RunningServer) -> None:
    with connect(echo_server.ws_url, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "hello", "sample_rate": 48000}))
        for i in range(50):  # one second of 48 kHz audio in 20 ms messages
            ws.send(pcm(960, rate=48000, start=i * 960))
        messages = recv_until(ws, lambda ms: sum(len(a[2]) for a in audio(ms)) >= 15000)
        received = audio(messages)
        assert {rate for _, rate, _ in received} == {16000}
        assert all(len(samples) == 320 for _, _, samples in received)
        echoed = np.concatenate([s for _, _, s in received]).astype(float)
        spectrum = np.abs(np.fft.rfft(echoed[-8000:]))
        assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) <= 4  # still a 440 Hz tone


def test_played_reports_feed_the_playback_ledger(echo_server: RunningServer) -> None:
    later = time.monotonic() + 3600  # past any clock-based estimate: only reports count
    with connect(echo_server.ws_url, open_timeout=5) as ws:
        for i in range(5):
            ws.send(pcm(320, start=i * 320))
        recv_until(ws, lambda ms: len(audio(ms)) == 5)  # 100 ms of turn 0 sent
        ((session, _),) = echo_server.voice.live.values()
        playback = Conversation.of_session(session).playback
        assert not playback.is_playing(0, now=later)
        ws.send(json.dumps({"type": "played", "turn": 0, "ms": 40}))
        wait_for(lambda: playback.is_playing(0, now=later), what="the played report")
        ws.send(json.dumps({"type": "played", "turn": 0, "ms": 20}))  # cumulative: ignored
        ws.send(json.dumps({"type": "played", "turn": 7, "ms": 20}))  # no such audio: ignored
        ws.send(json.dumps({"type": "played", "turn": 0, "ms": 99.0}))  # rounding: all of it
        wait_for(
            lambda: not Conversation.of_session(session).playback.is_playing(0, now=later),
            what="played to the end",
        )
        assert playback.heard_text(7) == ("", False)


# -- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"\x01\x02\x03", "odd_length"),
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"kind": "hello"}', "bad_message"),
        ('{"type": "selfdestruct"}', "unknown_type"),
        ('{"type": "hello", "sample_rate": "fast"}', "bad_message"),
        ('{"type": "hello", "sample_rate": 1000000}', "bad_message"),
        ('{"type": "hello", "sample_rate": true}', "bad_message"),
        ('{"type": "played", "turn": -1, "ms": 5}', "bad_message"),
        ('{"type": "played", "turn": 1, "ms": NaN}', "bad_message"),
        (b"\x00" * (Limits().max_binary_bytes + 2), "too_large"),
        (json.dumps({"type": "hello", "pad": "x" * Limits().max_text_bytes}), "too_large"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_malformed_input_gets_error_and_session_goes_on(
    echo_server: RunningServer, message: Message, code: str
) -> None:
    with connect(echo_server.ws_url, open_timeout=5) as ws:
        ws.send(message)
        error = next(e for e in events(recv_until(ws, has_error(code))) if e["type"] == "error")
        assert error["message"]
        ws.send(pcm(320))  # the session still works
        received = audio(recv_until(ws, lambda ms: bool(audio(ms))))
        assert received[0][:2] == (0, 16000)


def test_error_events_are_capped_per_connection(echo_server: RunningServer) -> None:
    cap = Limits().error_events
    with connect(echo_server.ws_url, open_timeout=5) as ws:
        for _ in range(cap + 50):
            ws.send("{")
        ws.send(pcm(320))
        messages = recv_until(ws, lambda ms: bool(audio(ms)))
    errors = [e for e in events(messages) if e["type"] == "error"]
    assert len(errors) == cap and "not reported" in errors[-1]["message"]
    wait_for(lambda: not echo_server.voice.live, what="session end")
    assert echo_server.voice.metrics.protocol_errors["bad_json"] == cap + 50


def test_messages_over_the_hard_limit_close_the_connection(echo_server: RunningServer) -> None:
    with connect(echo_server.ws_url, open_timeout=5, max_size=None) as ws:
        ws.send(b"\x00" * (2 << 20))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    wait_for(lambda: echo_server.voice.metrics.sessions_active == 0, what="session end")


# -- guards ---------------------------------------------------------------------------------


def test_token_is_required_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWVOICE_TOKEN", raising=False)
    with running_server(create_app(ECHO, token="s3cret")) as server:
        for url in (server.ws_url, f"{server.ws_url}?token=wrong"):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, open_timeout=5)
            assert refused.value.response.status_code == 403
        with connect(f"{server.ws_url}?token=s3cret", open_timeout=5) as ws:
            ws.send(pcm(320))
            recv_until(ws, lambda ms: bool(audio(ms)))


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWVOICE_TOKEN", "from-env")
    with running_server(create_app(ECHO)) as server:
        with pytest.raises(InvalidStatus):
            connect(server.ws_url, open_timeout=5)
        with connect(f"{server.ws_url}?token=from-env", open_timeout=5):
            pass


def test_origin_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWVOICE_TOKEN", raising=False)
    app = create_app(ECHO, allowed_origins=["https://app.example"])
    with running_server(app) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.ws_url, origin="http://evil.example", open_timeout=5)
        assert refused.value.response.status_code == 403
        for origin in (server.url, "http://localhost:5173", "https://app.example"):
            with connect(server.ws_url, origin=origin, open_timeout=5):
                pass


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "voice.example", True),
        ("https://voice.example", "voice.example", True),
        ("http://voice.example:8000", "voice.example:8000", True),
        ("http://VOICE.example", "voice.example:80", True),
        ("http://[::1]:9000", "voice.example", True),
        ("http://voice.example:8001", "voice.example:8000", False),
        ("https://voice.example", "voice.example:80", False),
        ("http://evil.example", "voice.example", False),
        ("null", "voice.example", False),
        ("file://", "voice.example", False),
    ],
)
def test_origin_rules(origin: str | None, host: str, allowed: bool) -> None:
    assert origin_allowed(origin, host, []) is allowed


# -- session lifecycle ----------------------------------------------------------------------


def test_finished_session_sends_everything_then_closes_normally() -> None:
    app = create_app(tone_graph(frames=25))
    with running_server(app) as server, connect(server.ws_url, open_timeout=5) as ws:
        messages, code = recv_to_close(ws)
    assert [len(s) for _, _, s in audio(messages)] == [320] * 25
    assert code == 1000


def test_node_failure_sends_error_naming_the_node_then_closes() -> None:
    failing = graph(
        "  mic: {type: websocket.source}\n  boom: {type: wstest.fail}",
        "  - mic.audio -> boom.audio",
    )
    with running_server(create_app(failing)) as server:
        with connect(server.ws_url, open_timeout=5) as ws:
            with contextlib.suppress(ConnectionClosed):  # the server may close mid-send
                for i in range(5):
                    ws.send(pcm(320, start=i * 320))
            messages, code = recv_to_close(ws)
        assert code == 1011
        (error,) = events(messages)
        assert error["type"] == "error" and error["code"] == "node_failed"
        assert (error["node"], error["node_type"]) == ("boom", "wstest.fail")
        assert "synthetic failure" in error["message"]
        wait_for(lambda: not server.voice.live, what="session end")
        assert server.voice.metrics.session_errors == {"boom": 1}


def test_interrupt_flushes_older_audio() -> None:
    app = create_app(
        graph(
            "  tone: {type: test.tone, params: {frames: 40}}\n"
            "  barge: {type: wstest.new_turn}\n"
            "  speaker: {type: websocket.sink}",
            "  - tone.audio -> barge.audio\n  - barge.audio -> speaker.audio",
        )
    )
    with running_server(app) as server, connect(server.ws_url, open_timeout=5) as ws:
        messages, code = recv_to_close(ws)
    assert code == 1000
    kinds = ["audio" if isinstance(m, bytes) else json.loads(m)["type"] for m in messages]
    cut = kinds.index("interrupt")
    assert json.loads(messages[cut]) == {"type": "interrupt", "turn": 1}
    assert 1 <= kinds[:cut].count("audio") <= 10  # turn 0 audio, maybe partly discarded
    assert {turn for turn, _, _ in audio(messages[:cut])} == {0}
    assert all(turn >= 1 for turn, _, _ in audio(messages[cut:]))  # stale turn 0 dropped


def test_disconnect_mid_stream_leaves_no_task_running() -> None:
    with running_server(create_app(tone_graph(frames=100_000, realtime=True))) as server:
        baseline = server.task_names()
        for _ in range(20):
            with connect(server.ws_url, open_timeout=5) as ws:
                recv_until(ws, lambda ms: len(audio(ms)) >= 2)
        wait_for(lambda: not server.voice.live, what="sessions to end")
        wait_for(lambda: server.task_names() == baseline, timeout=10, what="tasks to finish")
        assert server.voice.metrics.sessions_total == 20
        assert server.voice.metrics.sessions_active == 0


def churn(server: RunningServer, sessions: int) -> None:
    """Open ``sessions`` connections one after another, each sending 200 ms of audio."""
    for _ in range(sessions):
        with connect(server.ws_url, open_timeout=10) as ws:
            ws.send(pcm(3200))
    wait_for(lambda: not server.voice.live, timeout=30, what="sessions to end")


def rss_growth_mb(server: RunningServer, sessions: int) -> float:
    """Resident memory growth over ``sessions`` connect/disconnect cycles, after a warm-up."""
    churn(server, 20)
    gc.collect()
    before = psutil.Process().memory_info().rss
    churn(server, sessions)
    gc.collect()
    return (psutil.Process().memory_info().rss - before) / 1e6


def test_100_sessions_leave_no_task_no_session_and_no_memory_growth(
    echo_server: RunningServer,
) -> None:
    baseline = echo_server.task_names()
    assert rss_growth_mb(echo_server, 100) < 40
    wait_for(lambda: echo_server.task_names() == baseline, what="tasks to finish")
    assert not [o for o in gc.get_objects() if isinstance(o, Session)]
    assert echo_server.voice.metrics.sessions_total == 120


@pytest.mark.slow
def test_100_speech_sessions_do_not_grow_memory(speech_server: RunningServer) -> None:
    assert rss_growth_mb(speech_server, 100) < 100


def test_abrupt_disconnect_cancels_the_session(echo_server: RunningServer) -> None:
    baseline = echo_server.task_names()
    with connect(echo_server.ws_url, open_timeout=5) as ws:
        ws.send(pcm(320))
        recv_until(ws, lambda ms: bool(audio(ms)))
        ws.socket.shutdown(socket.SHUT_RDWR)  # no closing handshake, like a crashed tab
    wait_for(lambda: not echo_server.voice.live, what="session to end")
    wait_for(lambda: echo_server.task_names() == baseline, what="tasks to finish")


# -- the real speech graph -------------------------------------------------------------------


class Client:
    """A WebSocket client that reads in the background and can speak in real time."""

    def __init__(self, url: str):
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(connect(url, open_timeout=10, max_size=None))
        self.messages: list[Message] = []
        self._threads = [threading.Thread(target=self._read, daemon=True)]
        self._threads[0].start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                self.messages.append(message)
        except ConnectionClosed:
            pass

    def say(self, samples: np.ndarray, rate: int = 16000) -> None:
        """Send ``samples`` as 20 ms PCM16 frames paced in real time (in the background)."""

        def send() -> None:
            step = rate // 50
            start = time.monotonic()
            for index, offset in enumerate(range(0, len(samples), step)):
                time.sleep(max(0.0, start + index * 0.02 - time.monotonic()))
                try:
                    self.ws.send(samples[offset : offset + step].astype("<i2").tobytes())
                except ConnectionClosed:
                    return

        self.ws.send(json.dumps({"type": "hello", "sample_rate": rate}))
        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        self._threads.append(thread)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in events(list(self.messages)) if e["type"] == kind]

    def replied(self) -> bool:
        """A committed user turn, its full reply text, and at least 0.6 s of its audio
        arrived (audio comes paced in real time)."""
        turns = self.events("user_turn")
        if not turns:
            return False
        turn = turns[0]["turn"]
        texts = [e for e in self.events("assistant_text") if e["turn"] == turn]
        sent = [a for a in audio(list(self.messages)) if a[0] == turn]
        seconds = sum(len(samples) / rate for _, rate, samples in sent)
        return any(e["final"] for e in texts) and seconds >= 0.6

    def close(self) -> None:
        self._stack.close()
        for thread in self._threads:
            thread.join(10)


def question(text: str) -> np.ndarray:
    """``text`` spoken at 16 kHz with 1 s of silence before and 3 s after."""
    silence = np.zeros(16000, np.int16)
    return np.concatenate([silence, speak(text, 16000), silence, silence, silence])


def llm_history(session: Session) -> str:
    """The session's LLM chat history, as one text."""
    return " ".join(m.content for m in session.nodes["llm"].history.messages)


@pytest.fixture(scope="module")
def speech_server():
    graph = speech_graph()
    with running_server(create_app(graph)) as server:
        server.call(prewarm(graph), timeout=300)
        yield server


def test_spoken_question_gets_partial_and_final_transcripts() -> None:
    graph = speech_graph(ROOT / "tests" / "data" / "ws_listen.yaml")
    with running_server(create_app(graph)) as server:
        server.call(prewarm(graph), timeout=300)
        client = Client(server.ws_url)
        try:
            client.say(question("What is the capital of France?"))
            wait_for(lambda: client.events("user_turn"), timeout=60, what="the user turn")
        finally:
            client.close()
    kinds = [e["type"] for e in events(client.messages)]
    assert kinds.index("final_transcript") < kinds.index("user_turn")
    (final,) = client.events("final_transcript")
    assert wer("What is the capital of France?", final["text"]) <= 0.35, final
    assert client.events("user_turn")[0]["text"] == final["text"]


def test_spoken_question_gets_transcript_and_assistant_audio(speech_server: RunningServer) -> None:
    client = Client(speech_server.ws_url)
    try:
        client.say(question("What is the capital of France?"))
        wait_for(client.replied, timeout=90, what="a spoken reply")
    finally:
        client.close()
    finals = " ".join(e["text"] for e in client.events("final_transcript"))
    assert wer("What is the capital of France?", finals) <= 0.35, finals
    (user_turn,) = client.events("user_turn")
    turn = user_turn["turn"]
    reply = "".join(e["text"] for e in client.events("assistant_text") if e["turn"] == turn)
    assert reply.strip()
    frames = [a for a in audio(client.messages) if a[0] == turn]
    assert {rate for _, rate, _ in frames} == {frames[0][1]} and frames[0][1] >= 16000
    seconds = sum(len(samples) for _, _, samples in frames) / frames[0][1]
    assert seconds > 0.5
    (metrics,) = [e for e in client.events("metrics") if e["turn"] == turn]
    latency = metrics["latency_ms"]
    assert 0 < latency["final_transcript"] <= latency["first_audio_sent"] < 30_000
    print(f"\nreply: {reply!r}; {seconds:.1f} s of audio; latency ms: {latency}")


def test_two_sessions_keep_separate_histories(speech_server: RunningServer) -> None:
    questions = ["What is the capital of France?", "How many legs does a spider have?"]
    clients = [Client(speech_server.ws_url) for _ in questions]
    try:
        wait_for(lambda: len(speech_server.voice.live) == 2, what="two sessions")
        sessions = list(speech_server.voice.live.values())
        for client, text in zip(clients, questions, strict=True):
            client.say(question(text))
        wait_for(lambda: all(c.replied() for c in clients), timeout=180, what="both replies")
        histories = [llm_history(session) for session, _ in sessions]
    finally:
        for client in clients:
            client.close()
    for client, text, other in zip(clients, questions, reversed(questions), strict=True):
        (user_turn,) = client.events("user_turn")
        assert wer(text, user_turn["text"]) <= 0.35, user_turn
        assert wer(other, user_turn["text"]) > 0.5
    assert ("France" in histories[0]) != ("France" in histories[1])
    assert ("spider" in histories[0]) != ("spider" in histories[1])


def test_disconnect_mid_reply_ends_the_speech_session(speech_server: RunningServer) -> None:
    wait_for(lambda: not speech_server.voice.live, what="earlier sessions to end")
    baseline = speech_server.task_names()
    client = Client(speech_server.ws_url)
    try:
        client.say(question("What is the capital of France?"))
        wait_for(lambda: audio(list(client.messages)), timeout=60, what="the reply's audio")
        # The reply is under way: its audio is paced in real time, well past this moment.
        assert not client.replied(), "the reply had already been played in full"
    finally:
        client.close()
    wait_for(lambda: not speech_server.voice.live, timeout=15, what="the session to end")
    wait_for(lambda: speech_server.task_names() == baseline, timeout=15, what="tasks to finish")
