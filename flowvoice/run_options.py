"""``flowvoice run`` options for the reliability settings of the graph's ``server`` block.

Each option overrides its key of the block (docs/design-notes.md, "Faults"); values are
checked by the block's own schema, so an option and a YAML key accept the same values.
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from flowvoice.graph.spec import LoadedGraph, ServerSpec

#: (option, server key, type, help)
OPTIONS: list[tuple[str, str, type, str]] = [
    ("--ping-interval", "ping_interval_s", float, "seconds between WebSocket pings; 0: none"),
    ("--ping-timeout", "ping_timeout_s", float, "seconds a ping may wait for its pong; 0: none"),
    ("--idle-timeout", "idle_timeout_s", float, "close a client silent this long; 0: never"),
    (
        "--write-timeout",
        "write_timeout_s",
        float,
        "close a client that takes no data this long; 0: never",
    ),
    (
        "--engine-timeout",
        "engine_timeout_s",
        float,
        "a shared engine call without progress this long has hung",
    ),
    (
        "--max-abandoned-threads",
        "max_abandoned_threads",
        int,
        "threads stuck in hung engines before the server exits (status 3) for a restart",
    ),
]


def add_server_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reliability (override the graph's server block)")
    for option, key, kind, text in OPTIONS:
        default = ServerSpec.model_fields[key].default
        group.add_argument(
            option, dest=key, type=kind, metavar="N", help=f"{text} (default: {default:g})"
        )


def apply_server_options(args: argparse.Namespace, graph: LoadedGraph) -> None:
    """Put the given options into ``graph.server``; ValueError names a bad one."""
    given = {key: getattr(args, key) for _, key, _, _ in OPTIONS if getattr(args, key) is not None}
    if not given:
        return
    try:
        graph.server = ServerSpec.model_validate({**graph.server.model_dump(), **given})
    except ValidationError as exc:
        error = exc.errors()[0]
        option = next(o for o, key, _, _ in OPTIONS if key == error["loc"][0])
        raise ValueError(f"{option} {error['input']}: {error['msg']}") from None
