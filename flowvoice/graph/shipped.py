"""The graphs that ship inside the package, and the rule that turns a graph name into a file.

``flowvoice run default`` runs ``flowvoice/graphs/default.yaml`` from any folder: a *bare name*
(no path separator, no ``.yaml``/``.yml`` suffix, and not an existing file) names a shipped
graph. Anything else is a path and is read as given.
"""

from __future__ import annotations

import os
from pathlib import Path

from flowvoice.graph.errors import GraphError, Problem

#: ``flowvoice/graphs``: package data, so a plain ``pip install`` has them.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "graphs"
_SUFFIXES = (".yaml", ".yml")


def shipped_graphs() -> list[str]:
    """Names of the shipped graphs, sorted (``default``, ``echo``, ...)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def is_graph_name(ref: str | Path) -> bool:
    """Whether ``ref`` is a bare graph name rather than a path (a ``Path`` is always a path)."""
    if isinstance(ref, Path):
        return False
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        bool(ref)
        and not any(sep in ref for sep in seps)
        and not ref.lower().endswith(_SUFFIXES)
        and not os.path.exists(ref)
    )


def resolve_graph(ref: str | Path) -> str | Path:
    """The file ``ref`` refers to: a shipped graph's path for a bare name, else ``ref`` itself.

    An unknown bare name raises :class:`GraphError` listing the shipped names.
    """
    if not is_graph_name(ref):
        return ref
    path = SHIPPED_DIR / f"{ref}.yaml"
    if path.is_file():
        return path
    names = ", ".join(shipped_graphs()) or "none"
    raise GraphError(
        [
            Problem(
                str(ref),
                None,
                "file",
                f"no such file, and no shipped graph of that name; expected a graph YAML "
                f"file or one of the shipped graphs: {names}",
            )
        ]
    )
