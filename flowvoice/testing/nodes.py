"""Small generic nodes for tests and benchmarks (no models); registered on import, see
:func:`flowvoice.testing.register_nodes`."""

from __future__ import annotations

import anyio
import numpy as np
from pydantic import Field

from flowvoice.frames import AudioFrame, Frame, Sentence
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, Port


class ToneParams(NodeParams):
    frames: int = Field(50, ge=0, description="How many frames to produce.")
    frame_ms: int = Field(20, ge=1, description="Duration of each frame in milliseconds.")
    sample_rate: int = Field(16000, ge=8000, description="Sample rate in Hz.")
    frequency: float = Field(440.0, gt=0, description="Tone frequency in Hz.")
    realtime: bool = Field(
        False, description="Pace frames in real time instead of as fast as possible."
    )


@register("test.tone")
class ToneSource(Node):
    """A sine-tone audio source: a fixed number of PCM16 frames."""

    outputs = {"audio": Port(AudioFrame, doc="PCM16 tone frames")}
    Params = ToneParams
    params: ToneParams

    async def run(self) -> None:
        p = self.params
        n = p.sample_rate * p.frame_ms // 1000
        t = np.arange(n) / p.sample_rate
        for i in range(p.frames):
            phase = 2 * np.pi * p.frequency * (t + i * n / p.sample_rate)
            samples = (np.sin(phase) * 8000).astype(np.int16)
            await self.emit("audio", AudioFrame(samples=samples, sample_rate=p.sample_rate))
            if p.realtime:
                await anyio.sleep(p.frame_ms / 1000)


@register("test.passthrough")
class Passthrough(Node):
    """Forwards every audio frame unchanged (runtime benchmarks and tests)."""

    inputs = {"audio": Port(AudioFrame)}
    outputs = {"audio": Port(AudioFrame)}

    async def process(self, port: str, frame: Frame) -> None:
        await self.emit("audio", frame)


class TextParams(NodeParams):
    sentences: list[str] = Field(
        default_factory=lambda: ["Hello there."], description="Sentences to emit."
    )


@register("test.text")
class TextSource(Node):
    """Emits fixed sentences, the last one marked final."""

    outputs = {"sentence": Port(Sentence)}
    Params = TextParams
    params: TextParams

    async def run(self) -> None:
        last = len(self.params.sentences) - 1
        for i, text in enumerate(self.params.sentences):
            await self.emit("sentence", Sentence(text=text, final=i == last))


@register("test.collect")
class Collect(Node):
    """A sink that keeps every frame it receives, in order (``frames``)."""

    inputs = {"frames": Port(Frame, doc="any frame")}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[Frame] = []

    async def process(self, port: str, frame: Frame) -> None:
        self.frames.append(frame)
