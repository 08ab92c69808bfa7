"""Audio I/O nodes: WAV file source and sink, and a streaming resampler."""

from __future__ import annotations

import wave
from pathlib import Path

import anyio
import numpy as np
from pydantic import Field

from flowvoice.frames import AudioFrame, Frame
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, NodeSetupError, Port
from flowvoice.nodes.speaker import SpeakerParams, SpeakerSink


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM16 WAV file as mono int16 samples (channels averaged) and its rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise NodeSetupError(
                    f"{path}: expected 16-bit PCM WAV, got {8 * wav.getsampwidth()}-bit"
                )
            rate, channels = wav.getframerate(), wav.getnchannels()
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    except (OSError, EOFError, wave.Error) as exc:
        raise NodeSetupError(f"cannot read WAV file {path}: {exc}") from exc
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data.astype(np.int16, copy=False), rate


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono int16 samples as a PCM16 WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())


class Resampler:
    """Streaming PCM16 resampler (soxr) that keeps filter state across chunks."""

    def __init__(self, in_rate: int, out_rate: int):
        import soxr

        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        return self._stream.resample_chunk(samples, last=last)


class FileSourceParams(NodeParams):
    path: str = Field(description="PCM16 WAV file to play as the microphone.")
    realtime: bool = Field(True, description="Pace frames in real time (like a live mic).")
    frame_ms: int = Field(20, ge=1, le=1000, description="Duration of each emitted frame in ms.")
    tail_silence_ms: int = Field(
        0, ge=0, description="Silence appended after the file, so trailing speech is endpointed."
    )


@register("audio.file_source")
class FileSource(Node):
    """Reads a WAV file and emits it as PCM16 frames, paced in real time or as fast as possible."""

    outputs = {"audio": Port(AudioFrame, doc="PCM16 mono frames at the file's sample rate")}
    Params = FileSourceParams
    params: FileSourceParams

    async def setup(self) -> None:
        self.samples, self.sample_rate = read_wav(self.params.path)
        tail = np.zeros(self.sample_rate * self.params.tail_silence_ms // 1000, np.int16)
        self.samples = np.concatenate([self.samples, tail])

    async def run(self) -> None:
        step = max(1, self.sample_rate * self.params.frame_ms // 1000)
        period = step / self.sample_rate
        start = anyio.current_time()
        for index, offset in enumerate(range(0, len(self.samples), step)):
            if self.params.realtime:
                await anyio.sleep_until(start + index * period)
            chunk = self.samples[offset : offset + step]
            await self.emit("audio", AudioFrame(samples=chunk, sample_rate=self.sample_rate))


class FileSinkParams(SpeakerParams):
    path: str = Field(
        "", description="WAV file to write the received audio to ('' keeps it in memory)."
    )
    sample_rate: int = Field(0, ge=0, description="Output rate; 0 keeps the first frame's rate.")
    gap_ms: int = Field(300, ge=0, description="Silence written between the audio of two turns.")
    lead_ms: int = Field(
        0,
        ge=0,
        le=60000,
        description="0 writes audio as fast as it is made; > 0 'plays' it in real time with "
        "this lead (like a speaker), so barge-in and interrupts cut it as they would live.",
    )


@register("audio.file_sink")
class FileSink(SpeakerSink):
    """Collects assistant audio per turn and writes it to a WAV file at the end of the stream.

    Behaves like the WebSocket sink (``assistant_text`` events, held speculative turns, the
    latency trace's ``first_audio_sent``), with a WAV file as the speaker.
    """

    Params = FileSinkParams
    params: FileSinkParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.turns: dict[int, list[np.ndarray]] = {}
        self.rate = self.params.sample_rate
        self._resampler: Resampler | None = None

    async def deliver(self, turn: int, sample_rate: int, samples: np.ndarray) -> None:
        if not self.rate:
            self.rate = sample_rate
        if sample_rate != self.rate:
            if self._resampler is None or self._resampler.in_rate != sample_rate:
                self._resampler = Resampler(sample_rate, self.rate)
            samples = self._resampler(samples)
        self.turns.setdefault(turn, []).append(samples)

    async def on_interrupt(self, turn: int) -> None:
        await super().on_interrupt(turn)
        if self.speaking():
            self.audio_turn = self.open_reply = None
            self.context.publish("interrupt", turn=turn)

    def audio(self) -> np.ndarray:
        """Everything received so far, turns separated by ``gap_ms`` of silence."""
        gap = np.zeros((self.rate or 16000) * self.params.gap_ms // 1000, np.int16)
        parts: list[np.ndarray] = []
        for chunks in self.turns.values():
            if parts:
                parts.append(gap)
            parts.extend(chunks)
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    async def end_of_stream(self) -> None:
        await super().end_of_stream()
        if self.params.path:
            write_wav(self.params.path, self.audio(), self.rate or 16000)


class ResampleParams(NodeParams):
    sample_rate: int = Field(16000, ge=8000, le=192000, description="Output sample rate in Hz.")


@register("audio.resample")
class Resample(Node):
    """Converts audio frames to another sample rate (streaming, soxr)."""

    inputs = {"audio": Port(AudioFrame)}
    outputs = {"audio": Port(AudioFrame)}
    Params = ResampleParams
    params: ResampleParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resampler: Resampler | None = None

    async def process(self, port: str, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        rate = self.params.sample_rate
        if frame.sample_rate == rate:
            await self.emit("audio", frame)
            return
        if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
            self._resampler = Resampler(frame.sample_rate, rate)
        samples = self._resampler(frame.samples)
        if len(samples) or frame.final:
            resampled = AudioFrame(
                samples=samples, sample_rate=rate, t_ns=frame.t_ns, final=frame.final
            )
            await self.emit("audio", resampled)

    async def end_of_stream(self) -> None:
        if self._resampler is not None:
            tail = self._resampler(np.zeros(0, np.int16), last=True)
            if len(tail):
                await self.emit(
                    "audio", AudioFrame(samples=tail, sample_rate=self.params.sample_rate)
                )
