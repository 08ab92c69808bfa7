"""One conversation's llama.cpp memory (its KV cache), saved from a context that sessions share.

A ``Llama`` has one context, and its memory holds the tokens of the last prompt it saw.
llama-cpp-python reuses the longest prefix a new prompt has in common with them, so when
sessions take turns on one model, each turn re-evaluates its whole history after the shared
system prompt (~3.5 ms a token on one CPU thread). Saving a conversation's memory after its
reply and putting it back before its next turn leaves only the new user message to evaluate;
it costs ~19 KB a token of history and a copy of it per turn (~1 ms). The user's words can be
read in ahead of their turn the same way (:func:`read_in`): the turn's prompt then computes
only the words after them.
"""

from __future__ import annotations

import ctypes
from typing import Any

SEQ = 0  # llama-cpp-python's single sequence


class SavedMemory:
    """The tokens ``llama`` holds now and the memory that holds them."""

    def __init__(self, llama: Any):
        import llama_cpp

        size = llama_cpp.llama_state_seq_get_size(llama.ctx, SEQ)
        self._state = (ctypes.c_uint8 * size)()
        self._size = llama_cpp.llama_state_seq_get_data(llama.ctx, self._state, size, SEQ)
        self.tokens = llama.input_ids[: llama.n_tokens].copy()

    @property
    def nbytes(self) -> int:
        """Size of the saved memory."""
        return self._size

    def restore(self, llama: Any) -> None:
        """Put the memory back into ``llama``'s context, less its last token: the next prompt
        evaluates at least that token, so the logits it samples from are this conversation's.
        Without a usable state the context is reset (the next prompt is evaluated in full)."""
        import llama_cpp

        keep, ctx = len(self.tokens) - 1, llama.ctx
        if keep < 1 or not self._size or not self._put(ctx):
            llama.reset()
            return
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), SEQ, keep, -1)
        llama.input_ids[:keep] = self.tokens[:keep]
        llama.n_tokens = keep

    def _put(self, ctx: Any) -> bool:
        import llama_cpp

        return llama_cpp.llama_state_seq_set_data(ctx, self._state, self._size, SEQ) == self._size


def held_prefix(llama: Any, tokens: list[int]) -> int:
    """How many leading ``tokens`` ``llama``'s context holds already."""
    same = 0
    for held, token in zip(llama.input_ids[: llama.n_tokens], tokens, strict=False):
        if held != token:
            break
        same += 1
    return same


def read_in(llama: Any, prompt: str) -> int:
    """Evaluate ``prompt`` into ``llama``'s context as the opening of a later prompt (tokenized
    as llama-cpp-python tokenizes a completion prompt), computing only what follows the part
    the context holds already; returns how many tokens that was."""
    tokens = llama.tokenize(prompt.encode(), add_bos=True, special=True)
    llama.n_tokens = held_prefix(llama, tokens)  # eval drops the memory after that point
    computed = len(tokens) - llama.n_tokens
    llama.eval(tokens[llama.n_tokens :])
    return computed
