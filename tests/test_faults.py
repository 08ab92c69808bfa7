"""Fault injection: failing, hanging and slow engines, a client that stops reading, a client
that floods audio, an LLM server that dies mid-reply. Each against a real server on
127.0.0.1 with other sessions running beside the faulty one.

The fault nodes (tests/fault_nodes.py) forward audio and misbehave on a fault frame, so one
client triggers the fault in its own session only.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fault_nodes
import numpy as np
import pytest
from reliability import (
    EchoClient,
    chain_graph,
    clients,
    free_port,
    http_get,
    metric,
    raw_websocket,
    usage,
    wait_until,
)
from serving import RunningServer, running_server

from flowvoice.graph.registry import get_node_type
from flowvoice.graph.spec import LoadedGraph, load_graph
from flowvoice.runtime.threads import abandoned_threads
from flowvoice.server import create_app

TESTS = Path(__file__).resolve().parent


@contextmanager
def serving(graph: LoadedGraph) -> Iterator[tuple[RunningServer, list[str]]]:
    """The graph's server and its idle task names; at the end no session may be left."""
    with running_server(create_app(graph)) as server:
        idle = server.task_names()
        yield server, idle
        wait_until(lambda: not server.voice.live, 10, "every session to end")
        wait_until(lambda: server.task_names() == idle, 10, "tasks back to idle")


def fault_frame() -> bytes:
    return np.full(320, fault_nodes.FAULT, "<i2").tobytes()


def echo_all(sessions: list[EchoClient], start: int) -> None:
    for i, client in enumerate(sessions):
        client.echo(start + i)


def test_engine_error_mid_turn_ends_only_its_session() -> None:
    with serving(chain_graph("fault.raise")) as (server, _), clients(server.ws_url, 3) as peers:
        faulty, *others = peers
        echo_all(peers, 1)
        faulty.send(fault_frame())
        assert faulty.wait_closed() == 1011
        (error,) = faulty.events("error")
        assert error["code"] == "node_failed"
        assert (error["node"], error["node_type"]) == ("raise", "fault.raise")
        assert "EngineFault: injected engine failure" in error["message"]
        echo_all(others, 10)  # the other sessions go on
        with clients(server.ws_url, 1) as fresh:
            echo_all(fresh, 20)
        assert server.voice.metrics.session_errors == {"raise": 1}


def test_hanging_engine_is_bounded_only_by_its_client() -> None:
    """Without a ``stall_timeout_s`` an engine awaiting forever stalls its session without an
    error. What ends it is the client leaving (or a proxy's read timeout); then every task of
    the session is cancelled. Other sessions are unaffected throughout."""
    with serving(chain_graph("fault.hang")) as (server, _), clients(server.ws_url, 2) as peers:
        stuck, other = peers
        echo_all(peers, 1)
        stuck.send(fault_frame())
        stuck.send_marked(5)
        other.echo(6)
        time.sleep(1.0)
        assert 5 not in stuck.marks() and stuck.events("error") == [], "stalled, silently"
        other.echo(7)
        stuck.close()
        wait_until(lambda: len(server.voice.live) == 1, 5, "the stalled session to be cancelled")
        other.echo(8)


def test_stalled_engine_ends_its_session_with_an_error_naming_it() -> None:
    graph = chain_graph("fault.hang")
    graph.nodes["hang"].stall_timeout_s = 0.5
    with serving(graph) as (server, _), clients(server.ws_url, 2) as peers:
        stuck, other = peers
        echo_all(peers, 1)
        stuck.send(fault_frame())
        assert stuck.wait_closed() == 1011
        (error,) = stuck.events("error")
        assert (error["code"], error["node"]) == ("node_failed", "hang")
        assert "NodeStalled: no progress for 0.5 s" in error["message"]
        other.echo(2)  # the other session goes on


def test_engine_hung_in_a_thread_ends_with_its_client() -> None:
    fault_nodes.RELEASE_THREADS.clear()
    with running_server(create_app(chain_graph("fault.hang_thread"))) as server:
        try:
            with clients(server.ws_url, 1) as (client,):
                client.echo(1)
                client.send(fault_frame())
                client.send_marked(2)
                time.sleep(0.5)
                assert 2 not in client.marks(), "the engine hung: nothing after the fault"
            wait_until(lambda: not server.voice.live, 3, "the session to end after its client")
            assert abandoned_threads() == 1, "the stuck thread was abandoned and counted"
        finally:
            fault_nodes.RELEASE_THREADS.set()  # before the server waits for its sessions
        wait_until(lambda: abandoned_threads() == 0, 5, "the released thread to be uncounted")


def tone_graph() -> LoadedGraph:
    """Assistant audio as fast as the connection takes it (``lead_ms: 0``: no real-time
    pacing, so backpressure is the only brake)."""
    return load_graph(
        "<test>",
        text="name: flood\nnodes:\n"
        "  tone: {type: test.tone, params: {frames: 100000000}}\n"
        "  speaker: {type: websocket.sink, params: {lead_ms: 0}}\n"
        "edges:\n  - tone.audio -> speaker.audio\n",
    )


def test_client_that_stops_reading_is_capped_by_backpressure(capsys) -> None:
    graph = tone_graph()
    graph.server.write_timeout_s = 0  # backpressure alone (tests/test_keepalive.py: the timeout)
    with serving(graph) as (server, _):
        before = usage()
        sock, status = raw_websocket(server.port, rcvbuf=4096)
        assert status == 101
        try:
            wait_until(lambda: server.voice.live, 5, "the session")
            ((session, _),) = server.voice.live.values()
            produced = session.edges[0].channel

            def plateau() -> bool:
                sent = produced.sent
                time.sleep(0.5)
                return produced.sent == sent

            took = wait_until(plateau, 30, "the tone source to be held back")
            during = usage()
            assert len(produced) == produced.capacity, "held back by the full edge"
            assert http_get(server.port, "/health")[0] == 200, "the server still answers"
            with clients(server.ws_url, 1) as (reader,):
                wait_until(lambda: len(reader.marks()) >= 100, 10, "a reading client's audio")
        finally:
            sock.close()  # unread data: the kernel resets the connection
    growth = during.rss_mb - before.rss_mb
    assert growth < 30, f"memory grew by {growth:.1f} MB under a client that stopped reading"
    with capsys.disabled():
        print(
            f"\nnon-reading client: source held back after {produced.sent} frames "
            f"({produced.sent * 648 / 2**20:.1f} MB of audio, most in kernel socket buffers) "
            f"within {took:.1f} s; RSS {before.rss_mb:.1f} -> {during.rss_mb:.1f} MB"
        )


def test_client_faster_than_real_time_drops_and_counts(capsys) -> None:
    graph = chain_graph(
        "fault.slow", params={"fault.slow": {"delay_ms": 5}}, buffer=16, overflow="drop_oldest"
    )
    flood = 2000  # 40 s of audio, sent as fast as the socket takes it
    with serving(graph) as (server, _), clients(server.ws_url, 2) as (fast, calm):
        calm.echo(1)
        start = time.monotonic()
        for value in range(1, flood + 1):
            fast.send_marked(value)
        sent_in = time.monotonic() - start
        health = http_get(server.port, "/health")[0]
        fast.echo(flood + 1, timeout=30)  # everything older was echoed or dropped by now
        calm.echo(2)
        text = http_get(server.port, "/metrics")[1]
        edge_drops = metric(text, "edge_dropped_frames_total", edge="mic.audio->slow.audio")
        input_drops = metric(text, "input_dropped_chunks_total")
        echoed = fast.marks()
    assert health == 200
    assert echoed == sorted(echoed), "order kept"
    assert edge_drops > 0, "live audio into a slow consumer drops (drop_oldest) and counts"
    assert len(echoed) + edge_drops + input_drops == flood + 1, "every frame accounted for"
    with capsys.disabled():
        print(
            f"\nflood: {flood} frames (40 s of audio) sent in {sent_in:.2f} s; "
            f"{len(echoed)} echoed, {edge_drops:.0f} dropped at the edge, "
            f"{input_drops:.0f} at the transport inbox"
        )


# -- the LLM server dies mid-reply and comes back ------------------------------------------------


class FakeLLMServer:
    """tests/fake_openai.py in its own process, so it can be killed and started again."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.log_dir / "fake_openai.log").open("ab")
        command = [sys.executable, str(TESTS / "fake_openai.py"), str(self.port), "--delay", "0.1"]
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self._answers, 20, "the fake LLM server")

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "fake LLM server died"
        try:
            return http_get(self.port, "/v1/models")[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def llm_graph(base_url: str) -> LoadedGraph:
    """A user turn per marked burst of audio (soak.turns), answered by ``llm.openai``."""
    return load_graph(
        "<test>",
        text=f"""
name: llm_fault
nodes:
  mic: {{type: websocket.source}}
  turns: {{type: soak.turns}}
  llm:
    type: llm.openai
    params: {{base_url: "{base_url}", model: fake, retries: 2, retry_backoff_s: 0.2,
              timeout_s: 5}}
  speaker: {{type: websocket.sink}}
edges:
  - mic.audio -> turns.audio
  - turns.audio -> speaker.audio
  - turns.user_turn -> llm.prompt
  - llm.text -> speaker.text
""",
    )


def reply_of(client: EchoClient, turn: int) -> tuple[str, bool]:
    texts = [e for e in client.events("assistant_text") if e["turn"] == turn]
    return "".join(e["text"] for e in texts), any(e["final"] for e in texts)


def test_llm_server_dying_mid_reply_then_coming_back(tmp_path: Path) -> None:
    if get_node_type("llm.openai") is None:
        pytest.skip("no llm.openai node type (flowvoice/nodes/llm_remote.py)")
    pytest.importorskip("openai", reason="llm.openai needs: pip install 'flowvoice[openai]'")
    from fake_openai import REPLY

    llm = FakeLLMServer(tmp_path)
    llm.start()
    try:
        graph = llm_graph(f"http://127.0.0.1:{llm.port}/v1")
        with serving(graph) as (server, _), clients(server.ws_url, 2) as (talker, other):
            talker.send_marked(1)  # turn 1
            wait_until(lambda: reply_of(talker, 1)[0], 10, "the first words of the reply")
            llm.kill()
            wait_until(lambda: talker.events("error"), 15, "an error event for the cut reply")
            (error,) = talker.events("error")
            print(f"\nLLM server killed mid-reply: {error}")
            assert error["node"] == "llm" and error["turn"] == 1, error
            text, final = reply_of(talker, 1)
            assert REPLY.startswith(text) and text != REPLY
            other.echo(7)  # another session goes on meanwhile

            llm.start()  # the server comes back: the next turn is answered in full
            talker.send_marked(2)
            wait_until(lambda: reply_of(talker, 2)[1], 15, "the reply of turn 2")
            assert reply_of(talker, 2)[0] == REPLY
            assert not talker.closed.is_set() and len(talker.events("error")) == 1
    finally:
        llm.kill()
