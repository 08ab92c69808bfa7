"""scripts/gpu-check (flowvoice.bench.gpu): on the CPU here, on CUDA where a GPU is visible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowvoice.bench import gpu

ROOT = Path(__file__).resolve().parents[1]


def _cuda_devices() -> int:
    import ctranslate2

    return ctranslate2.get_cuda_device_count()


def test_gpu_check_runs_the_engines_on_the_cpu(capsys) -> None:
    assert gpu.main(["--cpu", "--repeats", "1", "--tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "CTranslate2" in out and "llama-cpp-python" in out
    assert "| whisper tiny.en | cpu, int8 |" in out and "'What is the capital of France?'" in out
    assert "| llama.cpp gemma3-270m | CPU |" in out and "| NO |" not in out


@pytest.mark.skipif(_cuda_devices() > 0, reason="a GPU is visible")
def test_gpu_check_without_a_gpu_says_so_and_exits_2() -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu-check")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 2, done.stderr
    assert "no CUDA device visible" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(_cuda_devices() == 0, reason="needs a CUDA GPU")
def test_gpu_check_on_the_gpu(capsys) -> None:
    code = gpu.main(["--repeats", "5", "--tokens", "64"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    assert "| whisper tiny.en | cuda," in out and "all layers on the GPU" in out
