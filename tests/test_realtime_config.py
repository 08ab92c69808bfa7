"""The Realtime API's plumbing without a server: client event checks, session.update merged
into the configuration, and what it sets in the conversation's turn control."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types.realtime import SessionUpdatedEvent

from flowvoice.conversation import Conversation
from flowvoice.conversation.control import TurnControl
from flowvoice.graph.spec import load_graph
from flowvoice.realtime_api import events as ev
from flowvoice.realtime_api.client_events import (
    ClientEventError,
    decode_audio,
    parse_event,
    typed_user_text,
)
from flowvoice.realtime_api.config import apply, initial_config, merged
from flowvoice.runtime.session import Session

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def session() -> Session:
    return Session(load_graph(ROOT / "graphs" / "default.yaml"))


def test_the_default_graph_reports_its_own_behaviour(session: Session) -> None:
    config = initial_config(session, "flowvoice")
    SessionUpdatedEvent.model_validate(ev.event("session.updated", session=config))
    llm = session.nodes["llm"]
    assert config["instructions"] == llm.params.system_prompt
    assert config["max_output_tokens"] == llm.params.max_tokens
    assert config["audio"]["output"]["voice"] == "en_US-joe-medium"
    assert config["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"  # turn.smart


def test_session_update_is_a_partial_merge(session: Session) -> None:
    config = initial_config(session, "flowvoice")
    update = {
        "instructions": "Be brief.",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}},
    }
    result = merged(config, update, None)
    assert result["instructions"] == "Be brief."
    assert result["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 300,
        "create_response": True,
        "interrupt_response": True,
        "idle_timeout_ms": None,
    }
    assert result["audio"]["output"] == config["audio"]["output"]
    assert config["instructions"] != "Be brief."  # the original is untouched
    SessionUpdatedEvent.model_validate(ev.event("session.updated", session=result))


@pytest.mark.parametrize(
    ("update", "param"),
    [
        ({"type": "transcription"}, "session.type"),
        ({"instructions": 3}, "session.instructions"),
        ({"output_modalities": ["audio", "text"]}, "session.output_modalities"),
        ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "session.audio.input.format"),
        (
            {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            "session.audio.output.format.rate",
        ),
        (
            {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "max"}}}},
            "session.audio.input.turn_detection.eagerness",
        ),
        (
            {"audio": {"input": {"turn_detection": {"create_response": "yes"}}}},
            "session.audio.input.turn_detection.create_response",
        ),
        ({"audio": {"input": {"turn_detection": {"type": "vad"}}}}, None),
    ],
)
def test_a_bad_session_update_names_the_field(session: Session, update: dict, param) -> None:
    config = initial_config(session, "flowvoice")
    with pytest.raises(ClientEventError) as raised:
        merged(config, update, "evt-1")
    assert raised.value.event_id == "evt-1"
    assert raised.value.param == (param or "session.audio.input.turn_detection.type")


def test_turn_detection_sets_the_turn_control(session: Session) -> None:
    conversation = Conversation.of_session(session)
    control = conversation.control
    config = initial_config(session, "flowvoice")

    def use(turn_detection) -> TurnControl:
        update = {"instructions": "Hi.", "audio": {"input": {"turn_detection": turn_detection}}}
        apply(merged(config, update, None), conversation)
        return control

    assert use(None).auto_commit is False and control.auto_reply is False
    assert control.barge_in is False and conversation.instructions == "Hi."
    use({"type": "server_vad", "silence_duration_ms": 700, "create_response": False})
    assert (control.auto_commit, control.auto_reply, control.barge_in) == (True, False, True)
    assert control.wait_ms(250) == 700 and control.wait_ms(2500) == 700
    use({"type": "semantic_vad", "eagerness": "high", "interrupt_response": False})
    assert control.barge_in is False and control.auto_reply is True
    assert control.wait_ms(250) == 250 and control.wait_ms(2500) == 2000


def test_a_reply_takes_the_user_text_waiting_when_it_starts() -> None:
    control = TurnControl()
    control.add_text("Hello.")
    control.add_text("  ")
    control.request_reply(7)
    control.add_text("How are you?")
    reply = control.take_reply()
    assert reply is not None and (reply.turn, reply.text) == (7, "Hello. How are you?")
    assert control.take_reply() is None


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{", "invalid_json"),
        ("[]", "invalid_event"),
        (json.dumps({"type": "session.created"}), "unknown_event_type"),
        (json.dumps({"type": "session.update"}), "missing_required_parameter"),
        (json.dumps({"type": "session.update", "session": []}), "invalid_value"),
        (
            json.dumps(
                {
                    "type": "conversation.item.truncate",
                    "item_id": "a",
                    "content_index": 0,
                    "audio_end_ms": -1,
                }
            ),
            "invalid_value",
        ),
        (
            json.dumps(
                {
                    "type": "conversation.item.truncate",
                    "item_id": "a",
                    "content_index": True,
                    "audio_end_ms": 1,
                }
            ),
            "invalid_value",
        ),
        (json.dumps({"type": "response.cancel", "event_id": 5}), "invalid_value"),
        (
            json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 2000}),
            "message_too_large",
        ),
    ],
)
def test_malformed_client_events_get_clear_codes(message: str, code: str) -> None:
    with pytest.raises(ClientEventError) as raised:
        parse_event(message, max_bytes=1024)
    assert raised.value.code == code


def test_audio_decodes_only_from_base64_pcm16() -> None:
    assert decode_audio("AAABAA==").tolist() == [0, 1]
    for bad in ("%%", "AA==", "AAAB"):
        with pytest.raises(ClientEventError):
            decode_audio(bad)


def test_only_typed_user_messages_can_be_added() -> None:
    text = [{"type": "input_text", "text": "Hello."}, {"type": "input_text", "text": "Hi?"}]
    assert typed_user_text({"type": "message", "role": "user", "content": text}) == "Hello. Hi?"
    for item in (
        {"type": "message", "role": "assistant", "content": text},
        {"type": "function_call_output", "call_id": "c", "output": "{}"},
        {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": ""}]},
        {"type": "message", "role": "user", "content": [*text, {"type": "input_image"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": 5}]},
        {"type": "message", "role": "user", "content": "Hello."},
    ):
        with pytest.raises(ClientEventError) as raised:
            typed_user_text(item, "evt")
        assert raised.value.code == "unsupported" and raised.value.param == "item"
