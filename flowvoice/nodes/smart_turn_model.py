"""Smart Turn v3.2: an audio end-of-turn model (engine only, no graph node).

Smart Turn v3.2 (Daily / pipecat-ai, BSD-2-Clause) is a Whisper-Tiny encoder with a small
classification head, shipped here as the 8.7 MB int8 CPU ONNX file
``flowvoice/models/smart-turn-v3.2-cpu.onnx`` (origin and licence in ``flowvoice/models/``), so
the offline default needs no download. Given the user's turn so far, up to the moment of the
pause being judged, it returns the probability that the turn is finished.

Front end, as the model was trained (and as pipecat's ``LocalSmartTurnAnalyzerV3`` feeds it):

1. mono audio to float in [-1, 1], resampled to 16 kHz (soxr, HQ);
2. the LAST 8 s kept (128,000 samples); shorter audio is zero-padded at the START, so the end of
   the turn always sits at the end of the window;
3. the padded window normalised to zero mean and unit variance (Whisper's ``do_normalize``);
4. Whisper log-mel features, 80 mels x 800 frames (faster-whisper's numpy ``FeatureExtractor``
   with no extra tail padding: the centred STFT gives 801 frames, the last is dropped);
5. the ONNX session maps ``input_features`` [1, 80, 800] to ``logits`` [1, 1], which is already
   a sigmoid probability.

Cost: one call is dominated by the int8 ONNX run (``time_calls`` measures it). On the 2-core
development machine (Xeon with AVX-512 VNNI, other work running, load average ~4), an 8 s window
took a median of ~130 ms with one thread (features ~20 ms, ONNX ~90 ms; best case ~45 ms); the
research note measured 77-220 ms on a 2-core EPYC without VNNI. So the model should be called once
or twice per pause, from one worker thread (ONNX runs are serialised by a lock; the session uses
``intra_op_threads`` threads, 1 by default, and sequential execution).

Scores move with the trailing silence in ``audio`` (in the research note's espeak-ng sweep a
fragment went from 0.22 at 0.1 s of silence to 0.91 at 0.5 s): query at a fixed point of the
pause (pipecat and eot-bench use 0.2 s after the VAD stop) and calibrate thresholds there; 0.5 is
not a good threshold on real conversation (research/turn-detection.md).

Usage::

    model = SmartTurnModel.load()               # the shipped file; or .load("/path/model.onnx")
    p = model.probability(samples, 16000)       # int16 or float mono, any sample rate
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import soxr

from flowvoice.runtime.blas import one_blas_thread

MODEL_FILENAME = "smart-turn-v3.2-cpu.onnx"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / MODEL_FILENAME
MODEL_SAMPLE_RATE = 16000
WINDOW_SECONDS = 8
WINDOW_SAMPLES = WINDOW_SECONDS * MODEL_SAMPLE_RATE
N_MELS = 80
N_FRAMES = WINDOW_SAMPLES // 160  # hop 160 samples (10 ms): 800 frames
_NORM_EPS = 1e-7
_OFFLINE_EXTRA = "pip install 'flowvoice[offline]'"


class SmartTurnModelNotFoundError(FileNotFoundError):
    """The Smart Turn ONNX file is not where it was looked for."""


def _model_not_found(path: Path, default: bool) -> SmartTurnModelNotFoundError:
    if default:
        hint = (
            "this file ships inside the flowvoice package (flowvoice/models/); the installation "
            "is incomplete: reinstall flowvoice, or pass the path of a Smart Turn v3.x ONNX file"
        )
    else:
        hint = (
            "pass the path of an existing Smart Turn v3.x ONNX file, or leave the path unset to "
            f"use the model shipped with flowvoice ({DEFAULT_MODEL_PATH.name}); Smart Turn files "
            "come in the pipecat-ai wheel (pipecat/audio/turn/smart_turn/data/) and on Hugging "
            "Face (pipecat-ai/smart-turn-v3)"
        )
    return SmartTurnModelNotFoundError(
        2, f"Smart Turn model file not found: {path} ({hint})", str(path)
    )


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the Smart Turn model needs the Python package '{package}' (import {module!r} "
            f"failed: {exc}); install it with `pip install {package}` or `{_OFFLINE_EXTRA}`"
        ) from exc


def to_float_mono(audio: np.ndarray) -> np.ndarray:
    """``audio`` (signed integer PCM, e.g. int16, or float in [-1, 1]) as 1-D float32."""
    audio = np.asarray(audio)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (a 1-D array), got shape {audio.shape}")
    if np.issubdtype(audio.dtype, np.signedinteger):
        return audio.astype(np.float32) / np.float32(-np.iinfo(audio.dtype).min)
    if np.issubdtype(audio.dtype, np.floating):
        return audio.astype(np.float32, copy=False)
    raise ValueError(f"expected signed integer PCM or float audio, got dtype {audio.dtype}")


def model_window(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The model's input window: the last 8 s of ``audio`` at 16 kHz, float32, zero-padded at
    the start to exactly ``WINDOW_SAMPLES`` samples."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x = to_float_mono(audio)
    if sample_rate != MODEL_SAMPLE_RATE:
        # Resample only the tail the window needs, plus 0.1 s so the filter has context.
        keep = int(np.ceil((WINDOW_SECONDS + 0.1) * sample_rate))
        x = soxr.resample(x[-keep:], sample_rate, MODEL_SAMPLE_RATE, quality="HQ")
        x = np.asarray(x, dtype=np.float32)
    if len(x) >= WINDOW_SAMPLES:
        return np.ascontiguousarray(x[-WINDOW_SAMPLES:])
    out = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    if len(x):
        out[-len(x) :] = x
    return out


class SmartTurnModel:
    """Smart Turn v3.x end-of-turn probability from audio (ONNX Runtime, CPU).

    ``SmartTurnModel.load(path)`` and ``SmartTurnModel(path)`` are the same; ``path=None`` is the
    model shipped in flowvoice. A missing file raises ``SmartTurnModelNotFoundError`` (a
    ``FileNotFoundError``) naming the path.
    """

    def __init__(self, path: str | Path | None = None, *, intra_op_threads: int = 1) -> None:
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
        default = path is None
        model_path = DEFAULT_MODEL_PATH if default else Path(path).expanduser()
        if not model_path.is_file():
            raise _model_not_found(model_path, default)
        ort = _import("onnxruntime", "onnxruntime")
        feature_extractor = _import("faster_whisper.feature_extractor", "faster-whisper")

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Shared 2-core machine: worker threads must not spin while waiting for work.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ValueError(
                f"could not load the Smart Turn model {model_path}: {exc} (expected a Smart Turn "
                "v3.x ONNX file)"
            ) from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [N_MELS, N_FRAMES]:
            shapes = [(i.name, i.shape) for i in inputs]
            raise ValueError(
                f"{model_path} does not look like a Smart Turn v3.x model: inputs {shapes}, "
                f"expected one input of shape [batch, {N_MELS}, {N_FRAMES}]"
            )
        self._input_name = inputs[0].name
        self._features = feature_extractor.FeatureExtractor(
            feature_size=N_MELS, sampling_rate=MODEL_SAMPLE_RATE, chunk_length=WINDOW_SECONDS
        )
        self._lock = threading.Lock()
        self.path = model_path
        self.intra_op_threads = intra_op_threads

    @classmethod
    def load(cls, path: str | Path | None = None, *, intra_op_threads: int = 1) -> SmartTurnModel:
        """Load the model at ``path`` (None: the file shipped in flowvoice)."""
        return cls(path, intra_op_threads=intra_op_threads)

    def features(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The model input for ``audio``: Whisper log-mel features, float32 [1, 80, 800]."""
        x = model_window(audio, sample_rate)
        x = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)
        with one_blas_thread():  # no BLAS thread left spinning beside the next engine
            log_mel = self._features(x, padding=0)
        return np.ascontiguousarray(log_mel[np.newaxis], dtype=np.float32)

    def probability_from_features(self, features: np.ndarray) -> float:
        """Run the ONNX model on ``features`` [1, 80, 800]; the end-of-turn probability."""
        with self._lock:
            (out,) = self._session.run(None, {self._input_name: features})
        return float(np.asarray(out).reshape(-1)[0])

    def probability(self, audio: np.ndarray, sample_rate: int) -> float:
        """The probability (0..1) that the speech in ``audio`` is a finished turn.

        ``audio`` is the user's turn so far, up to the point being judged (normally the start of
        the current pause, plus the silence seen so far), mono, int16 PCM or float in [-1, 1], at
        any ``sample_rate``. Only its last 8 s are used.
        """
        return self.probability_from_features(self.features(audio, sample_rate))


def time_calls(
    model: SmartTurnModel, audio: np.ndarray, n: int = 20, sample_rate: int = MODEL_SAMPLE_RATE
) -> list[float]:
    """Seconds taken by each of ``n`` full ``model.probability`` calls (after one warm-up)."""
    model.probability(audio, sample_rate)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        model.probability(audio, sample_rate)
        times.append(time.perf_counter() - start)
    return times
