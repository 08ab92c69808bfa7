"""The CLI as a user runs it: a real subprocess, exit codes, no tracebacks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BAD = Path(__file__).parent / "data" / "bad_graphs"
TONE_GRAPH = """\
name: tone
nodes:
  src: {type: test.tone, params: {frames: 5}}
  p: {type: test.passthrough}
  sink: {type: audio.file_sink, params: {path: "${OUT}"}}
edges:
  - src.audio -> p.audio
  - {from: p.audio, to: sink.audio, buffer: 8, overflow: drop_newest}
"""


#: ``python -m flowvoice`` with the test.* nodes registered first (the test graphs use them).
WITH_TEST_NODES = (
    "import sys; from flowvoice.testing import register_nodes; register_nodes(); "
    "from flowvoice.cli import main; sys.exit(main())"
)


def flowvoice(
    *args: str, env: dict[str, str] | None = None, test_nodes: bool = False
) -> subprocess.CompletedProcess[str]:
    entry = ["-c", WITH_TEST_NODES] if test_nodes else ["-m", "flowvoice"]
    return subprocess.run(
        [sys.executable, *entry, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def tone_graph(tmp_path: Path) -> Path:
    path = tmp_path / "tone.yaml"
    path.write_text(TONE_GRAPH)
    return path


def test_validate_ok(tone_graph: Path):
    result = flowvoice(
        "validate",
        str(tone_graph),
        "--set",
        f"sink.params.path={tone_graph}.wav",
        test_nodes=True,
    )
    assert result.returncode == 0, result.stderr
    assert "OK (3 nodes, 2 edges)" in result.stdout


def test_validate_bad_graph_exits_2_with_located_errors_and_no_traceback():
    path = BAD / "type_mismatch.yaml"
    result = flowvoice("validate", str(path), test_nodes=True)
    assert result.returncode == 2
    assert f"{path}:8: edge 'src.sentence -> p.audio': port type mismatch" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_every_file(tone_graph: Path):
    result = flowvoice(
        "validate",
        str(BAD / "cycle.yaml"),
        str(BAD / "unknown_type.yaml"),
        str(tone_graph),
        test_nodes=True,
    )
    assert result.returncode == 2
    assert "cycle: a -> b -> a" in result.stderr
    assert "did you mean test.passthrough" in result.stderr
    assert "environment variable OUT is not set" in result.stderr


def test_missing_file_is_a_clear_error():
    result = flowvoice("validate", "no/such/graph.yaml")
    assert result.returncode == 2
    assert "no/such/graph.yaml: file: cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_nodes_lists_types_and_describes_one():
    listing = flowvoice("nodes")
    assert listing.returncode == 0
    for name in ("audio.file_source", "audio.file_sink", "audio.resample", "text.sentences"):
        assert re.search(rf"^{re.escape(name)}\s+\S", listing.stdout, re.M), name
    detail = flowvoice("nodes", "audio.file_source")
    assert detail.returncode == 0
    assert "Outputs:\n  audio: AudioFrame" in detail.stdout
    assert "realtime: bool = True" in detail.stdout
    assert "Pace frames in real time" in detail.stdout


def test_nodes_lists_only_what_users_build_graphs_from():
    listing = flowvoice("nodes")
    assert listing.returncode == 0, listing.stderr
    types = re.findall(r"^(\S+)\s", listing.stdout, re.M)
    assert "audio.file_source" in types and "websocket.sink" in types
    assert [t for t in types if t.startswith(("test.", "bench."))] == []
    # Nor can a user's graph name them: they are registered only by flowvoice.testing.
    assert "unknown node type 'test.tone'" in flowvoice("nodes", "test.tone").stderr


def test_nodes_unknown_type_suggests():
    result = flowvoice("nodes", "text.sentence")
    assert result.returncode == 2
    assert "did you mean text.sentences" in result.stderr


def _parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    nodes = dict(re.findall(r'^\s*"(\w+)" \[label="([^"]*)"\];$', text, re.M))
    edges = re.findall(r'^\s*"(\w+)" -> "(\w+)" \[label="([^"]*)"\];$', text, re.M)
    return nodes, edges


def test_viz_writes_dot_with_types_frame_types_and_buffers(tone_graph: Path, tmp_path: Path):
    out = tmp_path / "g.dot"
    env_graph = tone_graph.read_text().replace("${OUT}", "x.wav")
    tone_graph.write_text(env_graph)
    result = flowvoice("viz", str(tone_graph), "-o", str(out), test_nodes=True)
    assert result.returncode == 0, result.stderr
    nodes, edges = _parse_dot(out.read_text())
    assert nodes == {
        "src": "src\\ntest.tone",
        "p": "p\\ntest.passthrough",
        "sink": "sink\\naudio.file_sink",
    }
    assert edges == [
        ("src", "p", "audio -> audio\\nAudioFrame [32]"),
        ("p", "sink", "audio -> audio\\nAudioFrame [8] drop_newest"),
    ]


def test_viz_writes_mermaid(tone_graph: Path, tmp_path: Path):
    tone_graph.write_text(tone_graph.read_text().replace("${OUT}", "x.wav"))
    out = tmp_path / "g.mmd"
    assert flowvoice("viz", str(tone_graph), "-o", str(out), test_nodes=True).returncode == 0
    text = out.read_text()
    assert text.startswith("flowchart LR")
    assert '  p -->|"audio → audio<br/>AudioFrame [8] drop_newest"| sink' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
def test_viz_renders_svg(tone_graph: Path, tmp_path: Path):
    tone_graph.write_text(tone_graph.read_text().replace("${OUT}", "x.wav"))
    out = tmp_path / "g.svg"
    assert flowvoice("viz", str(tone_graph), "-o", str(out), test_nodes=True).returncode == 0
    svg = out.read_text()
    assert "<svg" in svg and "test.passthrough" in svg


def test_viz_unknown_format(tone_graph: Path, tmp_path: Path):
    tone_graph.write_text(tone_graph.read_text().replace("${OUT}", "x.wav"))
    result = flowvoice("viz", str(tone_graph), "-o", str(tmp_path / "g.pdf"), test_nodes=True)
    assert result.returncode == 2
    assert "unknown output format .pdf" in result.stderr


def test_run_executes_a_graph_of_builtin_nodes(tone_graph: Path, tmp_path: Path):
    out = tmp_path / "out.wav"
    result = flowvoice("run", str(tone_graph), env={"OUT": str(out), "PATH": ""}, test_nodes=True)
    assert result.returncode == 0, result.stderr
    from flowvoice.nodes.audio import read_wav

    samples, rate = read_wav(out)
    assert rate == 16000
    assert len(samples) == 5 * 320


def test_help_lists_commands_and_examples():
    result = flowvoice("--help")
    assert result.returncode == 0
    for command in ("run", "chat", "viz", "validate", "nodes", "bench"):
        assert command in result.stdout
    assert "examples:" in result.stdout
