"""One Realtime connection's conversation: the session's events in, protocol events out.

The graph drives everything; the driver translates. The session's events become the
protocol's items and responses:

- ``speech_started`` / ``speech_stopped`` (the turn node saw the VAD's start / end) open the
  user's input item. Speech that starts while the assistant speaks is only announced once
  flowvoice's barge-in decision is made (``barge_in``): clients flush their playback on
  ``input_audio_buffer.speech_started``, so a cough must not end the reply.
- ``partial_transcript`` / ``final_transcript`` -> append-only transcription deltas;
  ``user_turn`` (the turn committed) -> ``speech_stopped``, ``committed``, the user item and
  ``transcription.completed``, then the response when the session answers by itself.
- ``assistant_text`` and the sink's audio (resampled to 24 kHz) -> the response's output item;
  ``reply_done`` (the last audio was sent) completes it; a raised turn (barge-in, a new turn,
  ``response.cancel``) ends it ``cancelled``.

Client events become conversation requests: ``session.update`` (:mod:`.config`),
``input_audio_buffer.*``, a typed user message, ``response.create`` / ``cancel``, and
``conversation.item.truncate``, which tells the playback ledger how much of a reply the client
played, so the chat history keeps only what the user heard.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowvoice.conversation import Conversation
from flowvoice.nodes.audio import Resampler
from flowvoice.realtime_api import events as ev
from flowvoice.realtime_api.client_events import (
    ACTIVE,
    COMMIT_EMPTY,
    NO_ITEM,
    NOT_ACTIVE,
    UNSUPPORTED,
    ClientEventError,
    decode_audio,
    encode_audio,
    typed_user_text,
)
from flowvoice.realtime_api.config import RATE, apply, initial_config, merged
from flowvoice.runtime.session import Session

#: Items kept for ``conversation.item.retrieve`` / ``truncate``.
KEEP_ITEMS = 256
#: Less appended audio than this cannot be committed (as with OpenAI).
MIN_COMMIT_MS = 100


@dataclass
class _Input:
    """The user's input item being spoken."""

    item_id: str
    start_ms: int
    announced: bool = False  # speech_started was sent
    end_ms: int | None = None
    finals: list[str] = field(default_factory=list)
    partial: str = ""
    sent: str = ""  # transcript sent as deltas so far


@dataclass
class _Response:
    response_id: str
    turn: int
    audio: bool
    item_id: str | None = None
    text: list[str] = field(default_factory=list)
    resampler: Resampler | None = None


class RealtimeDriver:
    """Translates between one session and one Realtime client (see the module docs).

    ``push(event)`` queues a server event; ``send_input(samples)`` feeds 24 kHz client audio to
    the graph; ``flush_input()`` pushes the audio heard so far through the VAD (a commit).
    """

    def __init__(
        self,
        session: Session,
        push: Callable[[ev.Event], None],
        send_input: Callable[[np.ndarray], Awaitable[None]],
        flush_input: Callable[[], Awaitable[None]],
        model: str,
    ):
        self.conversation = Conversation.of_session(session)
        self.config = initial_config(session, model)
        self._push = push
        self._send_input = send_input
        self._flush_input = flush_input
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._item_turns: dict[str, int] = {}  # assistant items -> their turn
        self._last_item: str | None = None
        self._input: _Input | None = None
        self._held_start_ms: int | None = None  # speech during the reply, not yet a barge-in
        self._response: _Response | None = None
        self._cancel_reason = "turn_detected"
        self._appended_ms = 0.0
        session.on_new_turn(self._turn_raised)
        push(ev.event("session.created", session=self.config))

    @property
    def _detection(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"]["turn_detection"]

    @property
    def _transcribing(self) -> bool:
        return self.config["audio"]["input"]["transcription"] is not None

    # -- the session's events ------------------------------------------------------------------
    def session_event(self, event: dict[str, Any]) -> None:
        """Translate one session event (others, e.g. ``metrics``, are not sent)."""
        handler = self._SESSION_EVENTS.get(event.get("type", ""))
        if handler is not None:
            handler(self, event)

    def _speech_started(self, event: dict[str, Any]) -> None:
        if self._detection is None or self._input is not None:
            return  # push-to-talk announces no speech; or the same user turn goes on
        start_ms = round(event["stream_s"] * 1000)
        if event.get("checking"):  # speech during the reply: announced if it barges in
            self._held_start_ms = start_ms
        else:
            self._begin_input(start_ms)

    def _speech_stopped(self, event: dict[str, Any]) -> None:
        if self._input is not None:
            self._input.end_ms = round(event["stream_s"] * 1000)

    def _barge_in(self, event: dict[str, Any]) -> None:
        if self._input is None and self._held_start_ms is not None:
            self._begin_input(self._held_start_ms)
        self._held_start_ms = None

    def _begin_input(self, start_ms: int) -> None:
        self._input = _Input(ev.new_id("item"), start_ms, announced=True)
        self._push(
            ev.event(
                "input_audio_buffer.speech_started",
                audio_start_ms=start_ms,
                item_id=self._input.item_id,
            )
        )

    def _transcript(self, event: dict[str, Any]) -> None:
        spoken = self._input
        if spoken is None:
            return
        if event["type"] == "final_transcript":
            spoken.finals.append(event["text"].strip())
            spoken.partial = ""
        else:
            spoken.partial = event["text"].strip()
        heard = " ".join(t for t in [*spoken.finals, spoken.partial] if t)
        if self._transcribing and heard.startswith(spoken.sent) and len(heard) > len(spoken.sent):
            delta, spoken.sent = heard[len(spoken.sent) :], heard
            self._push(
                ev.event(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=spoken.item_id,
                    content_index=0,
                    delta=delta,
                )
            )

    def _user_turn(self, event: dict[str, Any]) -> None:
        text = event["text"]
        spoken = self._input or _Input(ev.new_id("item"), self._held_start_ms or 0)
        end_ms = spoken.end_ms if spoken.end_ms is not None else spoken.start_ms
        seconds = (end_ms - spoken.start_ms if spoken.announced else self._appended_ms) / 1000
        self._input, self._held_start_ms = None, None
        self._appended_ms = 0.0
        item_id, previous = spoken.item_id, self._last_item
        if spoken.announced:
            self._push(
                ev.event("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id)
            )
        self._push(
            ev.event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        )
        self._push(
            ev.event(
                "conversation.item.added",
                item=ev.user_audio_item(item_id, None, "in_progress"),
                previous_item_id=previous,
            )
        )
        item = ev.user_audio_item(item_id, text)
        self._remember(item)
        self._push(ev.event("conversation.item.done", item=item, previous_item_id=previous))
        if self._transcribing:
            self._push(
                ev.event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=text,
                    usage={"type": "duration", "seconds": max(0.0, seconds)},
                )
            )
        if self.conversation.control.auto_reply and text.strip():
            self._begin_response(event["turn"])

    def _assistant_text(self, event: dict[str, Any]) -> None:
        response = self._response
        if response is None or response.turn != event["turn"] or not event["text"]:
            return
        self._open_output(response)
        response.text.append(event["text"])
        kind = "response.output_audio_transcript.delta" if response.audio else None
        self._push(
            ev.event(
                kind or "response.output_text.delta",
                **self._part_ids(response),
                delta=event["text"],
            )
        )

    def _reply_done(self, event: dict[str, Any]) -> None:
        response = self._response
        if response is not None and response.turn == event["turn"]:
            if response.resampler is not None:
                tail = response.resampler(np.zeros(0, np.int16), last=True)
                if len(tail):
                    self._push(self._audio_delta(response, tail))
            self._finish_response("completed")

    def _error(self, event: dict[str, Any]) -> None:
        message = str(event.get("message", "the graph failed"))
        self._push(
            ev.error(str(event.get("code", "server_error")), message, error_type="server_error")
        )

    _SESSION_EVENTS: dict[str, Callable[[RealtimeDriver, dict[str, Any]], None]] = {
        "speech_started": _speech_started,
        "speech_stopped": _speech_stopped,
        "barge_in": _barge_in,
        "partial_transcript": _transcript,
        "final_transcript": _transcript,
        "user_turn": _user_turn,
        "assistant_text": _assistant_text,
        "reply_done": _reply_done,
        "error": _error,
    }

    def audio(self, turn: int, sample_rate: int, samples: np.ndarray) -> ev.Event | None:
        """The ``response.output_audio.delta`` for a chunk the sink sends (None: not sent)."""
        response = self._response
        if response is None or response.turn != turn or not response.audio:
            return None
        if sample_rate != RATE:
            if response.resampler is None or response.resampler.in_rate != sample_rate:
                response.resampler = Resampler(sample_rate, RATE)
            samples = response.resampler(samples)
        return self._audio_delta(response, samples)

    def _audio_delta(self, response: _Response, samples: np.ndarray) -> ev.Event:
        self._open_output(response)
        return ev.event(
            "response.output_audio.delta", **self._part_ids(response), delta=encode_audio(samples)
        )

    def _turn_raised(self, turn: int) -> None:
        response = self._response
        if response is not None and response.turn < turn:
            self._finish_response("cancelled", self._cancel_reason)
        self._cancel_reason = "turn_detected"

    # -- responses ---------------------------------------------------------------------------
    def _begin_response(self, turn: int) -> None:
        audio = self.config["output_modalities"] == ["audio"]
        self._response = _Response(ev.new_id("resp"), turn, audio)
        modalities = self.config["output_modalities"]
        created = ev.response(self._response.response_id, "in_progress", [], modalities)
        self._push(ev.event("response.created", response=created))

    def _part_ids(self, response: _Response) -> dict[str, Any]:
        return {
            "response_id": response.response_id,
            "item_id": response.item_id,
            "output_index": 0,
            "content_index": 0,
        }

    def _open_output(self, response: _Response) -> None:
        """Announce the response's output item and its content part, once."""
        if response.item_id is not None:
            return
        response.item_id = ev.new_id("item")
        item = ev.assistant_item(response.item_id, "in_progress", "", response.audio)
        ids = {"response_id": response.response_id, "output_index": 0}
        self._push(ev.event("response.output_item.added", **ids, item=item))
        self._push(ev.event("conversation.item.added", item=item, previous_item_id=self._last_item))
        part = (
            {"type": "audio", "transcript": ""} if response.audio else {"type": "text", "text": ""}
        )
        self._push(ev.event("response.content_part.added", **self._part_ids(response), part=part))
        self._last_item = response.item_id

    def _finish_response(self, status: str, reason: str | None = None) -> None:
        response, self._response = self._response, None
        assert response is not None
        output: list[dict[str, Any]] = []
        if response.item_id is not None:
            text = "".join(response.text)
            ids = self._part_ids(response)
            if response.audio:
                self._push(ev.event("response.output_audio.done", **ids))
                self._push(
                    ev.event("response.output_audio_transcript.done", **ids, transcript=text)
                )
                part = {"type": "audio", "transcript": text}
            else:
                self._push(ev.event("response.output_text.done", **ids, text=text))
                part = {"type": "text", "text": text}
            self._push(ev.event("response.content_part.done", **ids, part=part))
            state = "completed" if status == "completed" else "incomplete"
            item = ev.assistant_item(response.item_id, state, text, response.audio)
            self._push(
                ev.event(
                    "response.output_item.done",
                    response_id=response.response_id,
                    output_index=0,
                    item=item,
                )
            )
            self._push(ev.event("conversation.item.done", item=item))
            self._remember(item)
            self._item_turns[response.item_id] = response.turn
            output = [item]
        modalities = self.config["output_modalities"]
        done = ev.response(response.response_id, status, output, modalities, reason)
        self._push(ev.event("response.done", response=done))

    def _remember(self, item: dict[str, Any]) -> None:
        self._items[item["id"]] = item
        self._items.move_to_end(item["id"])
        self._last_item = item["id"]
        while len(self._items) > KEEP_ITEMS:
            old, _ = self._items.popitem(last=False)
            self._item_turns.pop(old, None)

    # -- client events -----------------------------------------------------------------------
    async def handle(self, event: dict[str, Any]) -> None:
        """Carry out one checked client event (:func:`.client_events.parse_event`)."""
        await self._CLIENT_EVENTS[event["type"]](self, event)

    async def _session_update(self, event: dict[str, Any]) -> None:
        self.config = merged(self.config, event["session"], event.get("event_id"))
        apply(self.config, self.conversation)
        self._push(ev.event("session.updated", session=self.config))

    async def _append(self, event: dict[str, Any]) -> None:
        samples = decode_audio(event["audio"], event.get("event_id"))
        if len(samples):
            self._appended_ms += len(samples) * 1000 / RATE
            await self._send_input(samples)

    async def _commit(self, event: dict[str, Any]) -> None:
        if self._appended_ms < MIN_COMMIT_MS:
            raise ClientEventError(
                COMMIT_EMPTY,
                f"the input audio buffer holds {self._appended_ms:.0f} ms of audio; "
                f"at least {MIN_COMMIT_MS} ms are needed to commit",
                event_id=event.get("event_id"),
            )
        await self._flush_input()
        self.conversation.control.request_commit()

    async def _clear(self, event: dict[str, Any]) -> None:
        self.conversation.control.request_clear()
        self._input, self._held_start_ms, self._appended_ms = None, None, 0.0
        self._push(ev.event("input_audio_buffer.cleared"))

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = event["item"]
        text = typed_user_text(item, event.get("event_id"))
        item_id = item.get("id") if isinstance(item.get("id"), str) else ev.new_id("item")
        self.conversation.control.add_text(text)
        previous = self._last_item
        added = ev.user_text_item(item_id, text)
        self._remember(added)
        self._push(ev.event("conversation.item.added", item=added, previous_item_id=previous))
        self._push(ev.event("conversation.item.done", item=added, previous_item_id=previous))

    def _known_item(self, event: dict[str, Any]) -> dict[str, Any]:
        item = self._items.get(event["item_id"])
        if item is None:
            raise ClientEventError(
                NO_ITEM,
                f"no conversation item {event['item_id'][:64]!r}",
                "item_id",
                event.get("event_id"),
            )
        return item

    async def _item_retrieve(self, event: dict[str, Any]) -> None:
        self._push(ev.event("conversation.item.retrieved", item=self._known_item(event)))

    async def _item_truncate(self, event: dict[str, Any]) -> None:
        item = self._known_item(event)
        turn = self._item_turns.get(item["id"])
        if turn is None or event["content_index"] != 0:
            raise ClientEventError(
                UNSUPPORTED,
                "only the audio (content_index 0) of an assistant reply can be truncated",
                "item_id",
                event.get("event_id"),
            )
        playback = self.conversation.playback
        playback.played(turn, event["audio_end_ms"] / 1000)
        heard = playback.heard_text(turn)[0]
        self._items[item["id"]] = {
            **item,
            "status": "incomplete",
            "content": [{"type": "output_audio", "transcript": heard}],
        }
        self._push(
            ev.event(
                "conversation.item.truncated",
                item_id=item["id"],
                content_index=0,
                audio_end_ms=event["audio_end_ms"],
            )
        )

    async def _item_delete(self, event: dict[str, Any]) -> None:
        raise ClientEventError(
            UNSUPPORTED,
            "flowvoice keeps the history the user heard; items cannot be deleted",
            "item_id",
            event.get("event_id"),
        )

    async def _response_create(self, event: dict[str, Any]) -> None:
        if self._response is not None:
            raise ClientEventError(
                ACTIVE,
                f"response {self._response.response_id} is still in progress; "
                "wait for its response.done or cancel it",
                event_id=event.get("event_id"),
            )
        turn = await self.conversation.new_turn("response.create")
        self._begin_response(turn)
        self.conversation.control.request_reply(turn)

    async def _response_cancel(self, event: dict[str, Any]) -> None:
        response, wanted = self._response, event.get("response_id")
        if response is None or (wanted is not None and wanted != response.response_id):
            raise ClientEventError(
                NOT_ACTIVE,
                "there is no response in progress to cancel",
                event_id=event.get("event_id"),
            )
        self._cancel_reason = "client_cancelled"
        await self.conversation.new_turn("response.cancel")

    async def _output_clear(self, event: dict[str, Any]) -> None:
        raise ClientEventError(
            UNSUPPORTED,
            "output_audio_buffer.clear is for WebRTC and SIP; over WebSocket the client owns "
            "playback (send conversation.item.truncate with what it played)",
            event_id=event.get("event_id"),
        )

    _CLIENT_EVENTS: dict[str, Callable[[RealtimeDriver, dict[str, Any]], Awaitable[None]]] = {
        "session.update": _session_update,
        "input_audio_buffer.append": _append,
        "input_audio_buffer.commit": _commit,
        "input_audio_buffer.clear": _clear,
        "output_audio_buffer.clear": _output_clear,
        "conversation.item.create": _item_create,
        "conversation.item.retrieve": _item_retrieve,
        "conversation.item.truncate": _item_truncate,
        "conversation.item.delete": _item_delete,
        "response.create": _response_create,
        "response.cancel": _response_cancel,
    }
