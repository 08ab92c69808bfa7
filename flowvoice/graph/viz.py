"""Render a graph: Graphviz dot and Mermaid text directly, SVG/PNG through Graphviz's ``dot``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from flowvoice.graph.spec import LoadedEdge, LoadedGraph

FORMATS = (".dot", ".gv", ".mmd", ".svg", ".png")


class VizError(RuntimeError):
    """The requested rendering is impossible here (unknown format, no Graphviz)."""


def _edge_label(edge: LoadedEdge) -> str:
    label = f"{edge.frame_type.__name__} [{edge.buffer}]"
    return label if edge.overflow == "block" else f"{label} {edge.overflow}"


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(graph: LoadedGraph) -> str:
    """Graphviz source: nodes labelled with name and type, edges with ports, frame type, buffer."""
    lines = [
        f"digraph {_quote(graph.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for name, node in graph.nodes.items():
        label = f"{name}\n{node.type_name}"
        lines.append(f"  {_quote(name)} [label={_quote(label)}];")
    for edge in graph.edges:
        label = f"{edge.source_port} -> {edge.target_port}\n{_edge_label(edge)}"
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} [label={_quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: LoadedGraph) -> str:
    """Mermaid flowchart source with the same labels as :func:`to_dot`."""
    lines = ["flowchart LR"]
    for name, node in graph.nodes.items():
        lines.append(f'  {name}["{name}<br/><i>{node.type_name}</i>"]')
    for edge in graph.edges:
        label = f"{edge.source_port} → {edge.target_port}<br/>{_edge_label(edge)}"
        lines.append(f'  {edge.source} -->|"{label}"| {edge.target}')
    return "\n".join(lines) + "\n"


def render(graph: LoadedGraph, output: str | Path) -> Path:
    """Write ``graph`` to ``output``; the suffix picks the format."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix in (".dot", ".gv"):
        path.write_text(to_dot(graph), encoding="utf-8")
    elif suffix == ".mmd":
        path.write_text(to_mermaid(graph), encoding="utf-8")
    elif suffix in (".svg", ".png"):
        dot = shutil.which("dot")
        if dot is None:
            raise VizError(
                f"writing {suffix} needs Graphviz's `dot` program, which is not installed "
                "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz); "
                "or write .dot / .mmd, which need nothing"
            )
        result = subprocess.run(
            [dot, f"-T{suffix[1:]}", "-o", str(path)],
            input=to_dot(graph).encode(),
            capture_output=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise VizError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    else:
        raise VizError(
            f"unknown output format {suffix or '(none)'}; use one of {', '.join(FORMATS)}"
        )
    return path
