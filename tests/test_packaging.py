"""The package as a user installs it: a wheel that carries the shipped graphs and the web
client, and ``flowvoice validate default`` working from any folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB_FILES = ["index.html", "app.js", "style.css", "capture-worklet.js", "playback-worklet.js"]


def flowvoice(*args: str, cwd: Path, pythonpath: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [sys.executable, "-m", "flowvoice", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the source (the checkout keeps no build/ or egg-info)."""
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "flowvoice", src / "flowvoice", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout}\n{done.stderr}"
    (path,) = out.glob("flowvoice-*.whl")
    return path


def test_wheel_carries_the_shipped_graphs_and_the_web_client(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"flowvoice/graphs/{p.name}" for p in (ROOT / "flowvoice" / "graphs").glob("*.yaml")}
    assert "flowvoice/graphs/default.yaml" in shipped
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"
    assert {f"flowvoice/web/{name}" for name in WEB_FILES} <= names


def test_wheel_metadata_has_an_spdx_license(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        (metadata,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        text = zf.read(metadata).decode()
    assert "License-Expression: MIT" in text


def test_installed_wheel_validates_default_from_any_folder(wheel: Path, tmp_path: Path):
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index"]
        + ["--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    result = flowvoice("validate", "default", "light", cwd=cwd, pythonpath=target)
    assert result.returncode == 0, result.stderr
    assert "default: OK" in result.stdout and "light: OK" in result.stdout


def test_validate_default_from_another_folder(tmp_path: Path):
    result = flowvoice("validate", "default", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^default: OK \(\d+ nodes, \d+ edges\)$", result.stdout, re.M)


def test_a_path_still_works_from_the_repository():
    result = flowvoice("validate", "graphs/default.yaml", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "graphs/default.yaml: OK" in result.stdout


def test_unknown_graph_name_is_a_clear_error(tmp_path: Path):
    result = flowvoice("validate", "no_such_graph", cwd=tmp_path)
    assert result.returncode == 2
    assert "no_such_graph: file: no such file, and no shipped graph" in result.stderr
    assert "default, echo, light" in result.stderr
    assert "Traceback" not in result.stderr
    result = flowvoice("viz", "no_such_graph", cwd=tmp_path)
    assert result.returncode == 2
    assert "shipped graphs: default" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_mentions_shipped_graph_names(tmp_path: Path):
    result = flowvoice("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "flowvoice run default" in result.stdout
    assert "default, echo, light" in result.stdout
    result = flowvoice("run", "--help", cwd=tmp_path)
    assert "name of a shipped graph" in " ".join(result.stdout.split())
