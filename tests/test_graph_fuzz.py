"""Fuzzing the graph loader: any input gives a graph or located problems, never a crash."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowvoice.graph.errors import GraphError
from flowvoice.graph.spec import load_graph

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
