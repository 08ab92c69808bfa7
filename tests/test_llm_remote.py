"""llm.openai against llama_cpp.server and llm.ollama against an Ollama-protocol server, both
answering with the shipped gemma3-270m: streaming, barge-in, server down, wrong model, bad key.
"""

from __future__ import annotations

import re
import sys
import time

import anyio
import pytest
from harness import run_graph, run_node
from llm_servers import (
    ALIAS,
    OllamaRecord,
    bound_socket,
    llama_server,
    ollama_app,
    serve_app,
    wait_listening,
)
from test_tts_realtime import ENGINE, needs_realtimetts

from flowvoice.frames import TextDelta, UserTurn
from flowvoice.runtime.session import SessionError

pytestmark = pytest.mark.anyio
KEY_ENV = "FLOWVOICE_TEST_LLM_KEY"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    with llama_server(tmp_path_factory.mktemp("llama")) as server:
        yield server


@pytest.fixture
def openai_params(llama, monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.setenv(KEY_ENV, llama.api_key)
    return {
        "model": ALIAS,
        "base_url": llama.url,
        "api_key_env": KEY_ENV,
        "prompt_style": "completion",
        "max_tokens": 48,
    }


@pytest.fixture
def ollama(llama):
    pytest.importorskip("ollama")
    record = OllamaRecord()
    with serve_app(ollama_app(llama, record), bound_socket()) as url:
        wait_listening(url)
        yield url, record


def reply_text(frames) -> str:
    return "".join(f.text for f in frames if isinstance(f, TextDelta))


def barge_in_after_first_token(turn: int, at: list[int]):
    """A script step: wait for ``turn``'s first token, then raise the turn (barge-in)."""

    async def step(context) -> None:
        with anyio.fail_after(30):
            while context.trace(turn) is None or "first_token" not in context.trace(turn).marks:
                await anyio.sleep(0.002)
        at.append(time.monotonic_ns())
        await context.new_turn("barge-in")

    return step


def assert_nothing_old_after(result, turn: int, t_ns: int) -> None:
    late = [f for f in result.frames("text") if f.turn <= turn and f.t_ns > t_ns]
    assert late == [], f"turn {turn} still emitted {[f.text for f in late]}"


# -- llm.openai --------------------------------------------------------------------------------


async def test_openai_streams_a_real_answer_and_keeps_history(openai_params):
    script = [("prompt", UserTurn(text=QUESTION)), ("prompt", UserTurn(text="And of Italy?"))]
    result = await run_node("llm.openai", openai_params, script)
    frames = result.frames("text")
    ends = [i for i, f in enumerate(frames) if f.final]
    assert len(ends) == 2 and all(frames[i].text == "" for i in ends)
    first, second = frames[: ends[0] + 1], frames[ends[0] + 1 :]
    assert len(first) > 3, "streamed in pieces"
    assert "Paris" in reply_text(first)
    assert reply_text(second).strip(), "the second turn was answered too"
    assert "first_token" in result.session.tracer.turns[0].marks
    history = result.session.nodes["node"].history.messages
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1].content == reply_text(first).strip() and not history[1].interrupted
    assert result.events_of("error") == []


async def test_openai_chat_style_streams(openai_params):
    params = {**openai_params, "prompt_style": "chat", "max_tokens": 12, "extra_body": {"top_k": 1}}
    result = await run_node("llm.openai", params, [("prompt", UserTurn(text=QUESTION))])
    frames = result.frames("text")
    assert frames[-1].final and reply_text(frames).strip()
    assert result.events_of("error") == []


async def test_openai_interrupt_closes_the_stream(openai_params, llama):
    # the base model rambles in chat style: a long reply to interrupt
    params = {**openai_params, "prompt_style": "chat", "max_tokens": 1000}
    before = llama.disconnects()
    at: list[int] = []
    script = [
        ("prompt", UserTurn(text="Tell me a long story about a dragon.")),
        barge_in_after_first_token(0, at),
        ("prompt", UserTurn(text=QUESTION)),
        barge_in_after_first_token(1, at),
    ]
    result = await run_node("llm.openai", params, script)
    assert_nothing_old_after(result, 0, at[0])
    assert_nothing_old_after(result, 1, at[1])
    traces = result.session.tracer.turns
    # the server generates one reply at a time (no request interruption): turn 1 starting
    # at once (~0.3 s; the bound allows for a busy CPU) means turn 0's generation (1000
    # tokens, ~20 s) stopped when its stream was closed
    restart_ms = (traces[1].marks["first_token"] - at[0]) / 1e6
    assert restart_ms < 6000, f"turn 1's first token came {restart_ms:.0f} ms after barge-in"
    with anyio.fail_after(10):
        while llama.disconnects() < before + 2:
            await anyio.sleep(0.05)
    history = result.session.nodes["node"].history.messages
    assert history[1].role == "assistant" and history[1].interrupted


async def test_openai_server_down_is_an_error_event_and_the_session_goes_on(openai_params):
    sock = bound_socket()  # bound, never listening: connection refused
    params = {
        **openai_params,
        "base_url": f"http://127.0.0.1:{sock.getsockname()[1]}/v1",
        "retries": 2,
        "retry_backoff_s": 0.1,
    }
    script = [("prompt", UserTurn(text=QUESTION)), ("prompt", UserTurn(text="Hello?"))]
    start = time.monotonic()
    try:
        result = await run_node("llm.openai", params, script)
    finally:
        sock.close()
    assert time.monotonic() - start < 10
    errors = result.events_of("error")
    assert len(errors) == 2 and "cannot reach" in errors[0]["message"]
    frames = result.frames("text")
    assert [f.final for f in frames] == [False, True, False, True]
    assert "can't reach" in frames[0].text
    assert result.session.nodes["node"].history.messages == [], "unanswered turns are dropped"


async def test_openai_wrong_model_names_what_the_server_has(openai_params):
    params = {**openai_params, "model": "no-such-model"}
    result = await run_node("llm.openai", params, [("prompt", UserTurn(text=QUESTION))])
    (error,) = result.events_of("error")
    assert "'no-such-model' is not served" in error["message"] and ALIAS in error["message"]
    assert result.frames("text")[-1].final


async def test_openai_bad_key_is_reported(openai_params, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    result = await run_node("llm.openai", openai_params, [("prompt", UserTurn(text=QUESTION))])
    (error,) = result.events_of("error")
    assert f"rejected the API key from ${KEY_ENV}" in error["message"]


async def test_openai_without_key_or_base_url_fails_setup(monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(SessionError, match=f"set the environment variable {KEY_ENV}"):
        await run_node("llm.openai", {"api_key_env": KEY_ENV}, [], timeout=30)


# -- llm.ollama --------------------------------------------------------------------------------


async def test_ollama_streams_a_real_answer(ollama):
    url, record = ollama
    params = {"host": url, "model": ALIAS, "keep_alive": "10m", "num_ctx": 2048}
    result = await run_node("llm.ollama", params, [("prompt", UserTurn(text=QUESTION))])
    frames = result.frames("text")
    assert len(frames) > 3 and frames[-1].final
    assert "Paris" in reply_text(frames)
    (request,) = record.requests
    assert request["stream"] is True and request["keep_alive"] == "10m"
    assert request["options"]["num_ctx"] == 2048 and request["options"]["temperature"] == 0
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][-1] == {"role": "user", "content": QUESTION}
    assert record.endings[0][0] == "done"


async def test_ollama_interrupt_closes_the_stream(ollama, llama):
    url, record = ollama
    # without stop strings the base model goes on until num_predict: a long reply
    params = {"host": url, "model": ALIAS, "max_tokens": 400, "options": {"stop": []}}
    before = llama.disconnects()
    at: list[int] = []
    script = [("prompt", UserTurn(text=QUESTION)), barge_in_after_first_token(0, at)]
    result = await run_node("llm.ollama", params, script)
    assert_nothing_old_after(result, 0, at[0])
    with anyio.fail_after(5):
        while not record.endings:
            await anyio.sleep(0.01)
    ending, t = record.endings[0]
    assert ending == "abandoned"
    assert (t * 1e9 - at[0]) / 1e6 < 3000, "the server saw the hang-up at once"
    with anyio.fail_after(10):
        while llama.disconnects() <= before:
            await anyio.sleep(0.05)


async def test_ollama_retries_a_server_that_is_still_starting(llama):
    pytest.importorskip("ollama")
    record = OllamaRecord()
    sock = bound_socket()
    params = {
        "host": f"http://127.0.0.1:{sock.getsockname()[1]}",
        "model": ALIAS,
        "retries": 4,
        "retry_backoff_s": 0.2,
    }
    with serve_app(ollama_app(llama, record), sock, delay=0.5):
        result = await run_node("llm.ollama", params, [("prompt", UserTurn(text=QUESTION))])
    assert result.events_of("error") == []
    assert "Paris" in reply_text(result.frames("text"))


async def test_ollama_wrong_model_says_to_pull_it(ollama):
    url, _ = ollama
    params = {"host": url, "model": "llama3.2:3b", "error_reply": ""}
    result = await run_node("llm.ollama", params, [("prompt", UserTurn(text=QUESTION))])
    (error,) = result.events_of("error")
    assert "run `ollama pull llama3.2:3b`" in error["message"]
    assert [(f.text, f.final) for f in result.frames("text")] == [("", True)]


async def test_ollama_server_down_is_reported():
    pytest.importorskip("ollama")
    sock = bound_socket()
    host = f"http://127.0.0.1:{sock.getsockname()[1]}"
    params = {"host": host, "retries": 1, "retry_backoff_s": 0.05}
    try:
        result = await run_node("llm.ollama", params, [("prompt", UserTurn(text=QUESTION))])
    finally:
        sock.close()
    (error,) = result.events_of("error")
    assert f"cannot reach the Ollama server at {host}" in error["message"]


@needs_realtimetts
async def test_ollama_reply_is_spoken_through_a_realtimetts_engine(ollama):
    """UserTurn -> llm.ollama -> text.sentences -> tts.realtimetts (piper engine): audio out."""
    url, _ = ollama
    nodes = {
        "llm": ("llm.ollama", {"host": url, "model": ALIAS}),
        "sentences": ("text.sentences", {}),
        "tts": ("tts.realtimetts", ENGINE),
    }
    edges = ["llm.text -> sentences.text", "sentences.sentence -> tts.text"]
    script = [("llm.prompt", UserTurn(text=QUESTION))]
    result = await run_graph(nodes, edges, script, ["llm.prompt"])
    said = reply_text(result.frames("llm.text"))
    assert "Paris" in said
    audio = result.frames("tts.audio")
    seconds = sum(f.duration_s for f in audio)
    assert 0.8 < seconds < 10, f"{seconds:.1f} s of speech for {said!r}"
    marks = result.session.tracer.turns[0].marks
    assert marks["first_token"] <= marks["first_sentence"] <= marks["first_audio"]


@pytest.mark.parametrize(
    ("type_name", "module", "extra"),
    [("llm.ollama", "ollama", "flowvoice[ollama]"), ("llm.openai", "openai", "flowvoice[openai]")],
)
async def test_missing_client_package_names_the_extra(type_name, module, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(SessionError, match=re.escape(f"pip install '{extra}'")):
        await run_node(type_name, {"model": "m"}, [], timeout=30)
