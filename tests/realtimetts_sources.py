"""Audio sources for RealtimeTTS's real Kokoro and Coqui engine classes where the weights (and
the kokoro / coqui-tts packages) are missing: everything of the engines runs except the
model. Each sentence's audio is a constant level derived from its text, so a test can tell
whose audio it got.

- :class:`FakeKPipeline` replaces ``kokoro.KPipeline``: one result per call with a token per
  word (so the engine records word timings) and 0.1 s of audio per word.
- :func:`coqui_worker` replaces ``CoquiEngine._synthesize_worker``, the XTTS process: the
  same pipe protocol (commands in; ``("success", chunk)`` ..., ``("finished", "")`` out),
  the stop event checked between chunks, one 20 ms float32 chunk per character every 5 ms.
  It runs in a spawned process, so it lives at module level.
"""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

RATE = 24000


def level_of(text: str) -> float:
    """The constant sample value a sentence's fake audio has (0.05 .. 0.95)."""
    return 0.05 + (sum(map(ord, text)) % 19) * 0.05


@dataclass
class _Token:
    text: str
    start_ts: float
    end_ts: float


@dataclass
class _Result:
    graphemes: str
    phonemes: str
    audio: Any
    tokens: list[_Token]


class FakeKPipeline:
    """``kokoro.KPipeline``: 0.1 s per word at ``level_of(text)``; nothing for text
    without words."""

    def __init__(self, repo_id: str = "", lang_code: str = "a", **_: Any) -> None:
        self.lang_code = lang_code

    def __call__(self, text: str, voice: Any = None, speed: float = 1.0):
        import torch

        words = [w for w in text.split() if any(c.isalnum() for c in w)]
        samples = int(0.1 * RATE) * len(words)
        audio = torch.full((samples,), level_of(text), dtype=torch.float32)
        tokens = [_Token(w, 0.1 * i, 0.1 * (i + 1)) for i, w in enumerate(words)]
        yield _Result(text, text, audio, tokens)

    def load_single_voice(self, name: str) -> Any:
        import torch

        return torch.zeros(1)


def fake_kokoro_module() -> types.ModuleType:
    module = types.ModuleType("kokoro")
    module.KPipeline = FakeKPipeline
    return module


def fake_xtts_speaker_module() -> dict[str, types.ModuleType]:
    """``TTS.tts.layers.xtts.xtts_manager`` with a SpeakerManager that knows no speakers."""

    class SpeakerManager:
        def __init__(self, path: str) -> None:
            self.name_to_id: dict[str, int] = {}

    names = ["TTS", "TTS.tts", "TTS.tts.layers", "TTS.tts.layers.xtts"]
    modules = {name: types.ModuleType(name) for name in names}
    manager = types.ModuleType("TTS.tts.layers.xtts.xtts_manager")
    manager.SpeakerManager = SpeakerManager
    modules[manager.__name__] = manager
    return modules


CHUNK_SAMPLES = RATE // 50
CHUNK_EVERY_S = 0.005


def coqui_chunks(text: str) -> int:
    """How many chunks :func:`coqui_worker` sends for ``text``."""
    return len(text)


def coqui_worker(output_queue, conn, stop_event, *args: Any) -> None:
    """Stands in for ``CoquiEngine._synthesize_worker`` (same arguments)."""
    ready_event = args[3]
    sys.stdout = sys.stderr = open("/dev/null", "w")  # noqa: SIM115 (lives as the process)
    ready_event.set()
    while True:
        if not conn.poll(0.01):
            continue
        message = conn.recv()
        command, data = message["command"], message["data"]
        if command == "shutdown":
            conn.send(("shutdown", "shutdown"))
            return
        if command != "synthesize":
            conn.send(("success", f"{command} done"))
            continue
        stop_event.clear()
        chunk = np.full((1, CHUNK_SAMPLES), level_of(data["text"]), np.float32).tobytes()
        for _ in range(coqui_chunks(data["text"])):
            if stop_event.is_set():
                break
            time.sleep(CHUNK_EVERY_S)
            conn.send(("success", chunk))
        conn.send(("finished", ""))
