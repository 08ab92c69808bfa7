"""Dead connections are reclaimed within the ``server`` block's timeouts (flowvoice/keepalive.py).

A client that vanishes without closing (answers no ping), one that stays connected but sends
nothing, and one that stops reading: each session ends within its timeout, the log says why,
its tasks are gone, and another session beside it echoes throughout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from reliability import EchoClient, chain_graph, raw_websocket, wait_until
from serving import RunningServer, running_server
from test_faults import tone_graph

from flowvoice.graph.spec import LoadedGraph, ServerSpec
from flowvoice.run_options import apply_server_options
from flowvoice.server import create_app

#: Every timeout off but the one a test sets.
OFF = {"ping_interval_s": 0, "ping_timeout_s": 0, "idle_timeout_s": 0, "write_timeout_s": 0}


@contextmanager
def serving(graph: LoadedGraph, **timeouts: float) -> Iterator[RunningServer]:
    graph.server = ServerSpec(**{**OFF, **timeouts})
    with running_server(create_app(graph)) as server:
        idle = server.task_names()
        yield server
        wait_until(lambda: server.task_names() == idle, 10, "tasks back to idle")


def reclaimed(server: RunningServer, start: float, others: int, within: float) -> float:
    """Wait until only ``others`` sessions are live; the seconds since ``start``."""
    wait_until(lambda: len(server.voice.live) == others, within, "the dead session to end")
    return time.monotonic() - start


def test_client_that_vanishes_without_closing_is_reclaimed_by_pings(caplog) -> None:
    caplog.set_level(logging.INFO, logger="flowvoice.server")
    with serving(chain_graph(), ping_interval_s=0.5, ping_timeout_s=0.5) as server:
        other = EchoClient(server.ws_url)
        sock, status = raw_websocket(server.port)  # connected, then silent: answers no ping
        try:
            assert status == 101
            wait_until(lambda: len(server.voice.live) == 2, 5, "both sessions")
            start = time.monotonic()
            other.echo(1)
            took = reclaimed(server, start, 1, 10)
            other.echo(2)
        finally:
            sock.close()
            other.close()
    assert "the client vanished (no pong within ping_timeout_s" in caplog.text
    print(f"\nsilent client reclaimed {took:.2f} s after ping 0.5 s + pong timeout 0.5 s")


def test_client_that_sends_nothing_is_closed_after_the_idle_timeout(caplog) -> None:
    caplog.set_level(logging.INFO, logger="flowvoice.server")
    with serving(chain_graph(), idle_timeout_s=1.0, ping_interval_s=0.2) as server:
        other = EchoClient(server.ws_url)
        idle = EchoClient(server.ws_url)  # answers pings, sends nothing
        try:
            start = time.monotonic()
            for value in range(1, 8):  # the other session keeps talking throughout
                other.echo(value)
                time.sleep(0.2)
            took = reclaimed(server, start, 1, 10)
            assert idle.wait_closed(5) == 1001
            other.echo(100)
        finally:
            idle.close()
            other.close()
    assert took >= 1.0, "closed before its idle timeout"
    assert "no message from the client for 1 s (idle_timeout_s)" in caplog.text
    print(f"\nidle client closed {took:.2f} s after connecting (idle_timeout_s: 1)")


def test_client_that_stops_reading_is_closed_after_the_write_timeout(caplog) -> None:
    caplog.set_level(logging.INFO, logger="flowvoice.server")
    with serving(tone_graph(), write_timeout_s=1.0) as server:
        reader = EchoClient(server.ws_url)
        sock, status = raw_websocket(server.port, rcvbuf=4096)
        try:
            assert status == 101
            wait_until(lambda: len(server.voice.live) == 2, 5, "both sessions")
            took = reclaimed(server, time.monotonic(), 1, 30)
            heard = len(reader.marks())
            wait_until(lambda: len(reader.marks()) > heard + 100, 10, "the reader's audio")
        finally:
            sock.close()
            reader.close()
    assert "the client took no data for 1 s (write_timeout_s)" in caplog.text
    print(f"\nnon-reading client closed {took:.2f} s after its session started")


def test_run_options_override_the_server_block() -> None:
    import argparse

    graph = chain_graph()
    args = argparse.Namespace(
        ping_interval_s=5.0,
        ping_timeout_s=None,
        idle_timeout_s=0.0,
        write_timeout_s=None,
        engine_timeout_s=None,
        max_abandoned_threads=None,
    )
    apply_server_options(args, graph)
    assert (graph.server.ping_interval_s, graph.server.ping_timeout_s) == (5.0, 20.0)
    assert graph.server.idle_timeout_s == 0.0
    args.write_timeout_s = -1.0
    with pytest.raises(ValueError, match="--write-timeout -1.0: Input should be greater"):
        apply_server_options(args, graph)
