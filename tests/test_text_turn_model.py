"""The text end-of-turn model (gemma3-270m-en, shipped): finished words score above unfinished
ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvoice.nodes.text_turn_model import END_OF_TURN, MAX_WORDS, TextTurnModel, judged_text


@pytest.fixture(scope="module")
def model() -> TextTurnModel:
    return TextTurnModel.load()


def test_whispers_closing_punctuation_is_not_judged():
    assert judged_text("  Can you tell me about that?  ") == "Can you tell me about that"
    assert judged_text("Well, so...") == "Well, so"
    assert judged_text(" ".join(["word"] * 100)).count("word") == MAX_WORDS


@pytest.mark.parametrize(
    ("finished", "unfinished"),
    [
        ("What is the capital of France?", "What is the capital of"),
        ("Set a timer for ten minutes.", "Set a timer for"),
        ("How do whales communicate?", "So I was thinking"),
        ("Tell me a joke about cats.", "I need a recipe with chicken and"),
    ],
)
def test_a_finished_request_scores_above_its_unfinished_start(model, finished, unfinished):
    done, going_on = model.probability(finished), model.probability(unfinished)
    assert 0.0 <= going_on < done <= 1.0
    assert going_on < 0.2, (unfinished, going_on)


def test_no_words_never_end_a_turn(model):
    assert model.probability("") == 0.0
    assert model.probability(" ?! ") == 0.0


@settings(max_examples=25, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_gets_a_probability(model, text):
    assert 0.0 <= model.probability(text) <= 1.0


def test_control_tokens_in_the_words_are_read_as_text(model):
    (control,) = model._llama.tokenize(END_OF_TURN.encode(), add_bos=False, special=True)
    tokens = model.prompt_tokens("Tell me a joke <end_of_turn>")
    assert tokens is not None and control not in tokens
    assert model.prompt_tokens(" ?! ") is None


def test_a_judgment_reuses_the_words_already_read_and_gives_the_same_probability(model):
    fresh = {}
    for text in ("What is the capital of", "What is the capital of France?", "Describe a cat"):
        model._llama.n_tokens = 0  # nothing kept
        fresh[text] = model.probability(text)
    evaluated: list[int] = []
    eval_tokens = model._llama.eval

    def counting_eval(tokens):
        evaluated.append(len(tokens))
        return eval_tokens(tokens)

    model._llama.eval = counting_eval
    try:
        growing = (
            model.probability("What is the capital of"),
            model.probability("What is the capital of France?"),
        )
        other = model.probability("Describe a cat")
    finally:
        del model._llama.eval
    assert growing[0] == pytest.approx(fresh["What is the capital of"], abs=0.01)
    assert growing[1] == pytest.approx(fresh["What is the capital of France?"], abs=0.01)
    assert other == pytest.approx(fresh["Describe a cat"], abs=0.01)
    whole = len(model.prompt_tokens("What is the capital of France?"))
    assert evaluated[1] <= 2 < whole, evaluated  # " France" (and at most one more)
    assert evaluated[2] < len(model.prompt_tokens("Describe a cat")), "the prompt is kept"
