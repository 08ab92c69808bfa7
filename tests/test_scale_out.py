"""Scale-out: Debian's nginx with deploy/nginx.conf in front of two real flowvoice processes.

The proxy configuration is the shipped one; only its `# replicas` and `# listen` lines are
rewritten (127.0.0.1 ports) and temp paths added under a tmp prefix. Sessions spread over
both replicas, a replica dies while sessions run on both, its sessions end, the others go on,
new sessions land on the survivor. Skipped when nginx is not installed
(``apt-get install -y --no-install-recommends nginx``).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from reliability import (
    NGINX,
    NGINX_CONF,
    ROOT,
    Proxy,
    clients,
    flowvoice_processes,
    http_get,
    nginx_proxy,
    raw_websocket,
    scrape,
    wait_until,
)

from flowvoice.testing.server_process import ServerProcess

COMPOSE_SCALE = ROOT / "deploy" / "compose.scale.yml"
TOKEN = "scale-out-secret-7f3a"

needs_nginx = pytest.mark.skipif(
    NGINX is None,
    reason="nginx is not installed: apt-get install -y --no-install-recommends nginx",
)


def url(proxy: Proxy) -> str:
    return f"{proxy.ws_url}?token={TOKEN}"


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[list[ServerProcess], Proxy]]:
    """Two echo-graph replicas requiring a token, behind nginx."""
    with (
        flowvoice_processes(2, tmp_path, env={"FLOWVOICE_TOKEN": TOKEN}) as replicas,
        nginx_proxy([r.port for r in replicas], tmp_path) as proxy,
    ):
        yield replicas, proxy


def active(replicas: list[ServerProcess]) -> list[float]:
    return [scrape(r.port, "sessions_active") for r in replicas]


@needs_nginx
def test_sessions_spread_and_survive_a_replica_crash(deployment, capsys) -> None:
    (a, b), proxy = deployment
    with clients(url(proxy), 4) as first:
        for i, client in enumerate(first):
            client.echo(i + 1)
        assert active([a, b]) == [2, 2], "least_conn spreads sessions evenly"

        killed_at = time.monotonic()
        a.kill(signal.SIGKILL)
        wait_until(lambda: sum(c.closed.is_set() for c in first) >= 2, 10, "A's sessions to end")
        time.sleep(0.5)  # nothing else may close meanwhile
        dead = [c for c in first if c.closed.is_set()]
        alive = [c for c in first if not c.closed.is_set()]
        assert len(dead) == 2 and len(alive) == 2
        assert {c.wait_closed() for c in dead} == {1006}, "cut without a close frame"
        ended_after = max(c.closed_at for c in dead if c.closed_at) - killed_at
        for i, client in enumerate(alive):
            client.echo(100 + i)  # B's sessions go on

        started = time.monotonic()
        with clients(url(proxy), 4) as second:
            for i, client in enumerate(second):
                client.echo(200 + i)
        reconnect_s = (time.monotonic() - started) / 4
        assert scrape(b.port, "sessions_total") == 6, "every new session landed on B"
        assert http_get(proxy.port, "/health")[0] == 200

    access = proxy.access_log()
    assert access.count('GET /ws HTTP/1.1" 101') == 8, access
    assert TOKEN not in access, "the access log leaves the query string (the token) out"
    # nginx's error log quotes the request line, query string included, of a handshake whose
    # upstream failed; it cannot be configured away (docs/scaling.md, "Secrets in logs").
    assert "connect() failed" in proxy.error_log()
    with capsys.disabled():
        print(
            f"\nreplica crash: its sessions ended {ended_after * 1000:.0f} ms after SIGKILL; "
            f"new session through nginx (connect + first echo) {reconnect_s * 1000:.0f} ms"
        )


@needs_nginx
def test_replica_stopped_gracefully_closes_its_sessions_with_1012(deployment) -> None:
    (a, b), proxy = deployment
    with clients(url(proxy), 2) as sessions:
        for i, client in enumerate(sessions):
            client.echo(i + 1)
        assert active([a, b]) == [1, 1]
        # uvicorn shuts down gracefully, then re-raises the signal: the exit status says so
        assert a.kill(signal.SIGTERM) == -signal.SIGTERM
        wait_until(lambda: any(c.closed.is_set() for c in sessions), 10, "A's session to end")
        (gone,) = [c for c in sessions if c.closed.is_set()]
        (kept,) = [c for c in sessions if not c.closed.is_set()]
        assert gone.wait_closed() == 1012, "service restart: the browser reconnects"
        kept.echo(10)
    assert re.search(r"session \d+ ended", a.output()), "the session ended cleanly"


@needs_nginx
def test_proxy_passes_host_and_origin_and_hides_metrics(deployment) -> None:
    replicas, proxy = deployment
    assert http_get(proxy.port, "/metrics")[0] == 404, "scraped per replica, not in public"
    assert http_get(replicas[0].port, "/metrics")[0] == 200
    assert http_get(proxy.port, "/")[0] == 200, "the browser client"
    site = f"voice.example:{proxy.port}"
    path = f"/ws?token={TOKEN}"
    cases = {
        f"http://{site}": 101,  # same origin as the Host the browser used
        "http://evil.example": 403,
        f"http://voice.example:{proxy.port + 1}": 403,
    }
    for origin, expected in cases.items():
        sock, status = raw_websocket(proxy.port, path, {"Host": site, "Origin": origin})
        sock.close()
        assert status == expected, origin
    sock, status = raw_websocket(proxy.port, "/ws?token=wrong", {"Host": site})
    sock.close()
    assert status == 403


def test_measure_scaling_stops_its_servers_on_sigterm() -> None:
    script = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy" / "measure_scaling.py"), "--echoes", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers: list[psutil.Process] = []
    try:
        children = psutil.Process(script.pid).children
        wait_until(lambda: children(recursive=True), 30, "measure_scaling.py to start a server")
        time.sleep(1)  # well into its first measurement
        servers = children(recursive=True)
        script.send_signal(signal.SIGTERM)
        assert script.wait(30) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(servers, timeout=5)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    finally:
        script.kill()
        script.wait(10)
        for server in servers:
            if server.is_running():
                server.kill()


def test_compose_scale_override_resolves() -> None:
    from test_deploy import COMPOSE, compose_config

    services = compose_config(COMPOSE, COMPOSE_SCALE)["services"]
    assert services["flowvoice"]["profiles"] == ["single"], "the single server steps aside"
    replica, proxy = services["replica"], services["proxy"]
    assert "ports" not in replica, "replicas are reached through the proxy only"
    assert replica["deploy"]["replicas"] >= 2
    assert replica["command"] == ["run", "graphs/shared_llm.yaml"]
    assert replica["environment"]["LLM_BASE_URL"] == "http://ollama:11434/v1"
    assert proxy["depends_on"]["replica"]["condition"] == "service_healthy"
    (mount,) = proxy["volumes"]
    # compose v1 prints "source:target:mode", v2 a mapping
    source, target = (
        (mount["source"], mount["target"]) if isinstance(mount, dict) else mount.split(":")[:2]
    )
    assert (Path(source).resolve(), target) == (NGINX_CONF, "/etc/nginx/nginx.conf")
    assert "127.0.0.1" in str(proxy["ports"][0])
    upstream = re.search(r"server (\S+):(\d+) .*# replicas", NGINX_CONF.read_text())
    assert upstream and upstream.groups() == ("replica", "8000")
    graph = yaml.safe_load((ROOT / "graphs" / "shared_llm.yaml").read_text())
    assert graph["nodes"]["llm"]["type"] == "llm.openai"
