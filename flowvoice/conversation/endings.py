"""What a transcript's wording says about whether the user has finished their turn.

Two readings, for the turn nodes: :func:`classify_ending` trusts the STT's punctuation
(``turn.dynamic``); :func:`unfinished` does not (``turn.smart``: Whisper writes a paused "Can
you tell me about the" as "about that?") and looks at the words alone: a trailing
continuation word or filler, a comma, an open verb, a number being dictated, an opening
subordinate clause with no main clause yet ("If it rains tomorrow"), a lone discourse
marker ("Well", "Actually"), a question cut after its subject ("Can you"), or an
announcing "the thing is".
"""

from __future__ import annotations

import re
from typing import Literal

Ending = Literal["complete", "incomplete", "open"]

_CONTINUATION_WORDS = """
and or but so because cause since although though unless until while whereas if than as to
the a an my your our their that which who whose where when of for with without from into onto
at between like um uh er erm hmm ah also plus
"""
#: Words that leave a clause unfinished when the user pauses after them.
CONTINUATIONS = frozenset(_CONTINUATION_WORDS.split())

#: Besides the continuation words, endings that leave a sentence open: a preposition or a
#: verb still waiting for its complement ("it would be", "you should"). Not "is": "Explain
#: what photosynthesis is." ends a question.
_OPEN_ENDING_WORDS = "about be been being would should could might must"
OPEN_ENDINGS = frozenset(_OPEN_ENDING_WORDS.split())
#: Number words: a statement that ends on one may be dictating more.
_NUMBER_WORDS = """
zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred
thousand
"""
NUMBER_WORDS = frozenset(_NUMBER_WORDS.split())
#: Words that open a subordinate clause: until its main clause comes, the sentence goes on.
SUBORDINATORS = frozenset(
    [
        "if",
        "after",
        "before",
        "because",
        "although",
        "though",
        "unless",
        "once",
        "since",
        "while",
        "whenever",
        "until",
    ]
)
#: Words that open a turn without saying anything yet ("Well, ...", "Actually, ...").
DISCOURSE_MARKERS = frozenset(
    [
        "well",
        "actually",
        "first",
        "firstly",
        "second",
        "secondly",
        "so",
        "anyway",
        "basically",
        "honestly",
        "also",
        "now",
        "listen",
        "look",
        "then",
        "and",
        "but",
    ]
)
#: Words that open a question; a question that ends on a number is finished ("What is 12
#: times 3?"), a statement that does is being dictated ("My number is 555 ...").
QUESTION_OPENERS = frozenset(
    [
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "am",
        "was",
        "were",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "have",
        "has",
    ]
)
_AUXILIARIES = "can could will would shall should do does did may might must is are am was were"
_SUBJECTS = "i you we they he she"
#: A question cut after its subject: "Can you", "How do I", "Should we".
_CUT_QUESTION = re.compile(
    rf"\b(?:{'|'.join(_AUXILIARIES.split())}) (?:{'|'.join(_SUBJECTS.split())})$"
)
#: "The thing is ...": a subject that announces what follows.
_ANNOUNCING = re.compile(r"\b(?:thing|problem|question|point|truth|issue|reason|idea) is$")
_WORD = re.compile(r"[\w']+")


def classify_ending(text: str) -> Ending:
    """How a transcript ends: a finished sentence, an unfinished clause, or unknown.

    "?" and "!" finish a sentence; a trailing continuation word ("and", "to", "um", ...),
    comma, colon, dash or ellipsis leaves it unfinished, even before a final "." (Whisper
    often closes a paused fragment with one); a "." finishes anything else.
    """
    text = text.strip().strip("\"')]")
    if not text:
        return "open"
    if text.endswith(("...", "\u2026", ",", ";", ":", "-", "\u2013", "\u2014")):
        return "incomplete"
    if text[-1] in "?!":
        return "complete"
    words = _WORD.findall(text.lower())
    if words and words[-1] in CONTINUATIONS:
        return "incomplete"
    return "complete" if text[-1] == "." else "open"


def unfinished(text: str) -> bool:
    """The transcript leaves the turn unfinished, whatever closing punctuation Whisper gave
    (see the module docs for the readings)."""
    text = text.strip()
    if not text.endswith(("...", "\u2026")):
        text = text.rstrip("?!.")
    if classify_ending(text) == "incomplete":
        return True
    words = _WORD.findall(text.lower())
    if not words:
        return False
    last = words[-1]
    if last in NUMBER_WORDS or last.isdigit():
        return words[0] not in QUESTION_OPENERS
    if last in OPEN_ENDINGS or all(w in DISCOURSE_MARKERS for w in words):
        return True
    if words[0] in SUBORDINATORS and "," not in text:
        return True
    spoken = " ".join(words)
    return _CUT_QUESTION.search(spoken) is not None or _ANNOUNCING.search(spoken) is not None
