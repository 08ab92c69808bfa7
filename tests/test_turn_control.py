"""The turn node under a client's turn control: push-to-talk, replies on request, a capped
wait instead of the node's own (``Conversation.control``)."""

from __future__ import annotations

import pytest
from harness import run_node

from flowvoice.conversation import Conversation
from flowvoice.frames import Transcript, VADEvent
from flowvoice.runtime.session import NodeContext

pytestmark = pytest.mark.anyio


def controlled(**settings):
    """A script step that sets the session's turn control."""

    async def step(context: NodeContext) -> None:
        control = Conversation.of(context).control
        for name, value in settings.items():
            setattr(control, name, value)

    return step


async def request_commit(context: NodeContext) -> None:
    Conversation.of(context).control.request_commit()


async def request_reply(context: NodeContext) -> None:
    turn = await context.new_turn("response.create")
    Conversation.of(context).control.request_reply(turn)


def speech(text: str) -> list:
    """One VAD segment and its final transcript."""
    return [
        ("vad", VADEvent(kind="start")),
        ("vad", VADEvent(kind="end")),
        0.05,
        ("transcript", Transcript(text=text, final=True)),
    ]


async def test_push_to_talk_commits_and_answers_only_when_asked() -> None:
    script = [
        controlled(auto_commit=False, auto_reply=False),
        *speech("What time is it?"),
        1.0,  # far past the node's own wait: nothing happens by itself
        request_commit,
        0.3,
        request_reply,
        0.3,
    ]
    result = await run_node("turn.dynamic", {"min_wait_ms": 300}, script)
    assert result.events_of("user_turn") == [
        {"type": "user_turn", "turn": 0, "text": "What time is it?"}
    ]
    (reply,) = result.frames("user_turn")
    assert (reply.turn, reply.text) == (1, "What time is it?")


async def test_a_requested_commit_without_speech_still_commits() -> None:
    script = [controlled(auto_commit=False, auto_reply=False), request_commit, 0.3]
    result = await run_node("turn.dynamic", {}, script)
    assert result.events_of("user_turn") == [{"type": "user_turn", "turn": 0, "text": ""}]
    assert result.frames("user_turn") == []


async def test_a_reply_waits_for_the_commit_requested_before_it() -> None:
    script = [
        controlled(auto_commit=False, auto_reply=False),
        ("vad", VADEvent(kind="start")),
        ("vad", VADEvent(kind="end")),
        0.1,  # the node has seen the speech end (the Realtime transport lets the VAD settle)
        request_commit,  # the speech is not transcribed yet
        request_reply,
        0.3,
        ("transcript", Transcript(text="Hello there.", final=True)),
        0.3,
    ]
    result = await run_node("turn.dynamic", {}, script)
    (reply,) = result.frames("user_turn")
    assert reply.text == "Hello there."


async def test_the_clients_cap_shortens_the_nodes_wait() -> None:
    script = [controlled(max_wait_ms=200), *speech("Please turn on the lights and"), 1.2]
    result = await run_node("turn.dynamic", {"max_wait_ms": 1500}, script)
    (turn,) = result.frames("user_turn")
    assert turn.text == "Please turn on the lights and"
    trace = result.session.tracer.turns[turn.turn].marks
    assert (trace["turn_committed"] - trace["speech_end"]) / 1e6 < 1000  # the node: 1500
