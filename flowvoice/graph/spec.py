"""Graph files -> a validated :class:`LoadedGraph`, checked before anything loads.

Checks, all collected before reporting: file schema, unknown node types (with close
matches), params (the node's pydantic model), edge syntax, unknown nodes and ports, port
type mismatches, duplicate edges, required inputs left unconnected, and cycles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flowvoice.frames import Frame
from flowvoice.graph.errors import GraphError, Problem
from flowvoice.graph.registry import close_matches, get_node_type
from flowvoice.graph.shipped import resolve_graph
from flowvoice.graph.source import GraphSource, apply_overrides, interpolate, read_graph_source
from flowvoice.node import Node, NodeParams

OverflowName = Literal["block", "drop_oldest", "drop_newest"]
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ENDPOINT = re.compile(rf"^\s*({_NAME})\.({_NAME})\s*$")
_SHORT_EDGE = re.compile(r"^(.*?)->(.*)$")


class ServerSpec(BaseModel):
    """Where ``flowvoice run`` serves a graph that has WebSocket nodes."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Reliability settings (docs/design-notes.md, "Faults"); 0 turns a timeout off.
    ping_interval_s: float = Field(20.0, ge=0, le=3600, description="WebSocket ping period.")
    ping_timeout_s: float = Field(20.0, ge=0, le=3600, description="Wait for a ping's pong.")
    idle_timeout_s: float = Field(60.0, ge=0, le=86400, description="No client message.")
    write_timeout_s: float = Field(30.0, ge=0, le=3600, description="One send to the client.")
    engine_timeout_s: float = Field(
        20.0, gt=0, le=3600, description="Shared engine call without progress: hung."
    )
    max_abandoned_threads: int = Field(
        3, ge=1, le=1000, description="Threads stuck in hung engines before the server exits."
    )


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    stall_timeout_s: float | None = Field(None, gt=0, le=3600)


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    buffer: int = Field(32, ge=1, le=1_000_000)
    overflow: OverflowName = "block"


class GraphFile(BaseModel):
    """The YAML schema of a graph file."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    description: str = ""
    server: ServerSpec = Field(default_factory=ServerSpec)
    nodes: dict[str, NodeSpec]
    edges: list[str | EdgeSpec] = Field(default_factory=list)


@dataclass
class LoadedNode:
    name: str
    type_name: str
    node_type: type[Node]
    params: NodeParams
    line: int | None
    #: A frame whose processing emits nothing for this long fails the session (None: no limit).
    stall_timeout_s: float | None = None


@dataclass
class LoadedEdge:
    source: str
    source_port: str
    target: str
    target_port: str
    buffer: int
    overflow: OverflowName
    frame_type: type[Frame]
    line: int | None

    @property
    def name(self) -> str:
        """``source.port->target.port``: how channels, metrics and drop counts name the edge."""
        return f"{self.source}.{self.source_port}->{self.target}.{self.target_port}"


@dataclass
class LoadedGraph:
    """A graph that passed validation: node classes resolved, params typed."""

    path: str
    name: str
    description: str
    server: ServerSpec
    nodes: dict[str, LoadedNode]
    edges: list[LoadedEdge]

    def has_node_type(self, prefix: str) -> bool:
        return any(n.type_name.startswith(prefix) for n in self.nodes.values())


def load_graph(
    path: str | Path,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
    text: str | None = None,
) -> LoadedGraph:
    """Read, interpolate, override and validate a graph file; raise :class:`GraphError`.

    ``path`` may be a shipped graph's bare name (``default``): see :mod:`flowvoice.graph.shipped`.
    """
    if text is None:
        path = resolve_graph(path)
    source = read_graph_source(path, text)
    problems = apply_overrides(source, overrides or [])
    problems += interpolate(source, environ)
    if problems:
        raise GraphError(problems)
    graph, problems = _validate(source)
    if problems or graph is None:
        raise GraphError(problems)
    return graph


def _pydantic_problems(
    source: GraphSource, exc: ValidationError, base: tuple, where: str
) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("str", "EdgeSpec")))
        field = ".".join(map(str, loc))
        label = f"{where} {field}".strip() if where else field or "graph"
        out.append(source.problem((*base, *loc), label, _pydantic_message(err)))
    return out


def _pydantic_message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
    return f"{err['msg']}{shown}"


def _validate(source: GraphSource) -> tuple[LoadedGraph | None, list[Problem]]:
    data = source.data
    if not isinstance(data, dict):
        return None, [source.problem((), "graph", "expected a mapping with 'nodes' and 'edges'")]
    try:
        spec = GraphFile.model_validate(data)
    except ValidationError as exc:
        return None, _pydantic_problems(source, exc, (), "")
    problems: list[Problem] = []
    nodes = _load_nodes(source, spec, problems)
    wired: set[tuple[str, str]] = set()
    edges = _load_edges(source, spec, nodes, problems, wired)
    _check_required_inputs(source, nodes, wired, problems)
    _check_cycles(source, spec, edges, problems)
    if problems:
        return None, problems
    graph = LoadedGraph(
        path=source.path,
        name=spec.name or Path(source.path).stem,
        description=spec.description,
        server=spec.server,
        nodes=nodes,
        edges=edges,
    )
    return graph, []


def _load_nodes(
    source: GraphSource, spec: GraphFile, problems: list[Problem]
) -> dict[str, LoadedNode]:
    nodes: dict[str, LoadedNode] = {}
    if not spec.nodes:
        problems.append(source.problem(("nodes",), "nodes", "a graph needs at least one node"))
    for name, node_spec in spec.nodes.items():
        loc = ("nodes", name)
        where = f"node '{name}'"
        if not re.fullmatch(_NAME, name):
            problems.append(
                source.problem(loc, where, "node names must be identifiers (letters, digits, _)")
            )
            continue
        node_type = get_node_type(node_spec.type)
        if node_type is None:
            matches = close_matches(node_spec.type)
            hint = (
                f"; did you mean {' or '.join(matches)}?" if matches else "; see `flowvoice nodes`"
            )
            problems.append(
                source.problem((*loc, "type"), where, f"unknown node type '{node_spec.type}'{hint}")
            )
            continue
        try:
            params = node_type.Params.model_validate(node_spec.params)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(map(str, err["loc"]))
                problems.append(
                    source.problem(
                        (*loc, "params", *err["loc"]),
                        f"{where} ({node_spec.type}) param '{key}'",
                        _pydantic_message(err),
                    )
                )
            continue
        nodes[name] = LoadedNode(
            name, node_spec.type, node_type, params, source.line(loc), node_spec.stall_timeout_s
        )
    return nodes


def _parse_endpoint(text: str) -> tuple[str, str] | None:
    match = _ENDPOINT.match(text)
    return (match.group(1), match.group(2)) if match else None


def _load_edges(
    source: GraphSource,
    spec: GraphFile,
    nodes: dict[str, LoadedNode],
    problems: list[Problem],
    wired: set[tuple[str, str]],
) -> list[LoadedEdge]:
    """Valid edges; ``wired`` receives every input an edge targets, valid or not."""
    edges: list[LoadedEdge] = []
    seen: set[tuple[str, str, str, str]] = set()
    for index, item in enumerate(spec.edges):
        loc = ("edges", index)
        if isinstance(item, str):
            match = _SHORT_EDGE.match(item)
            if not match:
                problems.append(
                    source.problem(loc, f"edge '{item}'", "expected 'node.port -> node.port'")
                )
                continue
            edge = EdgeSpec.model_validate({"from": match.group(1), "to": match.group(2)})
        else:
            edge = item
        label = f"edge '{edge.source.strip()} -> {edge.target.strip()}'"
        ends = _parse_endpoint(edge.source), _parse_endpoint(edge.target)
        if None in ends:
            problems.append(source.problem(loc, label, "each end must be written node.port"))
            continue
        (src, src_port), (dst, dst_port) = ends  # type: ignore[misc]
        wired.add((dst, dst_port))
        out_type = _port_type(source, loc, label, nodes, spec, src, src_port, "output", problems)
        in_type = _port_type(source, loc, label, nodes, spec, dst, dst_port, "input", problems)
        if out_type is None or in_type is None:
            continue
        if not issubclass(out_type, in_type):
            problems.append(
                source.problem(
                    loc,
                    label,
                    f"port type mismatch: {src}.{src_port} is {out_type.__name__}, "
                    f"{dst}.{dst_port} wants {in_type.__name__}",
                )
            )
            continue
        key = (src, src_port, dst, dst_port)
        if key in seen:
            problems.append(
                source.problem(loc, label, "duplicate edge (frames would arrive twice)")
            )
            continue
        seen.add(key)
        edges.append(
            LoadedEdge(
                src, src_port, dst, dst_port, edge.buffer, edge.overflow, out_type, source.line(loc)
            )
        )
    return edges


def _port_type(
    source: GraphSource,
    loc: tuple,
    label: str,
    nodes: dict[str, LoadedNode],
    spec: GraphFile,
    node: str,
    port: str,
    direction: Literal["input", "output"],
    problems: list[Problem],
) -> type[Frame] | None:
    if node not in spec.nodes:
        known = ", ".join(spec.nodes) or "none"
        problems.append(source.problem(loc, label, f"no node named '{node}' (nodes: {known})"))
        return None
    loaded = nodes.get(node)
    if loaded is None:  # the node itself is invalid and already reported
        return None
    ports = loaded.node_type.inputs if direction == "input" else loaded.node_type.outputs
    if port not in ports:
        available = ", ".join(ports) or "none"
        problems.append(
            source.problem(
                loc,
                label,
                f"node '{node}' ({loaded.type_name}) has no {direction} port '{port}'; "
                f"its {direction}s are: {available}",
            )
        )
        return None
    return ports[port].frame_type


def _check_required_inputs(
    source: GraphSource,
    nodes: dict[str, LoadedNode],
    wired: set[tuple[str, str]],
    problems: list[Problem],
) -> None:
    for name, node in nodes.items():
        for port, spec in node.node_type.inputs.items():
            if spec.required and (name, port) not in wired:
                problems.append(
                    source.problem(
                        ("nodes", name),
                        f"node '{name}' ({node.type_name})",
                        f"required input '{port}' ({spec.frame_type.__name__}) is not connected",
                    )
                )


def _check_cycles(
    source: GraphSource, spec: GraphFile, edges: list[LoadedEdge], problems: list[Problem]
) -> None:
    dag = nx.DiGraph()
    dag.add_nodes_from(spec.nodes)
    for edge in edges:
        dag.add_edge(edge.source, edge.target)
    try:
        cycle = nx.find_cycle(dag)
    except nx.NetworkXNoCycle:
        return
    path = " -> ".join([a for a, _ in cycle] + [cycle[0][0]])
    first = next(e for e in edges if (e.source, e.target) == cycle[0])
    problems.append(
        Problem(source.path, first.line, "edges", f"cycle: {path} (a graph must be a DAG)")
    )
