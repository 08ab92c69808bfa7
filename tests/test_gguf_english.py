"""gemma3-270m-en, the English copy of the packaged gemma3-270m: what it keeps, and that it
reads, writes and answers English as the full model does."""

from __future__ import annotations

import time

import numpy as np
import pytest

from flowvoice.nodes.gguf_english import NORMAL, kept_tokens
from flowvoice.nodes.llm import GEMMA, GEMMA_EN, resolve_gguf

CONTROL, BYTE = 3, 6


def test_keeps_control_bytes_and_the_frequent_ascii_pieces():
    tokens = ["<pad>", "<unused0>", "<0xC3>", "▁the", "ing", "▁été", "▁zygote", "é", "?", "▁"]
    types = np.array([CONTROL, CONTROL, BYTE] + [NORMAL] * 7)
    kept = [tokens[i] for i in kept_tokens(tokens, types, merges=6)]
    # in merge order: "▁zygote" is past the first 6, "▁été" and "é" are not ASCII; single ASCII
    # characters stay wherever the vocabulary lists them
    assert kept == ["<pad>", "<0xC3>", "▁the", "ing", "?", "▁"]


@pytest.fixture(scope="module")
def models():
    llama_cpp = pytest.importorskip("llama_cpp")
    full = llama_cpp.Llama(str(resolve_gguf(GEMMA)), n_ctx=1024, verbose=False)
    english = llama_cpp.Llama(str(resolve_gguf(GEMMA_EN)), n_ctx=1024, verbose=False)
    yield full, english
    full.close()
    english.close()


def pieces(llama, text: str) -> list[bytes]:
    return [llama.detokenize([t]) for t in llama.tokenize(text.encode(), add_bos=False)]


def test_english_copy_is_derived_once():
    path = resolve_gguf(GEMMA_EN)
    mtime = path.stat().st_mtime_ns
    start = time.monotonic()
    assert resolve_gguf(GEMMA_EN) == path != resolve_gguf(GEMMA)
    assert time.monotonic() - start < 0.5 and path.stat().st_mtime_ns == mtime


def test_reads_english_as_the_full_model_and_other_text_byte_by_byte(models):
    full, english = models
    assert 30_000 < english.n_vocab() < full.n_vocab() // 2
    text = "Hi! Could you remind me at 7:30 tomorrow, please? I'd like the weather first."
    assert pieces(english, text) == pieces(full, text)
    for text in ("Café au lait ☕ in 東京", "<start_of_turn> is said, not a control token"):
        tokens = english.tokenize(text.encode(), add_bos=False)
        assert english.detokenize(tokens).decode() == text
    turn = english.tokenize(b"<start_of_turn>user\n", add_bos=True, special=True)
    assert english.detokenize(turn[1:2], special=True) == b"<start_of_turn>"


def test_answers_as_the_full_model(models):
    from flowvoice.nodes.chat_history import ChatHistory

    history = ChatHistory()
    history.add_user("What is the capital of France?")
    replies = [
        llama.create_completion(
            history.completion_prompt(),
            max_tokens=24,
            temperature=0,
            stop=ChatHistory.completion_stop(),
        )["choices"][0]["text"]
        for llama in models
    ]
    assert replies[0] == replies[1] and "Paris" in replies[1]
