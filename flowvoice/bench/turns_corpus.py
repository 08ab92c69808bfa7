"""The synthetic corpus of ``flowvoice bench turns``: what is said, by which voice, and how.

Nothing here is a recording: every clip is spoken when the benchmark runs, by Piper's joe
voice (in process) and several espeak-ng voices, so the labels are known by construction.

Four categories, each spread over every voice:

- ``a`` (hold): one turn spoken in two parts with 200-900 ms of silence between them, after a
  continuation word, a filler, a comma or inside a number. The turn must not commit in the
  pause.
- ``b`` (complete): a finished question or command. The turn should commit soon after it.
- ``c`` (backchannel): "yeah", "mm hm", a cough or a noise burst while the assistant's reply
  plays. It must not interrupt the reply.
- ``d`` (barge-in): a real interruption while the reply plays. It must interrupt.

Every ``c`` and ``d`` utterance follows a ``b`` question chosen to get a long reply (a
"segment" of two utterances), so there is a reply to talk over.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from flowvoice.nodes.audio import Resampler, read_wav

RATE = 16000
T = TypeVar("T")
Category = Literal["a", "b", "c", "d"]
CATEGORIES: tuple[Category, ...] = ("a", "b", "c", "d")
CATEGORY_NAMES = {
    "a": "mid-turn pause (hold)",
    "b": "complete question or command",
    "c": "backchannel or noise during a reply",
    "d": "barge-in during a reply",
}


@dataclass(frozen=True)
class Voice:
    """A way of speaking: Piper (``engine="piper"``, joe) or an espeak-ng voice and speed."""

    name: str
    engine: Literal["piper", "espeak"]
    espeak_voice: str = ""
    words_per_minute: int = 160
    length_scale: float = 1.0


VOICES = (
    Voice("piper-joe", "piper"),
    Voice("espeak-en-us+m3", "espeak", "en-us+m3", 150),
    Voice("espeak-en+f2", "espeak", "en+f2", 175),
    Voice("espeak-en-gb", "espeak", "en-gb", 135),
    Voice("piper-joe-slow", "piper", length_scale=1.25),
    Voice("espeak-en-us+f3-fast", "espeak", "en-us+f3", 195),
)

#: Silence inside the hold utterances, cycled (ms).
PAUSES_MS = (250, 600, 400, 850, 500, 700, 300, 900, 650, 200)

# (kind, first part, second part): the pause falls between the parts.
HOLDS = (
    ("continuation", "Can you tell me about the", "weather in Paris tomorrow"),
    ("continuation", "I would like to know more about", "the history of the Roman empire"),
    ("continuation", "What is the difference between a frog and", "a toad"),
    ("continuation", "Could you recommend a good book for", "someone who likes science fiction"),
    ("continuation", "I need a recipe with chicken and", "rice and some vegetables"),
    ("continuation", "My sister wants to visit", "Japan next spring"),
    ("continuation", "Why does the moon look bigger when", "it is close to the horizon"),
    ("filler", "I want to um", "book a table for four people"),
    ("filler", "So I was thinking uh", "maybe we could go hiking on Sunday"),
    ("filler", "Can you uh", "set a timer for ten minutes"),
    ("filler", "The thing is um", "I forgot my password again"),
    ("filler", "I'd like to order er", "two large pizzas please"),
    ("filler", "How do I hmm", "change the battery in my watch"),
    ("comma", "First,", "preheat the oven to two hundred degrees"),
    ("comma", "Well,", "I was hoping you could help me plan a trip"),
    ("comma", "If it rains tomorrow,", "should I still go to the beach"),
    ("comma", "Before you answer,", "remember that I am a vegetarian"),
    ("comma", "Actually,", "what time does the museum open on Mondays"),
    ("comma", "After the meeting,", "remind me to call my mother"),
    ("number", "My number is five five five", "one two three four"),
    ("number", "The code is four seven", "nine two"),
    ("number", "Send the package to forty two", "Baker Street"),
    ("number", "The total was one hundred and", "twenty five dollars"),
    ("number", "Call me back at oh two oh", "seven nine four six"),
    ("number", "My flight leaves at six", "forty five in the morning"),
)

#: Finished questions and commands that get a short reply.
COMPLETES = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Set an alarm for seven in the morning.",
    "Who wrote Romeo and Juliet?",
    "What is a good name for a puppy?",
    "Turn off the lights in the kitchen.",
    "Is it going to snow this weekend?",
    "What is twelve times three?",
)

#: Finished requests that get a reply long enough to talk over (each opens a c/d segment).
PROMPTS = (
    "Tell me a short story about a brave little mouse.",
    "Explain how a rainbow forms.",
    "Describe the city of London in a few sentences.",
    "Give me three tips for sleeping better.",
    "Tell me about the planet Mars.",
    "How does a car engine work?",
    "Tell me about the history of chess.",
    "Explain what photosynthesis is.",
    "Tell me some fun facts about elephants.",
    "How do airplanes stay in the air?",
    "What should I pack for a week in the mountains?",
    "Describe how bread is made.",
    "Tell me about the pyramids of Egypt.",
    "Why do we have seasons on Earth?",
    "Explain how the internet works.",
    "Tell me about the life of a honey bee.",
    "What are the rules of football?",
    "Describe a typical day of an astronaut.",
    "Tell me about volcanoes.",
    "How do whales communicate?",
)

#: Said while the assistant speaks, meaning "go on" (text) or not speech at all (noise:kind).
BACKCHANNELS = (
    "yeah",
    "okay",
    "mm hm",
    "uh huh",
    "right",
    "I see",
    "oh okay",
    "yeah yeah",
    "noise:cough",
    "noise:double-cough",
    "noise:hiss",
    "noise:thump",
)

#: Real interruptions: interrupt words first, then requests without one.
BARGE_INS = (
    "Stop, what is two plus two?",
    "Wait, tell me about Rome instead.",
    "No, I meant Paris.",
    "Hold on, what about the weather tomorrow?",
    "Sorry, can you repeat the last part?",
    "Actually, let's talk about football.",
    "Can you make it shorter please?",
    "Tell me a joke instead.",
)

#: How long the reply plays before a c/d utterance is spoken (s), cycled.
ASSISTANT_S = (0.6, 1.0, 1.4, 0.8, 1.2)


@dataclass(frozen=True)
class Utterance:
    """One thing the user says; ``parts`` are spoken separately and joined by ``pause_ms``."""

    id: str
    category: Category
    kind: str  # continuation/filler/comma/number, question, backchannel, noise, barge-in
    parts: tuple[str, ...]
    voice: Voice
    pause_ms: int = 0
    assistant_s: float | None = None  # c/d: spoken once the reply has played this long

    @property
    def text(self) -> str:
        return " ... ".join(self.parts)


@dataclass(frozen=True)
class Segment:
    """Utterances spoken back to back: one a/b utterance, or a prompt and its c/d."""

    utterances: tuple[Utterance, ...]

    @property
    def category(self) -> Category:
        return self.utterances[-1].category


@dataclass
class Corpus:
    segments: list[Segment] = field(default_factory=list)

    @property
    def utterances(self) -> list[Utterance]:
        return [u for s in self.segments for u in s.utterances]


def build_corpus() -> Corpus:
    """The full corpus (no audio yet), categories, kinds and voices spread over the order."""
    holds = [
        Utterance(f"a{i:02d}", "a", kind, (first, second), VOICES[0], PAUSES_MS[i % len(PAUSES_MS)])
        for i, (kind, first, second) in enumerate(HOLDS)
    ]
    holds = _interleaved([(u.kind, u) for u in holds])  # pause kinds mixed
    completes = [
        Utterance(f"b{i:02d}", "b", "question", (text,), VOICES[0])
        for i, text in enumerate(COMPLETES)
    ]
    singles = _interleaved([(u.category, u) for u in holds + completes])
    singles = [replace(u, voice=VOICES[i % len(VOICES)]) for i, u in enumerate(singles)]
    over_reply = _interleaved(  # c and d mixed, so a subsample keeps both
        [("c", ("c", text)) for text in BACKCHANNELS] + [("d", ("d", text)) for text in BARGE_INS]
    )
    talk_over = []
    for i, ((category, text), prompt) in enumerate(zip(over_reply, PROMPTS, strict=True)):
        kind = "barge-in" if category == "d" else "backchannel"
        if text.startswith("noise:"):
            kind = "noise"
        asked = Utterance(
            f"b{len(COMPLETES) + i:02d}", "b", "prompt", (prompt,), VOICES[(i + 3) % len(VOICES)]
        )
        said = Utterance(
            f"{category}{i:02d}",
            category,
            kind,
            (text,),
            VOICES[i % len(VOICES)],
            assistant_s=ASSISTANT_S[i % len(ASSISTANT_S)],
        )
        talk_over.append(Segment((asked, said)))
    # A talk-over segment after every second single utterance.
    order: list[Segment] = []
    over = iter(talk_over)
    for i, single in enumerate(singles):
        order.append(Segment((single,)))
        if i % 2 == 1:
            order.extend(s for s in [next(over, None)] if s is not None)
    order.extend(over)
    return Corpus(order)


def _interleaved(items: Sequence[tuple[str, T]]) -> list[T]:
    """The items (keyed by category) reordered so each category is spread evenly over the
    list: the i-th of n items of a category goes to position ~(i + 0.5) / n."""
    counts: dict[str, int] = {}
    keyed = []
    for index, (category, item) in enumerate(items):
        seen = counts[category] = counts.get(category, 0) + 1
        total = sum(1 for c, _ in items if c == category)
        keyed.append(((seen - 0.5) / total, index, item))
    return [item for *_, item in sorted(keyed, key=lambda k: k[:2])]


def subsample(corpus: Corpus, utterances: int | None) -> Corpus:
    """About ``utterances`` utterances, each category in proportion, the order kept (a c/d
    utterance brings its prompt along)."""
    if utterances is None or utterances >= len(corpus.utterances):
        return corpus
    total = len(corpus.utterances)
    chosen: list[Segment] = []
    for category in CATEGORIES:
        segments = [s for s in corpus.segments if s.category == category]
        size = sum(len(s.utterances) for s in segments)
        quota = max(1, round(utterances * size / total))
        taken = 0
        picks = _evenly(segments, quota, len(segments[0].utterances))
        for segment in picks:
            chosen.append(segment)
            taken += len(segment.utterances)
    return Corpus([s for s in corpus.segments if s in chosen])


def _evenly(segments: list[Segment], quota: int, size: int) -> list[Segment]:
    count = max(1, min(len(segments), round(quota / size)))
    step = len(segments) / count
    return [segments[int(i * step)] for i in range(count)]


# -- audio -------------------------------------------------------------------------------------


def speak(text: str, voice: Voice, seed: int | None = 0) -> np.ndarray:
    """``text`` spoken by ``voice`` at 16 kHz, leading and trailing silence trimmed.

    Piper's synthesis draws random noise; it draws from a generator seeded with ``seed`` for
    this call alone, so a benchmark hears the same clip every run whatever was synthesized
    before, at the cost of loading the voice again (~0.3 s). ``seed=None``: a new random draw
    from one shared voice."""
    if text.startswith("noise:"):
        return noise(text.removeprefix("noise:"))
    if voice.engine == "piper":
        samples, rate = _piper(text, voice, seed)
    else:
        samples, rate = _espeak(text, voice)
    if rate != RATE:
        samples = Resampler(rate, RATE)(samples, last=True)
    return trim(samples)


def _espeak(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("bench turns speaks with espeak-ng: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "u.wav"
        command = ["espeak-ng", "-v", voice.espeak_voice, "-s", str(voice.words_per_minute)]
        subprocess.run([*command, "-w", str(path), text], check=True, timeout=30)
        return read_wav(path)


def _load_piper_voice():  # noqa: ANN202 (piper.PiperVoice, imported lazily)
    from piper import PiperVoice

    from flowvoice.nodes.tts import JOE, resolve_voice

    model, config = resolve_voice(JOE)
    return PiperVoice.load(model, config)


_piper_voice = cache(_load_piper_voice)


def _seeded_piper_voice(seed: int):  # noqa: ANN202
    """A fresh voice whose noise generator starts from ``seed`` (onnxruntime seeds a
    session's random operators when it is created)."""
    import onnxruntime

    onnxruntime.set_seed(seed)
    return _load_piper_voice()


def _piper(text: str, voice: Voice, seed: int | None) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    piper = _piper_voice() if seed is None else _seeded_piper_voice(seed)
    config = SynthesisConfig(length_scale=voice.length_scale)
    chunks = [c.audio_int16_array for c in piper.synthesize(text, config)]
    return np.concatenate(chunks), piper.config.sample_rate


def trim(samples: np.ndarray, frame_ms: int = 10) -> np.ndarray:
    """``samples`` without the silence before the first and after the last loud 10 ms."""
    frame = RATE * frame_ms // 1000
    count = len(samples) // frame
    if not count:
        return samples
    frames = samples[: count * frame].astype(np.float64).reshape(count, frame)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.flatnonzero(rms > max(150.0, 0.03 * rms.max()))
    if not len(loud):
        return samples
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]


def noise(kind: str, seed: int = 7) -> np.ndarray:
    """A 200-400 ms non-speech burst: a cough, a double cough, a hiss or a thump."""
    rng = np.random.default_rng(seed + len(kind))

    def burst(ms: int, smooth: int, attack_ms: int = 15) -> np.ndarray:
        n = RATE * ms // 1000
        white = rng.standard_normal(n + smooth)
        shaped = np.convolve(white, np.ones(smooth) / smooth, "valid")[:n]
        t = np.arange(n) / RATE
        envelope = np.minimum(1.0, t / (attack_ms / 1000)) * np.exp(-t / (ms / 3000))
        out = shaped * envelope
        return out / (np.abs(out).max() or 1.0)

    if kind == "cough":
        audio = burst(250, 3)
    elif kind == "double-cough":
        audio = np.concatenate([burst(160, 3), np.zeros(RATE * 80 // 1000), burst(160, 3)])
    elif kind == "hiss":
        audio = burst(350, 1, attack_ms=40)
    elif kind == "thump":
        audio = burst(200, 12, attack_ms=3)
    else:
        raise ValueError(f"unknown noise {kind!r}")
    return (audio * 12000).astype(np.int16)


@dataclass(frozen=True)
class Clip:
    """An utterance's audio and where its parts are: ``pauses`` are (start, end) sample
    offsets of the silence between parts; the clip ends where the speech ends."""

    samples: np.ndarray
    pauses: tuple[tuple[int, int], ...]


def render(utterance: Utterance) -> Clip:
    """Speak ``utterance``: each part separately, joined by its pause."""
    pieces: list[np.ndarray] = []
    pauses: list[tuple[int, int]] = []
    offset = 0
    for index, part in enumerate(utterance.parts):
        if index:
            gap = np.zeros(RATE * utterance.pause_ms // 1000, np.int16)
            pauses.append((offset, offset + len(gap)))
            pieces.append(gap)
            offset += len(gap)
        audio = speak(part, utterance.voice)
        pieces.append(audio)
        offset += len(audio)
    return Clip(np.concatenate(pieces), tuple(pauses))
