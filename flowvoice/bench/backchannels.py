"""``flowvoice bench backchannels``: does Whisper hear a backchannel as one?

Barge-in tells a backchannel from an interruption by the transcript's words
(:mod:`flowvoice.conversation.bargein`), so a hummed "mm hm" that tiny.en writes as "Amen"
interrupts the assistant. This speaks hums, worded backchannels and short interruptions in
Piper's and espeak-ng's voices, transcribes each with the shipped tiny.en as ``stt.whisper``
does (its default decoding), without and with ``stt.params.backchannel_prompt`` (the prompt for
speech over the reply), and counts the transcripts barge-in takes for a backchannel: no word
beyond the backchannel list and no interrupt word. For hums and worded backchannels more is
better; for interruptions each one counted is an interruption lost.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import date

import numpy as np

from flowvoice.bench.turns_corpus import VOICES, Voice, speak
from flowvoice.conversation.bargein import (
    DEFAULT_BACKCHANNELS,
    DEFAULT_INTERRUPT_WORDS,
    Phrases,
    words_beyond,
    words_of,
)
from flowvoice.nodes.stt import (
    BACKCHANNEL_PROMPT,
    LEAD_S,
    RATE,
    TAIL_S,
    Decoding,
    _Whisper,
    resolve_model,
)

#: The turn benchmark's voices, and more of each engine (Piper slower, other espeak-ng accents).
BENCH_VOICES = (
    *VOICES,
    Voice("piper-joe-slower", "piper", length_scale=1.6),
    Voice("espeak-en-gb-x-rp+m3", "espeak", "en-gb-x-rp+m3", 140),
    Voice("espeak-en-029", "espeak", "en-029", 170),
    Voice("espeak-en-us-nyc+m5", "espeak", "en-us-nyc+m5", 180),
    Voice("espeak-en-gb-scotland+f2", "espeak", "en-gb-scotland+f2", 160),
)
#: (group, what is said, whether barge-in should take it for a backchannel)
GROUPS = (
    ("hums", ("mm hm", "mhm", "mm", "hmm", "mm hmm", "hm", "mm hm mm hm"), True),
    ("worded backchannels", ("yeah", "okay", "uh huh", "right", "I see"), True),
    (
        "interruptions",
        (
            *("stop", "wait", "no", "what?", "why?", "thanks", "more", "now", "mine", "Mom"),
            *("name", "tell me more", "Go back", "Next one", "Louder please", "Make it shorter"),
            *("No, I meant Paris.", "What about Rome?", "Hold on, I have a question"),
            *("Stop, what is two plus two?", "Can you make it shorter please?"),
            "Sorry, can you repeat the last part?",
        ),
        False,
    ),
)
PROMPTS = (("no prompt", None), ("backchannel_prompt", BACKCHANNEL_PROMPT))


@dataclass
class Row:
    group: str
    clips: int
    #: per prompt (PROMPTS' order): transcripts taken for a backchannel
    backchannels: list[int]
    #: per prompt: a few transcripts heard the other way than wanted
    examples: list[list[str]]


_BACKCHANNELS, _INTERRUPT_WORDS = Phrases(DEFAULT_BACKCHANNELS), Phrases(DEFAULT_INTERRUPT_WORDS)


def heard_as_backchannel(text: str) -> bool:
    """Whether barge-in takes ``text`` for a backchannel (nothing, or only backchannels)."""
    words = words_of(text)
    return not _INTERRUPT_WORDS.found_in(words) and words_beyond(_BACKCHANNELS, words) == 0


def padded(samples: np.ndarray) -> np.ndarray:
    """The clip with the silence stt.whisper puts around a VAD segment."""
    lead, tail = np.zeros(int(LEAD_S * RATE), np.int16), np.zeros(int(TAIL_S * RATE), np.int16)
    return np.concatenate([lead, samples.astype(np.int16), tail])


def measure(
    groups: tuple[tuple[str, tuple[str, ...], bool], ...] = GROUPS,
    voices: tuple[Voice, ...] = BENCH_VOICES,
    progress: bool = True,
) -> list[Row]:
    """One row per group: every utterance in every voice, with each prompt."""
    whisper = _Whisper(resolve_model("tiny.en"), "cpu", "int8", 0)
    decoding = Decoding(language="en")
    rows = []
    for group, texts, wanted in groups:
        row = Row(group, 0, [0] * len(PROMPTS), [[] for _ in PROMPTS])
        for text in texts:
            for voice in voices:
                audio = padded(speak(text, voice))
                row.clips += 1
                for i, (_, prompt) in enumerate(PROMPTS):
                    heard = whisper.transcribe(audio, decoding, prompt)
                    taken = heard_as_backchannel(heard)
                    row.backchannels[i] += taken
                    if taken != wanted and len(row.examples[i]) < 6:
                        row.examples[i].append(f"{text!r} ({voice.name}) -> {heard!r}")
            if progress:
                print(f"  {group}: {text!r} done", flush=True)
        rows.append(row)
    return rows


def main(markdown: bool = False) -> int:
    print(
        f"backchannels benchmark: tiny.en int8, {len(BENCH_VOICES)} voices, "
        f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {date.today()}"
    )
    rows = measure()
    header = " | ".join(label for label, _ in PROMPTS)
    print(f"\n| transcripts taken for a backchannel | clips | {header} |")
    print("|---|---|" + "---|" * len(PROMPTS))
    for r in rows:
        print(f"| {r.group} | {r.clips} | " + " | ".join(map(str, r.backchannels)) + " |")
    if not markdown:
        for r in rows:
            for (label, _), examples in zip(PROMPTS, r.examples, strict=True):
                if examples:
                    print(f"\n{r.group}, {label}, heard the other way:")
                    print("\n".join(f"  {e}" for e in examples))
    return 0
