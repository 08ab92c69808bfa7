"""Measure the figures of docs/scaling.md on this machine (needs nginx and the test extras).

    .venv/bin/python deploy/measure_scaling.py [--speech] [--repeats 3]

- memory of one replica (idle, models loaded) and per added session, for the echo graph and,
  with ``--speech``, graphs/default.yaml (LLM in process) and graphs/shared_llm.yaml (LLM on
  a server; none is needed to measure memory: the node connects on the first turn);
- the round trip of one 20 ms frame through the echo graph, direct and through nginx
  (deploy/nginx.conf);
- failover: how long after a replica is killed its sessions see the connection end, and what
  a new session then costs through nginx.

Everything runs on 127.0.0.1 with the helpers of tests/reliability.py.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reliability import (  # noqa: E402
    ECHO_YAML,
    EchoClient,
    clients,
    flowvoice_processes,
    marked_frame,
    nginx_proxy,
    scrape,
    usage,
    wait_until,
)
from websockets.sync.client import connect  # noqa: E402

from flowvoice.testing.server_process import ServerProcess, exit_on_signal  # noqa: E402


def replica_memory(graph: Path, sessions: int, tmp: Path) -> tuple[float, float]:
    """(RSS of an idle replica in MB, MB per added idle session)."""
    proc = ServerProcess(graph, tmp / f"{graph.stem}.log")
    try:
        proc.wait_healthy(timeout=300)
        time.sleep(1)
        idle = usage(proc.proc.pid).rss_mb
        with clients(f"ws://127.0.0.1:{proc.port}/ws", sessions):
            wait_until(lambda: scrape(proc.port, "sessions_active") == sessions, 120, "sessions")
            time.sleep(1)
            busy = usage(proc.proc.pid).rss_mb
        return idle, (busy - idle) / sessions
    finally:
        proc.stop()


def round_trips(url: str, count: int) -> list[float]:
    """Milliseconds from sending one marked frame to receiving its echo, one at a time."""
    times = []
    with connect(url, proxy=None, compression=None) as ws:
        for i in range(count):
            start = time.perf_counter()
            ws.send(marked_frame(i))
            ws.recv(timeout=5)
            times.append((time.perf_counter() - start) * 1000)
    return times[count // 10 :]  # without the warm-up


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def failover(tmp: Path) -> tuple[float, float, float]:
    """(ms until the killed replica's sessions end, ms for a new session's connect + first
    echo right after, same once nginx has marked the replica down)."""
    with (
        flowvoice_processes(2, tmp) as (a, b),
        nginx_proxy([a.port, b.port], tmp) as proxy,
        clients(proxy.ws_url, 4) as sessions,
    ):
        for i, client in enumerate(sessions):
            client.echo(i + 1)
        killed = time.monotonic()
        a.kill(signal.SIGKILL)
        wait_until(lambda: sum(c.closed.is_set() for c in sessions) == 2, 10, "A's sessions")
        ended = max(c.closed_at or 0 for c in sessions) - killed

        def new_session() -> float:
            start = time.monotonic()
            client = EchoClient(proxy.ws_url)
            try:
                client.echo(99)
            finally:
                client.close()
            return time.monotonic() - start

        first, later = new_session(), statistics.median(new_session() for _ in range(5))
        return ended * 1000, first * 1000, later * 1000


def main() -> None:
    signal.signal(signal.SIGTERM, exit_on_signal)  # the with blocks stop every server
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech", action="store_true", help="also the speech graphs")
    parser.add_argument("--repeats", type=int, default=3, help="failover runs")
    parser.add_argument("--echoes", type=int, default=1000, help="round trips measured")
    args = parser.parse_args()
    out: Callable[[str], None] = print

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        graphs = [(ECHO_YAML, 50)]
        if args.speech:
            graphs += [
                (ROOT / "graphs" / "default.yaml", 8),
                (ROOT / "graphs" / "shared_llm.yaml", 8),
            ]
        out("| graph | replica RSS, idle | per added idle session |")
        out("|---|---|---|")
        for graph, sessions in graphs:
            idle, per_session = replica_memory(graph, sessions, tmp)
            per_kb = per_session * 1024
            out(f"| {graph.name} | {idle:.0f} MB | {per_kb:.0f} KB ({sessions} sessions) |")

        (tmp / "rtt").mkdir()
        with (
            flowvoice_processes(2, tmp / "rtt") as (a, b),
            nginx_proxy([a.port, b.port], tmp / "rtt") as proxy,
        ):
            direct = round_trips(f"ws://127.0.0.1:{a.port}/ws", args.echoes)
            proxied = round_trips(proxy.ws_url, args.echoes)
        out("\n| echo round trip | p50 | p99 |")
        out("|---|---|---|")
        for label, times in (("direct", direct), ("through nginx", proxied)):
            out(f"| {label} | {percentile(times, 50):.2f} ms | {percentile(times, 99):.2f} ms |")

        out("\n| failover run | killed replica's sessions end | new session: first | later |")
        out("|---|---|---|---|")
        for run in range(args.repeats):
            (tmp / f"failover{run}").mkdir()
            ended, first, later = failover(tmp / f"failover{run}")
            out(f"| {run + 1} | {ended:.0f} ms | {first:.0f} ms | {later:.0f} ms |")


if __name__ == "__main__":
    main()
