"""Streaming sentence splitter: LLM text deltas in, sentences out as soon as each one ends."""

from __future__ import annotations

import re

from pydantic import Field

from flowvoice.frames import Frame, Sentence, TextDelta
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, Port

ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "a.m",
        "p.m",
        "u.s",
        "no",
        "approx",
        "dept",
        "est",
        "fig",
        "inc",
        "ltd",
    ]
)
# A candidate end: terminal punctuation (runs like "?!" or "..."), optional closing quotes or
# brackets, then whitespace. The whitespace is required so "3.5" and "e.g." mid-token wait.
_END = re.compile(r"([.!?]+)([\"')\]]*)\s+")
# The same at the very end of the text so far: a sentence that ends there is spoken without
# waiting for the next token (on a CPU one token of the LLM is ~15 ms) unless it may go on.
_END_NOW = re.compile(r"([.!?]+)([\"')\]]*)$")
# What the next text may carry on of a sentence already cut at its end: "..." sent as "." + "..".
_CARRIED_ON = re.compile(r"^[.!?\"')\]]+")
_CLAUSE = re.compile(r"[,;:\u2014]\s+|\s[-\u2013]\s")
_LAST_SPACE = re.compile(r"\S\s+(\S*)$")  # group 1: the (maybe unfinished) last word


def may_end_sentence(piece: str) -> bool:
    """Whether a streamed ``piece`` of text ends with a sentence's end (so the splitter may
    emit a sentence with it)."""
    return _END_NOW.search(piece.rstrip()) is not None


class SentenceSplitter:
    """Incremental splitter: ``feed`` text, get back the sentences completed so far."""

    def __init__(self, first_clause_words: int = 0, min_chars: int = 2, max_chars: int = 200):
        self.first_clause_words = first_clause_words
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._buffer = ""
        self._emitted = 0
        self._cut_at_end = False  # the last sentence was cut where the text ended

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        if self._cut_at_end and self._buffer:
            self._buffer = _CARRIED_ON.sub("", self._buffer)
            self._cut_at_end = not self._buffer
        out: list[str] = []
        while (sentence := self._next()) is not None:
            out.append(sentence)
        return out

    def flush(self) -> str:
        """The unfinished tail (end of the reply), and reset for the next reply."""
        tail, self._buffer, self._emitted = self._buffer.strip(), "", 0
        self._cut_at_end = False
        return tail

    def _next(self) -> str | None:
        for match in _END.finditer(self._buffer):
            cut = match.end()
            candidate = self._buffer[: match.start(2) + len(match.group(2))].strip()
            if self._is_boundary(candidate, match.group(1), self._buffer[cut:]):
                return self._take(cut, candidate)
        if (end := _END_NOW.search(self._buffer)) and self._ends_now(end):
            self._cut_at_end = True
            return self._take(len(self._buffer), self._buffer.strip())
        if self._emitted == 0 and self.first_clause_words:
            for match in _CLAUSE.finditer(self._buffer):
                clause = self._buffer[: match.start() + 1].strip()
                if len(clause.split()) >= self.first_clause_words:
                    return self._take(match.end(), clause)
        if len(self._buffer) > self.max_chars:  # no end in sight: speak what there is
            head = self._buffer[: self.max_chars + 1]
            space = _LAST_SPACE.search(head.lstrip())  # a space after the first word
            cut = len(head) - len(space.group(1)) if space else self.max_chars
            return self._take(cut, self._buffer[:cut].strip())
        return None

    def _take(self, cut: int, sentence: str) -> str:
        self._buffer = self._buffer[cut:]
        self._emitted += 1
        return sentence

    def _ends_now(self, end: re.Match[str]) -> bool:
        """Whether the text so far ends a sentence whatever comes next: not "3." (3.5), and
        not a run of dots that may grow into an ellipsis."""
        before = self._buffer[: end.start()]
        if end.group(1) == "." and before[-1:].isdigit():
            return False
        return self._is_boundary(self._buffer.strip(), end.group(1), "")

    def _is_boundary(self, candidate: str, punct: str, rest: str) -> bool:
        if len(candidate) < self.min_chars:
            return False
        if punct == ".":
            last_word = candidate.rsplit(None, 1)[-1].rstrip(".").lower()
            if last_word in ABBREVIATIONS or re.fullmatch(r"[a-z]", last_word):
                return False  # "Dr. Smith", "J. K. Rowling"
        # An ellipsis may trail into the same sentence: decide on the next word.
        return not (punct.startswith("..") and (not rest or rest[:1].islower()))


class SentencesParams(NodeParams):
    first_clause_words: int = Field(
        0,
        ge=0,
        description="Emit the first clause of a reply early (at a comma, colon, dash) once it "
        "has this many words, so TTS starts sooner; 0 waits for the full first sentence.",
    )
    min_chars: int = Field(2, ge=1, description="Shortest text that counts as a sentence.")
    max_chars: int = Field(
        200,
        ge=10,
        description="Longest text held without a sentence end: past it the text up to the "
        "last space (or this many characters of one long word) is emitted as a piece.",
    )


@register("text.sentences")
class Sentences(Node):
    """Splits streamed reply text into sentences, emitting each as soon as it ends.

    A sentence whose end is the last text so far is emitted then, not one token later, unless
    it may go on ("3." may be 3.5; a run of dots may grow into an ellipsis); the dots or a
    closing quote that then follow are dropped. The cost: "example.com" streamed as "example."
    + "com" is spoken in two pieces. Handles abbreviations (Dr., e.g.), decimals (3.5),
    initials and ellipses; text that runs past ``max_chars`` without a sentence end is emitted
    in pieces broken at a space, so a rambling reply is spoken as it streams. Flushes the tail
    when the reply ends, marking the last sentence ``final`` (an empty final sentence when
    nothing is left, so downstream nodes always see the end of a reply).
    """

    inputs = {"text": Port(TextDelta)}
    outputs = {"sentence": Port(Sentence)}
    Params = SentencesParams
    params: SentencesParams
    preemptible = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        self.splitter = SentenceSplitter(p.first_clause_words, p.min_chars, p.max_chars)

    async def process(self, port: str, frame: Frame) -> None:
        assert isinstance(frame, TextDelta)
        for sentence in self.splitter.feed(frame.text):
            self.context.mark("first_sentence", frame.turn)
            await self.emit("sentence", Sentence(text=sentence))
        if frame.final:
            tail = self.splitter.flush()
            if tail:
                self.context.mark("first_sentence", frame.turn)
            await self.emit("sentence", Sentence(text=tail, final=True))

    async def on_interrupt(self, turn: int) -> None:
        self.splitter.flush()
