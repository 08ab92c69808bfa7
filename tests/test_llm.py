"""llm.llamacpp with the packaged gemma3-270m (its English copy by default): answers, history,
interruption, model errors."""

from __future__ import annotations

import re
import threading
import time

import anyio
import pytest
from harness import run_graph, run_node, wait_for_mark

from flowvoice.frames import TextDelta, UserTurn
from flowvoice.node import NodeSetupError
from flowvoice.nodes.chat_history import ChatHistory
from flowvoice.nodes.llm import resolve_gguf
from flowvoice.runtime.session import SessionError

pytestmark = pytest.mark.anyio

QUESTIONS = [
    "What is the capital of France?",
    "What color is the sky?",
    "Can you name a big animal?",
]


def replies(deltas: list[TextDelta]) -> list[str]:
    """The text of each finished reply (a reply ends with a final TextDelta)."""
    out, current = [], []
    for delta in deltas:
        if delta.final:
            out.append("".join(current))
            current = []
        else:
            current.append(delta.text)
    return out


async def test_answers_each_question_briefly_and_keeps_history():
    prompts: list[UserTurn] = []

    def script():
        for question in QUESTIONS:
            prompts.append(UserTurn(text=question))
            yield "prompt", prompts[-1]
            yield 1.0

    result = await run_node("llm.llamacpp", {}, script(), timeout=60)
    answers = replies(result.frames("text"))
    assert len(answers) == len(QUESTIONS), answers
    for answer in answers:
        assert answer.strip() and answer == answer.lstrip(), answers
        assert len(re.findall(r"[.!?]+(?:\s|$)", answer.strip())) <= 2, answer
    history = result.session.nodes["node"].history
    assert [m.content for m in history.messages] == [
        text for pair in zip(QUESTIONS, answers, strict=True) for text in pair
    ]
    firsts = [
        r
        for i, r in enumerate(result.received["text"])
        if i == 0 or result.received["text"][i - 1].frame.final
    ]
    ttft = [(r.t_ns - p.t_ns) / 1e6 for r, p in zip(firsts, prompts, strict=True)]
    print(f"answers {answers}; first token after the prompt: {[round(t) for t in ttft]} ms")
    assert max(ttft) < 15000  # ~0.2 s idle; generous for a loaded machine (bench e2e times it)


async def test_repeat_penalty_stops_a_runaway_reply():
    # Whisper sometimes hears "legs" as "lands"; without a penalty gemma3-270m then answers
    # "A dog has 1000000000..." with no sentence end until max_tokens.
    async def reply(params: dict) -> str:
        script = [("prompt", UserTurn(text="How many lands does a dog have?"))]
        result = await run_node("llm.llamacpp", {"max_tokens": 48, **params}, script)
        return replies(result.frames("text"))[0]

    runaway, answer = await reply({"repeat_penalty": 1.0}), await reply({})
    print(f"penalty 1.0: {runaway!r}; default: {answer!r}")
    assert "0" * 20 in runaway
    assert re.fullmatch(r"[^.!?]+[.!?]", answer.strip()) and "0" * 5 not in answer, answer


async def test_interrupt_stops_generation_promptly_and_records_the_cut_reply():
    # chat style on this base model rambles until max_tokens: a long generation to cut
    params = {"prompt_style": "chat", "max_tokens": 120}
    interrupted_at: list[int] = []
    threads_before = threading.active_count()

    async def interrupt_after_first_token(context) -> None:
        await wait_for_mark(context, 0, "first_token")
        await anyio.sleep(0.2)
        interrupted_at.append(time.monotonic_ns())
        await context.new_turn("barge-in")

    script = [
        ("prompt", UserTurn(text="What is the capital of France?")),
        interrupt_after_first_token,
        0.5,
        ("prompt", UserTurn(text="What color is the sky?")),
    ]
    result = await run_node("llm.llamacpp", params, script, timeout=60)
    old = [r for r in result.received["text"] if r.frame.turn == 0]
    assert old and not any(r.frame.final for r in old), "the cut reply must not be finished"
    stop_ms = (old[-1].t_ns - interrupted_at[0]) / 1e6
    print(f"last token {stop_ms:.0f} ms after the interrupt")
    assert stop_ms < 1000  # generous for a busy machine: uncut, the reply would go on
    new = [r.frame for r in result.received["text"] if r.frame.turn == 1]
    assert new and new[-1].final
    history = result.session.nodes["node"].history.messages
    cut = history[1]
    assert cut.interrupted and cut.content == "".join(r.frame.text for r in old).strip()
    assert cut.rendered.endswith("...")
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert threading.active_count() <= threads_before + 1  # the anyio worker may idle


async def test_sessions_sharing_the_model_evaluate_only_their_new_message(monkeypatch):
    from llama_cpp import Llama

    evals: list[tuple[int, int]] = []  # (monotonic ns, tokens) per real eval call
    original = Llama.eval

    def counting_eval(self, tokens):
        evals.append((time.monotonic_ns(), len(tokens)))
        return original(self, tokens)

    monkeypatch.setattr(Llama, "eval", counting_eval)
    asked: list[int] = []

    async def mark(_context) -> None:
        asked.append(time.monotonic_ns())

    script = [
        ("a.prompt", UserTurn(text="What is the capital of France?")),
        3.0,
        ("b.prompt", UserTurn(text="Can you name a big animal?")),  # b takes the context over
        3.0,
        mark,
        ("a.prompt", UserTurn(text="What color is the sky?")),
        3.0,
    ]
    nodes = {"a": ("llm.llamacpp", {}), "b": ("llm.llamacpp", {})}
    result = await run_graph(nodes, [], script, ["a.prompt", "b.prompt"], timeout=90)
    answers = replies(result.frames("a.text"))
    assert len(answers) == 2 and "blue" in answers[1].lower(), answers
    first_eval = next(n for t, n in evals if t > asked[0])
    llama = result.session.nodes["a"]._model.engine.llama
    message = len(llama.tokenize(b"\nUser: What color is the sky?\nAssistant:", add_bos=False))
    print(f"a's second turn evaluated {first_eval} prompt tokens (its new message: {message})")
    assert first_eval <= message + 2  # not a's first exchange again


def test_saved_memory_restores_a_conversation_exactly():
    import llama_cpp
    import numpy as np

    from flowvoice.nodes.llama_memory import SavedMemory

    llama = llama_cpp.Llama(str(resolve_gguf("gemma3-270m")), n_ctx=512, verbose=False)
    try:
        mine = llama.tokenize(b"User: What is the capital of France?\nAssistant: Paris.\nUser:")
        other = llama.tokenize(b"Something else entirely, and longer. " * 12)
        more = llama.tokenize(b" And of Spain?\nAssistant:", add_bos=False)

        def next_logits(tokens: list[int]) -> np.ndarray:
            llama.eval(tokens)
            row = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
            return np.ctypeslib.as_array(row, shape=(llama.n_vocab(),)).copy()

        llama.eval(mine[:-1])
        expected = next_logits(mine[-1:] + more)  # the conversation never left the context
        llama.reset()
        llama.eval(mine)
        saved = SavedMemory(llama)
        llama.reset()
        llama.eval(other)  # another session's turn
        saved.restore(llama)
        assert llama.n_tokens == len(mine) - 1
        assert np.array_equal(next_logits(mine[-1:] + more), expected)
    finally:
        llama.close()


async def test_unknown_model_is_a_clear_error_fast():
    start = time.monotonic()
    with pytest.raises(SessionError) as info:
        await run_node("llm.llamacpp", {"model": "no-such-model"})
    assert time.monotonic() - start < 5
    assert isinstance(info.value.error, NodeSetupError)
    assert "no-such-model" in str(info.value) and "gemma3-270m" in str(info.value)


def test_packaged_model_is_assembled_once():
    path = resolve_gguf("gemma3-270m")
    mtime = path.stat().st_mtime_ns
    start = time.monotonic()
    assert resolve_gguf("gemma3-270m") == path
    assert time.monotonic() - start < 0.5 and path.stat().st_mtime_ns == mtime


def test_chat_history_prompts():
    history = ChatHistory("Be brief.", max_turns=2)
    for i in range(3):
        history.add_user(f"question {i}\nwith a newline")
        history.add_assistant(f"answer {i}.", interrupted=i == 2)
    history.add_user("last?")
    assert history.messages[0].content == "question 2\nwith a newline"
    prompt = history.completion_prompt(examples=(("Hi?", "Hello."),))
    assert prompt == (
        "Be brief.\n\nUser: Hi?\nAssistant: Hello.\n"
        "User: question 2 with a newline\nAssistant: answer 2...\nUser: last?\nAssistant:"
    )
    assert history.chat_messages()[0] == {"role": "system", "content": "Be brief."}
    assert history.chat_messages()[2] == {"role": "assistant", "content": "answer 2..."}
    history.add_assistant("A long reply that was cut.")
    history.cut_last_reply("A long")
    assert history.messages[-1].rendered == "A long..."
    assert ChatHistory.completion_stop() == ["\nUser:", "\n"]


def test_completion_prompt_shows_only_the_latest_heard_interruption():
    history = ChatHistory("Be brief.")
    for question, heard in [("France?", "The capital"), ("Germany?", ""), ("Italy?", "It is")]:
        history.add_user(question)
        history.add_assistant(heard, interrupted=True)
    history.add_user("Spain?")
    prompt = history.completion_prompt(examples=())
    # older cut replies would become the pattern a small base model copies ("The capital...")
    assert prompt == "Be brief.\n\nUser: Italy?\nAssistant: It is...\nUser: Spain?\nAssistant:"
    assert [m["content"] for m in history.chat_messages()[1:]] == [
        "France?",
        "The capital...",
        "Germany?",
        "...",
        "Italy?",
        "It is...",
        "Spain?",
    ]
    history.add_assistant("", interrupted=True)  # nothing of the reply was heard
    history.add_user("Japan?")
    assert history.completion_prompt(examples=()).endswith("\nUser: Japan?\nAssistant:")
    assert "Spain?" not in history.completion_prompt(examples=())


def test_answers_normally_after_replies_cut_early():
    """gemma3-270m answered "..." to everything after one reply cut before a word was heard."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(resolve_gguf("gemma3-270m")), n_ctx=1024, verbose=False)
    history = ChatHistory()
    for question in ("What is the capital of France?", "What is the capital of Germany?"):
        history.add_user(question)
        history.add_assistant("", interrupted=True)
    history.add_user("What is the capital of Italy?")
    try:
        out = llama.create_completion(
            history.completion_prompt(),
            max_tokens=24,
            temperature=0.0,
            repeat_penalty=1.1,
            stop=history.completion_stop(),
        )
    finally:
        llama.close()
    assert "rome" in out["choices"][0]["text"].lower(), out


async def test_the_users_words_are_read_in_while_they_speak(monkeypatch):
    # The turn node passes on the user's words from each partial transcript; the model reads
    # the prompt up to them, so the turn's prompt computes only the words after them.
    from llama_cpp import Llama

    from flowvoice.conversation import Conversation

    evaluated: list[int] = []  # tokens per evaluation
    evaluate = Llama.eval

    def counted(self: Llama, tokens: list[int]) -> None:
        evaluated.append(len(tokens))
        evaluate(self, tokens)

    monkeypatch.setattr(Llama, "eval", counted)

    async def answer(read_ahead: bool) -> tuple[str, int]:
        asked_at: list[int] = []

        def hear(words: str):
            async def step(context) -> None:
                Conversation.of(context).user_words(words)

            return step

        async def ask(context) -> None:
            asked_at.append(len(evaluated))

        script = [
            hear("What is"),
            0.5,
            hear("What is the capital?"),  # Whisper closes a partial with "?"
            0.5,
            ask,
            ("prompt", UserTurn(text="What is the capital of France?")),
            3.0,
        ]
        result = await run_node("llm.llamacpp", {"read_ahead": read_ahead}, script, timeout=60)
        (reply,) = replies(result.frames("text"))
        return reply, evaluated[asked_at[0]]  # the turn's prompt, evaluated first

    reply, prompt_tokens = await answer(read_ahead=True)
    unread_reply, unread_prompt_tokens = await answer(read_ahead=False)
    assert "Paris" in reply and "Paris" in unread_reply, (reply, unread_reply)
    # "User: What is the capital" was read in: its last word (computed again for the logits),
    # " of France?" and the assistant's cue are left
    assert prompt_tokens + 3 <= unread_prompt_tokens, (prompt_tokens, unread_prompt_tokens)
