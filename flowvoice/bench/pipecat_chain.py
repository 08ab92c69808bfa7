"""pipecat's side of ``flowvoice bench pipecat`` (imports pipecat-ai; see pipecat_compare and
interrupt_scenario)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame, TextFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from flowvoice.bench.interrupt_scenario import (
    PLAY_S,
    PRODUCE_S,
    TURN_FRAMES,
    PlayerLog,
    drive_turns,
    summarize_interrupts,
)
from flowvoice.bench.runtime import HOPS, STAGES

AUDIO = bytes(640)  # 20 ms of 16 kHz PCM16
START_TIMEOUT_S = 10.0
LEAN = {"enable_rtvi": False, "enable_turn_tracking": False, "idle_timeout_secs": None}


class Passthrough(FrameProcessor):
    """Forwards every frame (the base class handles start, interruptions and the rest)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class Sink(FrameProcessor):
    """Counts input audio frames, notes when the last one came, wakes a waiter at a count."""

    def __init__(self) -> None:
        super().__init__(name="sink")
        self.count = 0
        self.last_ns = 0
        self._target = 0
        self._reached = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)
            return
        self.count += 1
        self.last_ns = time.monotonic_ns()
        if self.count == self._target:
            self._reached.set()

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` audio frames have arrived in all."""
        self._target = count
        if self.count < count:
            self._reached.clear()
            await self._reached.wait()


class Producer(FrameProcessor):
    """A TTS stand-in: answers a TextFrame with audio frames tagged with the text's turn."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TextFrame):
            await self.push_frame(frame, direction)
            return
        for _ in range(TURN_FRAMES):
            audio = OutputAudioRawFrame(audio=AUDIO, sample_rate=16000, num_channels=1)
            audio.metadata["turn"] = frame.metadata["turn"]
            await self.push_frame(audio)
            await asyncio.sleep(PRODUCE_S)


class Player(FrameProcessor):
    """Takes ``PLAY_S`` to play each audio frame and logs its turn, start and end."""

    def __init__(self) -> None:
        super().__init__(name="player")
        self.played: PlayerLog = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, OutputAudioRawFrame):
            await self.push_frame(frame, direction)
            return
        start = time.monotonic_ns()
        try:
            await asyncio.sleep(PLAY_S)
        finally:
            self.played.append((frame.metadata["turn"], start, time.monotonic_ns()))


@asynccontextmanager
async def running(
    processors: Sequence[FrameProcessor], lean: bool
) -> AsyncIterator[PipelineWorker]:
    """A started ``PipelineWorker`` over ``processors``; cancelled on exit."""
    worker = PipelineWorker(Pipeline(processors), **(LEAN if lean else {}))
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), START_TIMEOUT_S)
        yield worker
    finally:
        await worker.cancel()
        await run


def _audio() -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=AUDIO, sample_rate=16000, num_channels=1)


async def chain(frames: int, one_at_a_time: bool, lean: bool) -> tuple[float, list[int]]:
    """Seconds to get ``frames`` through 8 passthroughs, and each frame's latency (ns)."""
    sink = Sink()
    latencies: list[int] = []
    async with running([*(Passthrough() for _ in range(STAGES)), sink], lean) as worker:
        start = time.monotonic_ns()
        if one_at_a_time:
            for i in range(frames):
                frame = _audio()
                sent = time.monotonic_ns()
                await worker.queue_frame(frame)
                await sink.wait_for(i + 1)
                latencies.append(sink.last_ns - sent)
        else:
            await worker.queue_frames(_audio() for _ in range(frames))
            await sink.wait_for(frames)
        return (sink.last_ns - start) / 1e9, latencies


async def interrupts(repeats: int, lean: bool) -> dict[str, float]:
    """Interrupt propagation in pipecat (see pipecat_compare's docstring)."""
    barge_in, player = Passthrough(name="barge_in"), Player()
    stages = [Passthrough() for _ in range(STAGES)]
    async with running([barge_in, Producer(), *stages, player], lean) as worker:

        async def trigger(turn: int) -> None:
            text = TextFrame(text="go")
            text.metadata["turn"] = turn
            await worker.queue_frame(text)

        marks = await drive_turns(trigger, barge_in.broadcast_interruption, repeats)
    return summarize_interrupts(player.played, marks)


def measure(frames: int, latency_frames: int, repeats: int, lean: bool) -> dict[str, float]:
    """pipecat's figures, keyed like flowvoice's (``runtime.measure`` + interrupts)."""
    logger.disable("pipecat")
    try:
        asyncio.run(chain(500, False, lean))  # warm-up
        elapsed, _ = asyncio.run(chain(frames, False, lean))
        _, latencies = asyncio.run(chain(latency_frames, True, lean))
        result = asyncio.run(interrupts(repeats, lean))
    finally:
        logger.enable("pipecat")
    per_hop_us = np.array(latencies) / HOPS / 1000
    return result | {
        "frames": frames,
        "frames_per_s": frames / elapsed,
        "hop_p50_us": float(np.percentile(per_hop_us, 50)),
        "hop_p99_us": float(np.percentile(per_hop_us, 99)),
    }
