"""Fuzzing the graph loader: any input gives a graph or located problems, never a crash.

Random structures and text mostly stop at the schema; mutations of the shipped graphs (a
renamed port, a swapped type, a back edge, a dropped edge, a bad param) pass it and reach the
semantic checks (node types, ports, port types, cycles, required inputs, params).
"""

from __future__ import annotations

import copy
import itertools
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from flowvoice.graph.errors import GraphError
from flowvoice.graph.registry import get_node_type, node_types
from flowvoice.graph.spec import GraphFile, load_graph

ROOT = Path(__file__).resolve().parents[1]

NAMES = st.sampled_from(["src", "p", "sink", "x", "1bad", ""])
PORTS = st.sampled_from(["audio", "frames", "sentence", "nope", ""])
TYPES = st.sampled_from(
    [
        "test.tone",
        "test.passthrough",
        "test.collect",
        "test.text",
        "nope.node",
        "",
        "text.sentences",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
)
PARAMS = st.dictionaries(
    st.sampled_from(["frames", "sample_rate", "x", "realtime"]), SCALARS, max_size=3
)
NODE = st.one_of(
    st.fixed_dictionaries({"type": TYPES}, optional={"params": st.one_of(PARAMS, SCALARS)}),
    SCALARS,
)
ENDPOINT = st.builds(lambda n, p: f"{n}.{p}" if p else n, NAMES, PORTS)
EDGE = st.one_of(
    st.builds(
        lambda a, b, arrow: f"{a} {arrow} {b}",
        ENDPOINT,
        ENDPOINT,
        st.sampled_from(["->", "=>", ""]),
    ),
    st.fixed_dictionaries(
        {"from": ENDPOINT, "to": ENDPOINT},
        optional={
            "buffer": SCALARS,
            "overflow": st.sampled_from(["block", "drop_oldest", "bad", 3]),
        },
    ),
    SCALARS,
)
GRAPH = st.fixed_dictionaries(
    {},
    optional={
        "name": SCALARS,
        "nodes": st.one_of(st.dictionaries(NAMES, NODE, max_size=4), SCALARS),
        "edges": st.one_of(st.lists(EDGE, max_size=5), SCALARS),
        "server": st.one_of(st.fixed_dictionaries({"port": SCALARS}), SCALARS),
        "extra": SCALARS,
    },
)


def check(text: str) -> None:
    try:
        load_graph("fuzz.yaml", text=text, environ={})
    except GraphError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert str(problem).startswith("fuzz.yaml")
            assert problem.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GRAPH)
def test_structured_graphs_never_crash_the_loader(graph):
    check(yaml.safe_dump(graph, sort_keys=False))


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("nodes:edges-> {}[]\n\t'\"#${}:-.abc12&*!|>%@`")), max_size=80
    )
)
def test_arbitrary_text_never_crashes_the_loader(text):
    check(text)


# -- mutating valid graphs, so that most examples reach the semantic checks -------------------

VALID = [ROOT / "graphs" / name for name in ("default.yaml", "light.yaml", "echo.yaml")]
#: A message fragment per semantic check, to see that the mutations reach each of them.
SEMANTIC_CHECKS = {
    "unknown node type": "unknown node type",
    "unknown port": "has no input port",
    "unknown output port": "has no output port",
    "port type mismatch": "port type mismatch",
    "cycle": "cycle",
    "unconnected required input": "is not connected",
    "bad param": "param '",
    "unknown node": "no node named",
    "duplicate edge": "duplicate edge",
}


def _edges(graph: dict) -> list[tuple[str, str, str, str]]:
    """(src, src_port, dst, dst_port) of each edge, whichever form it is written in."""
    out = []
    for edge in graph["edges"]:
        text = edge if isinstance(edge, str) else f"{edge['from']} -> {edge['to']}"
        left, right = (part.strip() for part in text.split("->"))
        out.append((*left.split("."), *right.split(".")))
    return out


def _set_edge(graph: dict, index: int, src: str, sport: str, dst: str, dport: str) -> None:
    edge = graph["edges"][index]
    if isinstance(edge, str):
        graph["edges"][index] = f"{src}.{sport} -> {dst}.{dport}"
    else:
        edge["from"], edge["to"] = f"{src}.{sport}", f"{dst}.{dport}"


def _ports(type_name: str, direction: str) -> dict[str, type]:
    """Frame type of each input or output port of ``type_name`` (none when unknown)."""
    node_type = get_node_type(type_name)
    ports = getattr(node_type, direction) if node_type is not None else {}
    return {name: port.frame_type for name, port in ports.items()}


def rename_port(graph: dict, rng: random.Random) -> str:
    index = rng.randrange(len(graph["edges"]))
    src, sport, dst, dport = _edges(graph)[index]
    if rng.random() < 0.5:
        dport = rng.choice([dport + "s", "audio", "text", "events", "vad", "prompt"])
    else:
        sport = rng.choice([sport + "s", "audio", "text", "events", "transcript", "sentence"])
    _set_edge(graph, index, src, sport, dst, dport)
    return f"edge {index} ports -> {sport}, {dport}"


def swap_type(graph: dict, rng: random.Random) -> str:
    name = rng.choice(list(graph["nodes"]))
    kind = rng.choice(sorted(node_types()) + ["tts.pipr", "nope.node"])
    graph["nodes"][name] = {"type": kind}
    return f"node {name} -> {kind}"


def add_back_edge(graph: dict, rng: random.Random) -> str:
    """An edge from a node to one listed before it, with fitting port types where one exists
    (a fitting edge reaches the cycle check)."""
    names = list(graph["nodes"])
    fitting = [
        f"{src}.{out} -> {dst}.{into}"
        for later, src in enumerate(names)
        for dst in names[:later]
        for (out, out_type), (into, in_type) in itertools.product(
            _ports(graph["nodes"][src]["type"], "outputs").items(),
            _ports(graph["nodes"][dst]["type"], "inputs").items(),
        )
        if issubclass(out_type, in_type)
    ]
    if not fitting:
        return "no back edge (no ports fit)"
    edge = rng.choice(fitting)
    graph["edges"].append(edge)
    return f"back edge {edge}"


def drop_edge(graph: dict, rng: random.Random) -> str:
    edge = graph["edges"].pop(rng.randrange(len(graph["edges"])))
    return f"dropped edge {edge}"


def duplicate_edge(graph: dict, rng: random.Random) -> str:
    edge = rng.choice(graph["edges"])
    graph["edges"].append(copy.deepcopy(edge))
    return f"duplicated edge {edge}"


def bad_param(graph: dict, rng: random.Random) -> str:
    name = rng.choice(list(graph["nodes"]))
    node = graph["nodes"][name]
    node_type = get_node_type(node["type"])
    fields = list(node_type.Params.model_fields) if node_type is not None else []
    key = rng.choice(fields) if fields and rng.random() < 0.8 else "no_such_param"
    value = rng.choice(["loud", -1, [1, 2], {"a": 1}, 10**9, None, 0.5, True])
    node.setdefault("params", {})[key] = value
    return f"node {name} param {key} = {value!r}"


def rename_node(graph: dict, rng: random.Random) -> str:
    name = rng.choice(list(graph["nodes"]))
    new = rng.choice([name + "2", "1" + name, "mic", "tts"])
    graph["nodes"][new] = graph["nodes"].pop(name)
    return f"node {name} renamed {new}"


MUTATIONS = [
    rename_port,
    swap_type,
    add_back_edge,
    drop_edge,
    duplicate_edge,
    bad_param,
    rename_node,
]


def mutant(rng: random.Random) -> tuple[str, list[str]]:
    """A valid graph's YAML with 1-3 mutations, and what they were."""
    graph = yaml.safe_load(rng.choice(VALID).read_text())
    graph["server"] = {}  # no ${VAR} interpolation to trip over
    done = []
    for mutate in rng.choices(MUTATIONS, k=rng.randint(1, 3)):
        if graph["edges"] and len(graph["nodes"]) >= 2:
            done.append(mutate(graph, rng))
    return yaml.safe_dump(graph, sort_keys=False), done


def test_mutated_valid_graphs_reach_the_semantic_checks_with_located_errors(capsys) -> None:
    rng = random.Random(16)
    examples, past_schema, valid = 500, 0, 0
    reached: Counter[str] = Counter()
    for _ in range(examples):
        text, done = mutant(rng)
        try:
            GraphFile.model_validate(yaml.safe_load(text))
            past_schema += 1
        except ValidationError:
            pass
        try:
            load_graph("fuzz.yaml", text=text, environ={})
            valid += 1
            continue
        except GraphError as exc:
            problems = exc.problems
        except Exception as exc:  # a traceback would reach the user
            pytest.fail(f"{type(exc).__name__}: {exc} after mutations {done}:\n{text}")
        assert problems, done
        for problem in problems:
            assert str(problem).startswith("fuzz.yaml:"), (problem, done)
            assert problem.line is not None and problem.where, (problem, done)
            for check, fragment in SEMANTIC_CHECKS.items():
                if fragment in f"{problem.where}: {problem.message}":
                    reached[check] += 1
    share = past_schema / examples
    with capsys.disabled():
        print(
            f"\nmutation fuzzer: {examples} graphs, {share:.0%} past the schema to the semantic "
            f"checks, {valid} still valid; problems by check: {dict(reached)}"
        )
    assert share >= 0.6
    assert set(reached) == set(SEMANTIC_CHECKS), set(SEMANTIC_CHECKS) - set(reached)
