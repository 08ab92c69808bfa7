"""The OpenAI Realtime API at /v1/realtime: the real ``openai`` SDK against a real
``flowvoice run graphs/default.yaml`` on 127.0.0.1, every server event validated strictly
against ``openai.types.realtime`` (see realtime_client.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_strategies import json_scalars, json_values
from realtime_client import RATE, SERVER_EVENT, Events, realtime_session, silence, stream_audio
from speech_audio import speak, wer
from websockets.sync.client import connect

from flowvoice.realtime_api.client_events import CLIENT_EVENTS
from flowvoice.testing.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("realtime") / "flowvoice.log"
    process = ServerProcess(ROOT / "graphs" / "default.yaml", log, env={"NO_PROXY": "127.0.0.1"})
    try:
        process.wait_healthy(300)
        yield process
    finally:
        process.stop()
    output = process.output()
    assert "Traceback" not in output, output[-3000:]


def spoken(text: str, lead_s: float = 0.3, tail_s: float = 2.5) -> np.ndarray:
    return np.concatenate([silence(lead_s), speak(text, RATE), silence(tail_s)])


async def say_typed(connection, text: str) -> None:
    """Add a typed user message to the conversation."""
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 240))


def words(text: str) -> list[str]:
    return text.lower().replace(".", " ").replace(",", " ").split()


def check_completed(events: Events, done: dict) -> str:
    """A completed response's audio and transcript; returns the transcript."""
    response = done["response"]
    assert response["status"] == "completed", response
    assert response["usage"]["total_tokens"] == 0  # always present
    (item,) = response["output"]
    transcript = item["content"][0]["transcript"]
    assert transcript.strip()
    audio = events.audio(response["id"])
    assert len(audio) > 0.4 * RATE  # a spoken sentence at 24 kHz
    assert np.abs(audio.astype(np.int32)).max() > 1000
    (said,) = [
        e
        for e in events.of("response.output_audio_transcript.done")
        if e["response_id"] == response["id"]
    ]
    assert said["transcript"] == transcript
    return transcript


def test_spoken_question_gets_a_transcription_and_a_spoken_reply(server: ServerProcess) -> None:
    async def main() -> None:
        async with realtime_session(server.port) as (connection, events):
            created = events.of("session.created")[0]["session"]
            assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
            await stream_audio(connection, spoken(QUESTION))
            done = await events.wait_for("response.done", timeout=90)
            transcript = check_completed(events, done)
            completed = events.of("conversation.item.input_audio_transcription.completed")
            assert len(completed) == 1 and wer(QUESTION, completed[0]["transcript"]) <= 0.35
            started = events.wait_for("input_audio_buffer.speech_started")
            item_id = (await started)["item_id"]
            assert completed[0]["item_id"] == item_id
            assert (await events.wait_for("input_audio_buffer.committed"))["item_id"] == item_id
            order = events.types()
            assert (
                order.index("input_audio_buffer.speech_started")
                < order.index("input_audio_buffer.speech_stopped")
                < order.index("input_audio_buffer.committed")
                < order.index("response.created")
            )
            assert order.index("response.output_audio.delta") < order.index("response.done")
            assert "paris" in words(transcript)

    run(main())


def test_typed_message_and_response_create(server: ServerProcess) -> None:
    async def main() -> None:
        async with realtime_session(server.port) as (connection, events):
            await say_typed(connection, "What is the capital of Germany?")
            added = await events.wait_for("conversation.item.done")
            assert added["item"]["content"][0]["text"] == "What is the capital of Germany?"
            await asyncio.sleep(1.0)
            assert events.of("response.created") == []  # a typed message waits for the ask
            await connection.response.create()
            done = await events.wait_for("response.done", timeout=90)
            assert "berlin" in words(check_completed(events, done))
            assert events.of("input_audio_buffer.speech_started") == []

    run(main())


def test_text_only_session(server: ServerProcess) -> None:
    async def main() -> None:
        async with realtime_session(server.port) as (connection, events):
            await connection.session.update(
                session={"type": "realtime", "output_modalities": ["text"]}
            )
            updated = await events.wait_for("session.updated")
            assert updated["session"]["output_modalities"] == ["text"]
            await say_typed(connection, "What is the capital of Germany?")
            await connection.response.create()
            done = await events.wait_for("response.done", timeout=90)
            (item,) = done["response"]["output"]
            assert item["content"][0]["type"] == "output_text"
            assert "berlin" in words(item["content"][0]["text"])
            assert events.of("response.output_text.delta")
            assert events.of("response.output_audio.delta") == []

    run(main())


def test_push_to_talk(server: ServerProcess) -> None:
    async def main() -> None:
        async with realtime_session(server.port) as (connection, events):
            await connection.session.update(
                session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
            )
            updated = await events.wait_for("session.updated")
            assert updated["session"]["audio"]["input"]["turn_detection"] is None
            await stream_audio(connection, spoken(QUESTION, tail_s=0.3))
            await asyncio.sleep(2.0)  # no turn detection: nothing happens by itself
            assert events.of("input_audio_buffer.committed") == []
            assert events.of("input_audio_buffer.speech_started") == []
            await connection.input_audio_buffer.commit()
            await connection.response.create()
            committed = await events.wait_for("input_audio_buffer.committed", timeout=60)
            completed = await events.wait_for(
                "conversation.item.input_audio_transcription.completed"
            )
            assert completed["item_id"] == committed["item_id"]
            assert wer(QUESTION, completed["transcript"]) <= 0.35
            done = await events.wait_for("response.done", timeout=90)
            assert "paris" in words(check_completed(events, done))

    run(main())


def test_server_vad_without_create_response_commits_and_waits(server: ServerProcess) -> None:
    async def main() -> None:
        async with realtime_session(server.port) as (connection, events):
            detection = {"type": "server_vad", "silence_duration_ms": 400, "create_response": False}
            await connection.session.update(
                session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}}
            )
            updated = await events.wait_for("session.updated")
            reported = updated["session"]["audio"]["input"]["turn_detection"]
            assert reported["silence_duration_ms"] == 400 and reported["create_response"] is False
            await stream_audio(connection, spoken(QUESTION))
            committed = await events.wait_for("input_audio_buffer.committed", timeout=60)
            stopped = events.of("input_audio_buffer.speech_stopped")[0]
            assert stopped["item_id"] == committed["item_id"]
            await asyncio.sleep(1.5)
            assert events.of("response.created") == []  # the turn waits for response.create
            await connection.response.create()
            done = await events.wait_for("response.done", timeout=90)
            assert "paris" in words(check_completed(events, done))

    run(main())


def error_codes(events: Events) -> list[str]:
    return [e["error"]["code"] for e in events.of("error")]


def test_bad_input_gets_error_events_and_the_session_goes_on(server: ServerProcess) -> None:
    async def main() -> None:
        async with realtime_session(server.port) as (connection, events):
            sent = [
                ("{not json", "invalid_json"),
                (json.dumps({"type": "no.such.event"}), "unknown_event_type"),
                (json.dumps([1, 2]), "invalid_event"),
                (
                    json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}),
                    "invalid_value",
                ),
                (
                    json.dumps({"type": "input_audio_buffer.append", "audio": "AA=="}),
                    "invalid_value",
                ),
                (json.dumps({"type": "input_audio_buffer.append"}), "missing_required_parameter"),
                (
                    json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 600_000}),
                    "message_too_large",
                ),
                (json.dumps({"type": "response.cancel"}), "response_cancel_not_active"),
                (
                    json.dumps({"type": "input_audio_buffer.commit"}),
                    "input_audio_buffer_commit_empty",
                ),
                (
                    json.dumps(
                        {
                            "type": "conversation.item.truncate",
                            "item_id": "nope",
                            "content_index": 0,
                            "audio_end_ms": 10,
                        }
                    ),
                    "item_not_found",
                ),
                (
                    json.dumps({"type": "session.update", "session": {"type": "transcription"}}),
                    "unsupported",
                ),
                (
                    json.dumps(
                        {
                            "type": "session.update",
                            "session": {
                                "audio": {
                                    "input": {
                                        "turn_detection": {
                                            "type": "server_vad",
                                            "silence_duration_ms": -5,
                                        }
                                    }
                                }
                            },
                        }
                    ),
                    "invalid_value",
                ),
            ]
            socket = connection._connection  # the websocket itself: malformed messages
            for text, _ in sent:
                await socket.send(text)
            await socket.send(b"\x00\x01")
            await connection.session.update(session={"type": "realtime", "instructions": "Hi."})
            updated = await events.wait_for("session.updated")
            assert updated["session"]["instructions"] == "Hi."
            assert error_codes(events) == [code for _, code in sent] + ["invalid_event"]
            for error in events.of("error"):
                assert "Traceback" not in error["error"]["message"]
            # a response.create while one is in progress
            await say_typed(connection, "Hello.")
            await connection.response.create()
            await events.wait_for("response.created")
            await connection.response.create()
            await events.wait_for(
                "error",
                lambda e: e["error"]["code"] == "conversation_already_has_active_response",
            )
            await connection.response.cancel()
            done = await events.wait_for("response.done", timeout=60)
            assert done["response"]["status"] == "cancelled"
            assert done["response"]["status_details"]["reason"] == "client_cancelled"

    run(main())


def test_audio_is_24khz_base64_pcm16(server: ServerProcess) -> None:
    """The reply's audio decodes to 16-bit samples at 24 kHz: its length matches the time the
    server took to send it, paced in real time."""

    async def main() -> None:
        async with realtime_session(server.port) as (connection, events):
            await say_typed(connection, "What color is the sky?")
            await connection.response.create()
            done = await events.wait_for("response.done", timeout=90)
            rid = done["response"]["id"]
            deltas = [
                (t, e)
                for t, e in zip(events.times, events.received, strict=True)
                if e["type"] == "response.output_audio.delta" and e["response_id"] == rid
            ]
            audio_s = len(events.audio(rid)) / RATE
            spread_s = deltas[-1][0] - deltas[0][0]
            assert audio_s > 0.5
            assert audio_s - 0.6 < spread_s < audio_s + 1.0  # real time plus a 250 ms lead
            for _, delta in deltas:
                assert len(base64.b64decode(delta["delta"])) % 2 == 0

    run(main())


STORY = "Tell me a story about a dragon."
INTERRUPTION = "Wait, what is the capital of Germany?"


def test_barge_in_cancels_the_reply_and_truncate_cuts_it_to_what_was_played(
    server: ServerProcess,
) -> None:
    async def main() -> None:
        async with realtime_session(server.port) as (connection, events):
            await say_typed(connection, STORY)
            await connection.response.create()
            first = await events.wait_for("response.output_audio.delta", timeout=90)
            story_id = first["response_id"]
            await stream_audio(connection, spoken(INTERRUPTION, lead_s=0.1))
            cancelled = await events.wait_for(
                "response.done", lambda e: e["response"]["id"] == story_id, timeout=60
            )
            response = cancelled["response"]
            assert response["status"] == "cancelled", response
            assert response["status_details"]["reason"] == "turn_detected"
            # Speech is announced only once it is a barge-in: after the reply was cancelled.
            started = await events.wait_for("input_audio_buffer.speech_started", timeout=30)
            assert events.received.index(started) > events.received.index(cancelled)
            (item,) = response["output"]
            assert item["status"] == "incomplete"
            full = item["content"][0]["transcript"]
            played_ms = 600
            await connection.conversation.item.truncate(
                item_id=item["id"], content_index=0, audio_end_ms=played_ms
            )
            truncated = await events.wait_for("conversation.item.truncated")
            assert truncated["audio_end_ms"] == played_ms
            await connection.conversation.item.retrieve(item_id=item["id"])
            retrieved = await events.wait_for("conversation.item.retrieved")
            heard = retrieved["item"]["content"][0]["transcript"]
            assert len(heard.split()) < len(full.split())
            assert full.split()[: len(heard.split())] == heard.split()
            # The interruption is the next user turn, and it is answered.
            completed = await events.wait_for(
                "conversation.item.input_audio_transcription.completed", timeout=60
            )
            assert wer(INTERRUPTION, completed["transcript"]) <= 0.35
            answer = await events.wait_for(
                "response.done", lambda e: e["response"]["id"] != story_id, timeout=90
            )
            assert "berlin" in words(check_completed(events, answer))

    run(main())


def test_agents_sdk_realtime_runner_holds_a_spoken_turn(server: ServerProcess) -> None:
    agents = pytest.importorskip("agents.realtime")

    async def main() -> None:
        agent = agents.RealtimeAgent(name="Assistant", instructions="Answer in one sentence.")
        runner = agents.RealtimeRunner(agent)
        url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=flowvoice"
        session = await runner.run(model_config={"url": url, "api_key": "not-needed"})
        seen: list = []
        said: list[str] = []
        async with session:
            audio = spoken(QUESTION)
            step = RATE // 50
            for offset in range(0, len(audio), step):
                await session.send_audio(audio[offset : offset + step].astype("<i2").tobytes())
                await asyncio.sleep(0.02)
            async with asyncio.timeout(90):
                async for event in session:
                    seen.append(event)
                    if event.type == "history_updated":
                        said = assistant_transcripts(event.history)
                    if said and "audio_end" in [e.type for e in seen]:
                        break
        kinds = [event.type for event in seen]
        assert "error" not in kinds, [e for e in seen if e.type == "error"]
        assert kinds.count("audio") > 5
        assert "paris" in words(said[-1])

    run(main())


def assistant_transcripts(history: list) -> list[str]:
    """The transcripts of the assistant's items in an Agents SDK history."""
    return [
        part.transcript
        for item in history
        if getattr(item, "role", None) == "assistant"
        for part in item.content
        if getattr(part, "transcript", None)
    ]


# -- fuzzing ----------------------------------------------------------------------------------

turn_detection = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["server_vad", "semantic_vad", "vad"]),
        "silence_duration_ms": json_scalars | st.integers(-10, 30000),
        "eagerness": st.sampled_from(["low", "high", "auto", "max"]) | json_scalars,
        "create_response": json_scalars,
        "interrupt_response": json_scalars,
        "threshold": json_scalars,
    },
)
sessions = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["realtime", "transcription"]) | json_scalars,
        "instructions": json_scalars,
        "output_modalities": st.sampled_from([["audio"], ["text"], ["audio", "text"]])
        | json_values,
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {},
                    optional={
                        "turn_detection": turn_detection,
                        "format": json_values,
                        "transcription": json_values,
                    },
                )
                | json_values,
                "output": json_values,
            },
        )
        | json_values,
    },
)
client_events = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(CLIENT_EVENTS)) | st.text(max_size=20)},
    optional={
        "session": sessions,
        "audio": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | json_scalars,
        "item": json_values,
        "item_id": json_scalars,
        "content_index": json_scalars | st.integers(-2, 3),
        "audio_end_ms": json_scalars,
        "response": json_values,
        "response_id": json_scalars,
        "event_id": json_scalars,
    },
).map(json.dumps)
messages = client_events | st.text(max_size=60) | st.binary(max_size=40)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(messages, min_size=1, max_size=4))
def test_fuzzed_client_events_never_break_the_session(server: ServerProcess, batch: list) -> None:
    """Whatever the client sends, every answer is a valid server event, no traceback leaks,
    and the session still answers (a marked probe comes back in ``session.updated``)."""
    url = f"ws://127.0.0.1:{server.port}/v1/realtime"
    with connect(url, proxy=None, open_timeout=30) as socket:
        for message in batch:
            socket.send(message)
        probe = f"probe-{id(batch)}"
        socket.send(json.dumps({"type": "session.update", "session": {"instructions": probe}}))
        while True:
            received = json.loads(socket.recv(timeout=30))
            SERVER_EVENT.validate_python(received)
            assert "Traceback" not in json.dumps(received)
            if (
                received["type"] == "session.updated"
                and received["session"]["instructions"] == probe
            ):
                break
