"""The transcript's wording: which endings leave a turn unfinished, punctuation aside."""

from __future__ import annotations

import pytest

from flowvoice.conversation.endings import unfinished


@pytest.mark.parametrize(
    "text",
    [
        "Could you tell me about the",  # a trailing article
        "I wanted to ask you about.",  # a preposition, closed by Whisper's "."
        "If we leave at noon.",  # an opening subordinate clause, no main clause yet
        "Before I forget",
        "Well.",  # a lone discourse marker
        "Actually",
        "So how should I?",  # a question cut after its subject
        "Can you",
        "The problem is",  # an announcing subject
        "My PIN is 4 7",  # a number being dictated
        "Call me back at oh two",
        "I think it would be",
        "Let me see, um",
    ],
)
def test_unfinished_endings(text):
    assert unfinished(text)


@pytest.mark.parametrize(
    "text",
    [
        "What is 7 plus 5?",  # a question may end on a number
        "How many legs does a spider have?",
        "Thank you.",
        "If I had a dog, what should I call it?",  # the main clause came
        "Explain what a noun is.",
        "Tell me a joke.",
        "Where is the nearest station",
        "When does the shop open?",  # "when" asks here, it opens no clause
        "Okay.",
        "",
    ],
)
def test_finished_endings(text):
    assert not unfinished(text)
