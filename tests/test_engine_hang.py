"""A shared engine that hangs inside its call (flowvoice/runtime/engine.py).

The real Piper voice and the real llama.cpp model, made to block inside their call once: the
sessions waiting on the engine get an error within the deadline instead of waiting forever,
the server reports the hang, reloads the engine and serves a new session; a hung LLM speaks
its error reply; too many stuck threads make the server unhealthy and ``flowvoice run`` exit
with status 3 for its supervisor.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import run_graph
from reliability import EchoClient, http_get, metric, wait_until
from serving import running_server

from flowvoice.frames import UserTurn
from flowvoice.graph.spec import load_graph
from flowvoice.health import EXIT_ENGINE_DOWN, watch_engines
from flowvoice.runtime import engine
from flowvoice.runtime.threads import abandoned_threads
from flowvoice.server import create_app, prewarm
from flowvoice.testing.server_process import free_port, healthy

TESTS = Path(__file__).resolve().parent

DEADLINE_S = 2.0

GRAPH = f"""
name: tts-hang
server: {{engine_timeout_s: {DEADLINE_S}}}
nodes:
  text:    {{type: test.text, params: {{sentences: ["Hello there, how are you?"]}}}}
  tts:     {{type: tts.piper}}
  speaker: {{type: websocket.sink}}
edges:
  - text.sentence -> tts.text
  - tts.audio -> speaker.audio
"""


class Blocker:
    """Wraps an engine method so that its next call blocks (in the engine, holding it) until
    :meth:`release`; later calls run normally."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self._released = threading.Event()

    def arm(self) -> None:
        self.armed = True

    def release(self) -> None:
        self._released.set()

    def block_here(self) -> None:
        if self.armed:
            self.armed = False
            self.entered.set()
            self._released.wait(120)

    def wrap_generator(self, original: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        def blocking(*args: Any, **kwargs: Any) -> Iterator[Any]:
            self.block_here()
            yield from original(*args, **kwargs)

        return blocking

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def blocking(*args: Any, **kwargs: Any) -> Any:
            self.block_here()
            return original(*args, **kwargs)

        return blocking


@pytest.fixture
def blocker() -> Iterator[Blocker]:
    saved = (engine.settings.timeout_s, engine.settings.max_abandoned_threads)
    block = Blocker()
    try:
        yield block
    finally:
        block.release()
        engine.settings.timeout_s, engine.settings.max_abandoned_threads = saved
        wait_until(lambda: abandoned_threads() == 0, 30, "the blocked thread to return")


def piper_hangs(text: str) -> float:
    return metric(text, "engine_hangs_total", engine="piper en_US-joe-medium")


def test_hung_tts_fails_the_waiting_sessions_in_time_and_is_reloaded(blocker, monkeypatch):
    from piper import PiperVoice

    graph = load_graph("<test>", text=GRAPH)
    app = create_app(graph)
    with running_server(app) as server:
        server.call(prewarm(graph), timeout=120)  # loaded before the blocker is armed
        hangs_before = piper_hangs(http_get(server.port, "/metrics")[1])
        monkeypatch.setattr(PiperVoice, "synthesize", blocker.wrap_generator(PiperVoice.synthesize))
        blocker.arm()
        holder = EchoClient(server.ws_url)
        try:
            assert blocker.entered.wait(30), "the first session's synthesis never started"
            waiting_since = time.monotonic()
            waiter = EchoClient(server.ws_url)
            try:
                wait_until(lambda: waiter.events("error"), DEADLINE_S + 8, "the waiter's error")
                took = time.monotonic() - waiting_since
                wait_until(lambda: holder.events("error"), 10, "the holder's error")
            finally:
                waiter.close()
        finally:
            holder.close()
        for client in (waiter, holder):
            (error,) = client.events("error")
            assert (error["code"], error["node"]) == ("engine_failed", "tts")
            assert "piper en_US-joe-medium hung" in error["message"]
            assert "engine_timeout_s" in error["message"]
            assert client.marks() == [], "no audio from the hung engine"
        print(f"\nthe waiting session got its error {took:.2f} s after connecting")

        status, body = http_get(server.port, "/health")
        assert status == 200 and '"status":"degraded"' in body, body
        text = http_get(server.port, "/metrics")[1]
        assert 'flowvoice_engine_healthy{engine="piper en_US-joe-medium"} 0' in text
        assert piper_hangs(text) == hangs_before + 1
        assert metric(text, "abandoned_threads") == 1

        fresh = EchoClient(server.ws_url)  # a new session: the engine is reloaded
        try:
            wait_until(lambda: len(fresh.marks()) >= 5, 60, "audio from the reloaded engine")
        finally:
            fresh.close()
        assert fresh.events("error") == []
        status, body = http_get(server.port, "/health")
        assert status == 200 and '"status":"ok"' in body, body
        text = http_get(server.port, "/metrics")[1]
        assert 'flowvoice_engine_healthy{engine="piper en_US-joe-medium"} 1' in text


@pytest.mark.anyio
async def test_hung_llm_speaks_its_error_reply(blocker, monkeypatch):
    from llama_cpp import Llama

    monkeypatch.setattr(Llama, "create_completion", blocker.wrap(Llama.create_completion))

    async def arm(_context) -> None:  # after setup: its warm-up may be slow on a busy machine
        engine.settings.timeout_s = DEADLINE_S
        blocker.arm()

    script = [
        arm,
        ("llm.prompt", UserTurn(text="What is the capital of France?")),
        8.0,
        ("llm.prompt", UserTurn(text="What is the capital of France?")),  # a reloaded model
        15.0,
    ]
    result = await run_graph({"llm": ("llm.llamacpp", {})}, [], script, ["llm.prompt"], timeout=90)
    texts = [frame.text for frame in result.frames("llm.text")]
    first_end = texts.index("")
    assert texts[:first_end] == ["Sorry, something went wrong. Please say that again."]
    assert "paris" in "".join(texts[first_end:]).lower(), texts
    (error,) = [e for e in result.events if e["type"] == "error"]
    assert (error["code"], error["node"]) == ("engine_failed", "llm")
    assert "hung: no progress for 2 s" in error["message"]


def test_too_many_stuck_threads_make_the_server_unhealthy(blocker, monkeypatch):
    from piper import PiperVoice

    graph = load_graph(
        "<test>", text=GRAPH.replace("server: {", "server: {max_abandoned_threads: 1, ")
    )
    app = create_app(graph)
    with running_server(app) as server:
        server.call(prewarm(graph), timeout=120)
        monkeypatch.setattr(PiperVoice, "synthesize", blocker.wrap_generator(PiperVoice.synthesize))
        blocker.arm()
        client = EchoClient(server.ws_url)
        try:
            wait_until(lambda: client.events("error"), DEADLINE_S + 8, "the engine error")
        finally:
            client.close()
        status, body = http_get(server.port, "/health")
        assert status == 503 and '"status":"unhealthy"' in body, body
        assert "max_abandoned_threads: 1" in body
        reasons: list[str] = []
        server.call(watch_engines(reasons.append), timeout=10)
        assert "1 worker threads are stuck" in reasons[0]

        blocker.release()  # the stuck call returns at last: the engine recovers
        wait_until(lambda: abandoned_threads() == 0, 30, "the blocked thread to return")
        fresh = EchoClient(server.ws_url)
        try:
            wait_until(lambda: len(fresh.marks()) >= 5, 60, "audio from the reloaded engine")
        finally:
            fresh.close()
        assert http_get(server.port, "/health")[0] == 200


def test_flowvoice_run_exits_for_its_supervisor_when_engines_cannot_recover(tmp_path):
    graph = tmp_path / "hang.yaml"
    graph.write_text(
        GRAPH.replace("server: {", "server: {max_abandoned_threads: 1, ").replace(
            "Hello there, how are you?", "Please hang now."
        )
    )
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "hanging_piper_run.py"), str(graph), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: healthy(port) or proc.poll() is not None, 120, "the server")
        client = EchoClient(f"ws://127.0.0.1:{port}/ws")
        try:
            code = proc.wait(DEADLINE_S + 30)
        finally:
            client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = log.read_text(errors="replace")
    assert code == EXIT_ENGINE_DOWN, output
    assert "shared engines cannot recover: 1 worker threads are stuck" in output
    assert client.events("error")[0]["code"] == "engine_failed"
