"""Graph loading and validation: every broken file gets its own located message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowvoice.graph.errors import GraphError
from flowvoice.graph.shipped import SHIPPED_DIR, is_graph_name, shipped_graphs
from flowvoice.graph.spec import load_graph

BAD = Path(__file__).parent / "data" / "bad_graphs"
BAD_FILES = sorted(BAD.glob("*.yaml"))

GOOD = """
name: ok
nodes:
  src: {type: test.tone, params: {frames: "${TONE_FRAMES:-7}"}}
  p: {type: test.passthrough}
  sink: {type: test.collect}
edges:
  - src.audio -> p.audio
  - {from: p.audio, to: sink.frames, buffer: 8, overflow: drop_oldest}
"""


def _expectations(path: Path) -> tuple[str, int | None]:
    text = path.read_text()
    expect = re.search(r"^# expect: (.+)$", text, re.M)
    line = re.search(r"^# line: (\d+)$", text, re.M)
    assert expect, f"{path.name} lacks an '# expect:' line"
    return expect.group(1), int(line.group(1)) if line else None


def test_corpus_is_large_enough():
    assert len(BAD_FILES) >= 15


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_graph_gives_its_specific_located_message(path: Path):
    expected, line = _expectations(path)
    with pytest.raises(GraphError) as info:
        load_graph(path, environ={})
    messages = [str(p) for p in info.value.problems]
    matching = [m for m in messages if expected in m]
    assert matching, f"expected {expected!r} in {messages}"
    assert matching[0].startswith(str(path))
    if line is not None:
        assert matching[0].startswith(f"{path}:{line}:"), matching[0]


def test_all_errors_are_collected_not_just_the_first():
    text = """
nodes:
  src: {type: test.tone, params: {frames: -1}}
  p: {type: test.passthru}
  sink: {type: test.collect}
edges:
  - src.audio -> sink.nope
"""
    with pytest.raises(GraphError) as info:
        load_graph("multi.yaml", text=text)
    joined = str(info.value)
    assert "frames" in joined
    assert "unknown node type 'test.passthru'" in joined
    assert "no input port 'nope'" in joined
    assert "required input 'frames' (Frame) is not connected" in joined
    assert len(info.value.problems) == 4


def test_good_graph_loads_with_defaults_interpolation_and_edge_forms():
    graph = load_graph("ok.yaml", text=GOOD, environ={})
    assert graph.name == "ok"
    assert graph.nodes["src"].params.frames == 7
    first, second = graph.edges
    assert (first.buffer, first.overflow) == (32, "block")
    assert (second.buffer, second.overflow) == (8, "drop_oldest")
    assert first.frame_type.__name__ == "AudioFrame"


def test_environment_variable_overrides_default():
    graph = load_graph("ok.yaml", text=GOOD, environ={"TONE_FRAMES": "3"})
    assert graph.nodes["src"].params.frames == 3


def test_set_overrides_are_typed_by_the_params_model():
    graph = load_graph(
        "ok.yaml",
        ["src.params.frames=12", "src.params.realtime=true", "server.port=9001"],
        environ={},
        text=GOOD,
    )
    assert graph.nodes["src"].params.frames == 12
    assert graph.nodes["src"].params.realtime is True
    assert graph.server.port == 9001


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nosuch.params.x=1", "no node named 'nosuch'"),
        ("src.params.frames=lots", "param 'frames': Input should be a valid integer"),
        ("src.params.frames", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_are_reported(override, message):
    with pytest.raises(GraphError) as info:
        load_graph("ok.yaml", [override], environ={}, text=GOOD)
    assert message in str(info.value)


def test_subclass_frame_may_feed_base_class_port():
    graph = load_graph(
        "sub.yaml",
        text="nodes:\n  t: {type: test.text}\n  c: {type: test.collect}\n"
        "edges:\n  - t.sentence -> c.frames\n",
    )
    assert graph.edges[0].frame_type.__name__ == "Sentence"


def test_shipped_graphs_validate():
    names = shipped_graphs()
    assert {"default", "light", "echo"} <= set(names)
    for name in names:
        assert load_graph(name).path == str(SHIPPED_DIR / f"{name}.yaml")


def test_repository_graphs_path_still_reaches_the_shipped_graphs():
    root = Path(__file__).resolve().parent.parent
    assert (root / "graphs" / "default.yaml").resolve() == SHIPPED_DIR / "default.yaml"
    assert load_graph(root / "graphs" / "default.yaml").name == "default"


def test_a_bare_name_is_a_shipped_graph_anything_else_a_path(tmp_path: Path, monkeypatch):
    assert is_graph_name("default")
    for path in ("graphs/default.yaml", "default.yaml", "x.yml", "./default", Path("default")):
        assert not is_graph_name(path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_text("nodes:\n  t: {type: test.text}\n")
    assert not is_graph_name("default"), "an existing file wins over the shipped name"
    assert load_graph("default").nodes.keys() == {"t"}


def test_unknown_graph_name_lists_the_shipped_ones():
    with pytest.raises(GraphError) as info:
        load_graph("no_such_graph")
    message = str(info.value)
    assert message.startswith("no_such_graph: file: no such file, and no shipped graph")
    assert "default, echo, light" in message


def test_edge_name_is_source_port_to_target_port():
    graph = load_graph(
        "edge.yaml",
        text="nodes:\n  t: {type: test.text}\n  c: {type: test.collect}\n"
        "edges:\n  - t.sentence -> c.frames\n",
    )
    assert graph.edges[0].name == "t.sentence->c.frames"


def test_defaults_stand_in_for_empty_variables_and_nest_as_in_compose():
    from flowvoice.graph.source import expand

    missing: list[str] = []
    env = {"EMPTY": "", "OLLAMA_MODEL": "qwen3:4b", "SET": "x"}

    def run(text: str) -> str:
        return expand(text, env, missing.append)

    # compose passes `VAR: ${VAR:-}` as an empty string: the graph's default still applies
    assert run("${EMPTY:-int8}") == "int8" and run("${EMPTY}") == ""
    assert run("${LLM_MODEL:-${OLLAMA_MODEL:-llama3.2:3b}}") == "qwen3:4b"
    assert run("${LLM_MODEL:-${NOPE:-llama3.2:3b}}") == "llama3.2:3b"
    assert run("${SET:-${UNSET}}") == "x" and missing == [], "an unused default is not read"
    assert run("a ${UNSET} b") == "a ${UNSET} b" and missing == ["UNSET"]
    assert run("$HOME ${ and ${SET:-open") == "$HOME ${ and ${SET:-open"
