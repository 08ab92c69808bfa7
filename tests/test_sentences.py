"""The streaming sentence splitter, fed token by token as an LLM streams."""

from __future__ import annotations

import random
import re

import anyio
import pytest

from flowvoice.frames import Sentence, TextDelta
from flowvoice.graph.registry import register
from flowvoice.graph.spec import load_graph
from flowvoice.node import Node, Port
from flowvoice.nodes.text import SentenceSplitter
from flowvoice.runtime.session import Session


def split_streaming(text: str, **kwargs) -> tuple[list[str], str]:
    """Feed ``text`` in small LLM-like pieces (a run of dots in one piece, as LLMs' tokens
    hold an ellipsis); return the sentences and the flushed tail."""
    splitter = SentenceSplitter(**kwargs)
    out: list[str] = []
    for piece in re.findall(r"\.{2,}|[^.]{1,3}|\.", text):
        out += splitter.feed(piece)
    return out, splitter.flush()


@pytest.mark.parametrize(
    ("text", "sentences", "tail"),
    [
        ("Hello there. How are you? Fine", ["Hello there.", "How are you?"], "Fine"),
        ("It costs 3.5 dollars. Cheap", ["It costs 3.5 dollars."], "Cheap"),
        ("Dr. Smith and Mrs. Jones met. Then", ["Dr. Smith and Mrs. Jones met."], "Then"),
        ("Use e.g. apples or i.e. fruit. Ok", ["Use e.g. apples or i.e. fruit."], "Ok"),
        ("J. K. Rowling wrote it. Yes", ["J. K. Rowling wrote it."], "Yes"),
        ("Wait... what happened? Nothing", ["Wait... what happened?"], "Nothing"),
        ("I see... Well then. So", ["I see...", "Well then."], "So"),
        ("I see.", ["I see."], ""),
        ('He said "stop" then. Ok', ['He said "stop" then.'], "Ok"),
        # a closing quote streamed after the sentence's end is not voiced anyway
        ('He said "stop." Then left. Ok', ['He said "stop.', "Then left."], "Ok"),
        ("Really?! Yes", ["Really?!"], "Yes"),
        ("It costs 3.", [], "It costs 3."),
        ("Wait..", [], "Wait.."),
        ("Version 2.0 is out", [], "Version 2.0 is out"),
    ],
)
def test_splits_at_sentence_ends_only(text, sentences, tail):
    assert split_streaming(text) == (sentences, tail)


def test_each_sentence_is_emitted_as_soon_as_it_ends():
    splitter = SentenceSplitter()
    assert splitter.feed("The capital of France is Paris") == []
    assert splitter.feed(".") == ["The capital of France is Paris."]  # not one token later
    assert splitter.feed(" Is it") == []
    assert splitter.feed("?") == ["Is it?"]
    assert splitter.feed(" It costs 3.") == []  # maybe 3.5
    assert splitter.feed("5 euros.") == ["It costs 3.5 euros."]
    assert splitter.flush() == ""


def test_what_carries_on_a_sentence_cut_at_its_end_is_dropped():
    splitter = SentenceSplitter()
    assert splitter.feed("Wait.") == ["Wait."]
    assert splitter.feed("..") == []  # "Wait..." streamed as "Wait." + ".."
    assert splitter.feed(' What?"') == ['What?"']
    assert splitter.feed(" Go") == []
    assert splitter.flush() == "Go"


def test_first_clause_early_only_for_the_first_sentence():
    text = "Well, the capital of France, as you know, is Paris. Also, it is big, old and nice. End"
    sentences, tail = split_streaming(text, first_clause_words=3)
    assert sentences == [
        "Well, the capital of France,",
        "as you know, is Paris.",
        "Also, it is big, old and nice.",
    ]
    assert tail == "End"


def test_long_text_without_a_sentence_end_is_emitted_in_pieces_at_spaces():
    text = "a dog has ten legs and four tails and a very long name " * 3
    pieces, tail = split_streaming(text, max_chars=40)
    assert len(pieces) >= 3 and all(len(p) <= 40 for p in pieces), pieces
    assert " ".join([*pieces, tail]).split() == text.split()  # whole words, none lost
    assert all(not p.endswith(" ") and not p.startswith(" ") for p in pieces)


def test_one_word_longer_than_max_chars_is_cut_hard():
    pieces, tail = split_streaming("A dog has " + "0" * 50, max_chars=20)
    assert pieces == ["A dog has", "0" * 20, "0" * 20]
    assert tail == "0" * 10


def test_a_sentence_end_comes_before_max_chars():
    pieces, tail = split_streaming("Short one. " + "word " * 20, max_chars=30)
    assert pieces[0] == "Short one." and all(p.startswith("word") for p in pieces[1:])
    assert split_streaming("Exactly thirty characters, ok,", max_chars=30) == (
        [],
        "Exactly thirty characters, ok,",
    )


def test_flush_resets_for_the_next_reply():
    splitter = SentenceSplitter(first_clause_words=2)
    splitter.feed("one two,")
    assert splitter.flush() == "one two,"
    assert splitter.feed("three four, five") == ["three four,"]


@register("t.deltas")
class Deltas(Node):
    """Streams a reply in 4-character deltas, then the final marker."""

    outputs = {"text": Port(TextDelta)}

    async def run(self) -> None:
        reply = "Sure. The answer is 42.5 today, I think"
        for i in range(0, len(reply), 4):
            await self.emit("text", TextDelta(text=reply[i : i + 4]))
        await self.emit("text", TextDelta(text="", final=True))


def split_by_node(params: str) -> tuple[Session, list[tuple[str, bool]]]:
    """Run t.deltas -> text.sentences with ``params`` (YAML); the sentences and final flags."""
    graph = load_graph(
        "s.yaml",
        text=f"nodes:\n  d: {{type: t.deltas}}\n  s: {{type: text.sentences, params: {params}}}\n"
        "  c: {type: test.collect}\nedges:\n  - d.text -> s.text\n  - s.sentence -> c.frames\n",
    )
    session = Session(graph)
    anyio.run(session.run)
    frames = session.nodes["c"].frames
    assert all(isinstance(f, Sentence) for f in frames)
    return session, [(f.text, f.final) for f in frames]


def test_node_flushes_tail_as_final_sentence_and_marks_trace():
    session, sentences = split_by_node("{}")
    assert sentences == [("Sure.", False), ("The answer is 42.5 today, I think", True)]
    assert "first_sentence" in session.tracer.turns[0].marks


def test_node_max_chars_param():
    _, sentences = split_by_node("{max_chars: 16}")
    assert sentences == [
        ("Sure.", False),
        ("The answer is", False),
        ("42.5 today, I", False),
        ("think", True),
    ]


def test_random_token_streams_lose_no_word():
    """Fuzz: replies streamed in random LLM-like tokens (full stops, ellipses, quotes, numbers,
    abbreviations) come out as non-empty sentences holding every word and digit in order; only
    punctuation after a sentence cut at its end may be dropped."""
    tokens = [" The", " dog", ".", "..", "...", "?", "!", '"', ")", " 3", ".", "5", " Dr", " e",
              ".g", " a", ",", " Paris", ".com", "\n", " ", " It", "?!", " yes"]  # fmt: skip
    rng = random.Random(12)
    for _ in range(300):
        stream = [rng.choice(tokens) for _ in range(rng.randint(1, 40))]
        splitter = SentenceSplitter(first_clause_words=rng.choice([0, 3]))
        out = [s for piece in stream for s in splitter.feed(piece)]
        tail = splitter.flush()
        assert all(s.strip() for s in out), (stream, out)
        words = re.findall(r"\w+", "".join(stream))
        assert re.findall(r"\w+", " ".join([*out, tail])) == words, (stream, out, tail)
