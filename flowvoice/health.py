"""The server's health as its shared engines see it: ``/health``, ``/metrics`` and the exit.

``ok``: every engine answers. ``degraded`` (still HTTP 200: new sessions work): an engine hung
and is reloaded by the next call that needs it. ``unhealthy`` (HTTP 503): the process cannot
recover (too many threads stuck in hung engines, or an engine that cannot be reloaded hung);
``flowvoice run`` then exits with :data:`EXIT_ENGINE_DOWN` for its supervisor to restart it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio

from flowvoice.graph.spec import ServerSpec
from flowvoice.prometheus import escape_label
from flowvoice.runtime import engine
from flowvoice.runtime.threads import abandoned_threads

log = logging.getLogger("flowvoice.health")

#: Exit status of ``flowvoice run`` when its engines cannot recover in the process.
EXIT_ENGINE_DOWN = 3
#: How often the server looks for an unrecoverable engine.
WATCH_INTERVAL_S = 0.5


def apply_engine_settings(server: ServerSpec) -> None:
    """Use the ``server`` block's engine deadline and thread cap for this process."""
    engine.settings.timeout_s = server.engine_timeout_s
    engine.settings.max_abandoned_threads = server.max_abandoned_threads


def health() -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body fields) of ``/health``."""
    fatal = engine.fatal_reason()
    engines = engine.engine_report()
    if fatal:
        status, code = "unhealthy", 503
    elif any(not e["healthy"] for e in engines):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    body: dict[str, Any] = {
        "status": status,
        "engines": engines,
        "abandoned_threads": abandoned_threads(),
    }
    if fatal:
        body["reason"] = fatal
    return code, body


def engine_metrics() -> str:
    """The engines' Prometheus series (healthy gauge, hangs, reloads, stuck threads)."""
    out: list[str] = []
    series = (
        ("engine_healthy", "gauge", "1 while the shared engine answers, 0 once it hung."),
        ("engine_hangs_total", "counter", "Calls that hung in the shared engine."),
        ("engine_reloads_total", "counter", "Reloads of the shared engine after a hang."),
    )
    engines = engine.engine_report()
    for name, kind, doc in series:
        out += [f"# HELP flowvoice_{name} {doc}", f"# TYPE flowvoice_{name} {kind}"]
        field = {"engine_healthy": "healthy", "engine_hangs_total": "hangs"}.get(name, "reloads")
        for e in engines:
            label = escape_label(e["engine"])
            out.append(f'flowvoice_{name}{{engine="{label}"}} {int(e[field])}')
    out += [
        "# HELP flowvoice_abandoned_threads Worker threads stuck in hung engine calls.",
        "# TYPE flowvoice_abandoned_threads gauge",
        f"flowvoice_abandoned_threads {abandoned_threads()}",
    ]
    return "\n".join(out) + "\n"


async def watch_engines(on_fatal: Callable[[str], None]) -> None:
    """Call ``on_fatal(reason)`` once the engines cannot recover in this process, then return."""
    while True:
        reason = engine.fatal_reason()
        if reason:
            log.error("shared engines cannot recover: %s; exiting for a restart", reason)
            on_fatal(reason)
            return
        await anyio.sleep(WATCH_INTERVAL_S)
