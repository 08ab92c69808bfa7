"""What the engines ask of a GPU, checked on a CPU machine by making the libraries report one:
stt.whisper's compute type on an old GPU, llm.llamacpp's layers on a GPU build of llama.cpp."""

from __future__ import annotations

from typing import Any

import pytest
from harness import run_graph

pytestmark = pytest.mark.anyio

#: What CTranslate2 reports for a compute capability 6.1 GPU (GTX 10xx, P4, P40): int8 via
#: DP4A, no float16 (that needs 7.0) and no bfloat16 (8.0).
CC_6_1 = {"float32", "int8", "int8_float32"}
CC_8_6 = {"float32", "int8", "int8_float32", "float16", "int8_float16", "bfloat16"}


class Recorded:
    """Stands in for the loaded model; keeps the arguments it was built with."""

    calls: list[tuple[Any, ...]] = []
    multilingual = False

    def __init__(self, *args: Any) -> None:
        Recorded.calls.append(args)


def _one_cuda_gpu(monkeypatch, supported: set[str]) -> None:
    import ctranslate2

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(
        ctranslate2,
        "get_supported_compute_types",
        lambda device, device_index=0: supported if device == "cuda" else {"int8", "float32"},
    )
    monkeypatch.setattr("flowvoice.nodes.stt._Whisper", Recorded)
    Recorded.calls = []


async def _whisper_setup(**params: Any) -> tuple[Any, ...]:
    await run_graph({"stt": ("stt.whisper", params)}, [], [], ["stt.audio"])
    (call,) = Recorded.calls
    return call  # (path, device, compute_type, threads)


@pytest.mark.parametrize(
    ("supported", "expected"), [(CC_6_1, "auto"), (CC_8_6, "float16")], ids=["cc6.1", "cc8.6"]
)
async def test_whisper_default_compute_type_follows_the_gpu(
    monkeypatch, own_resources, supported, expected
) -> None:
    _one_cuda_gpu(monkeypatch, supported)
    _, device, compute_type, _ = await _whisper_setup()
    assert device == "cuda" and compute_type == expected
    assert compute_type != "float16" or "float16" in supported


async def test_whisper_compute_type_the_user_set_is_kept(monkeypatch, own_resources) -> None:
    _one_cuda_gpu(monkeypatch, CC_6_1)
    _, device, compute_type, _ = await _whisper_setup(compute_type="int8")
    assert (device, compute_type) == ("cuda", "int8")


async def test_whisper_default_on_the_cpu_is_int8(monkeypatch, own_resources) -> None:
    _one_cuda_gpu(monkeypatch, CC_8_6)
    _, device, compute_type, _ = await _whisper_setup(device="cpu")
    assert (device, compute_type) == ("cpu", "int8")


def _record_llama(monkeypatch, offload: bool) -> list[dict[str, Any]]:
    """The real Llama (CPU build: it ignores GPU layers), its keyword arguments recorded."""
    import llama_cpp

    seen: list[dict[str, Any]] = []
    real = llama_cpp.Llama

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", recording)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: offload)
    return seen


@pytest.mark.parametrize(
    ("offload", "params", "layers"),
    [(True, {}, -1), (False, {}, 0), (True, {"n_gpu_layers": 12}, 12)],
    ids=["gpu-build-all", "cpu-build-none", "user-set"],
)
async def test_llamacpp_offloads_every_layer_when_llama_cpp_can(
    monkeypatch, own_resources, offload, params, layers
) -> None:
    seen = _record_llama(monkeypatch, offload)
    await run_graph({"llm": ("llm.llamacpp", {"n_ctx": 512, **params})}, [], [], ["llm.prompt"])
    assert [kwargs["n_gpu_layers"] for kwargs in seen] == [layers]
