"""Client events of the OpenAI Realtime API: parse, check, and say clearly what is wrong.

:func:`parse_event` turns one text message into an event dict whose fields the driver may
trust (types checked per event type) or raises :class:`ClientEventError`, which the
transport answers with an ``error`` event while the session goes on.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from flowvoice.transport import ProtocolError, load_typed_json

#: Every client event of the GA protocol.
CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
    }
)

# Error codes (those clients act on keep OpenAI's names).
INVALID_JSON = "invalid_json"
INVALID_EVENT = "invalid_event"
UNKNOWN_EVENT = "unknown_event_type"
MISSING = "missing_required_parameter"
INVALID_VALUE = "invalid_value"
TOO_LARGE = "message_too_large"
UNSUPPORTED = "unsupported"
NOT_ACTIVE = "response_cancel_not_active"
ACTIVE = "conversation_already_has_active_response"
COMMIT_EMPTY = "input_audio_buffer_commit_empty"
NO_ITEM = "item_not_found"

#: Required fields per event type: name -> (type, description for the error message).
_FIELDS: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "session.update": {"session": (dict, "an object")},
    "input_audio_buffer.append": {"audio": (str, "base64 PCM16 audio")},
    "conversation.item.create": {"item": (dict, "an object")},
    "conversation.item.retrieve": {"item_id": (str, "a string")},
    "conversation.item.delete": {"item_id": (str, "a string")},
    "conversation.item.truncate": {
        "item_id": (str, "a string"),
        "content_index": (int, "an integer >= 0"),
        "audio_end_ms": (int, "an integer >= 0"),
    },
}
#: Optional fields per event type.
_OPTIONAL: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "response.create": {"response": (dict, "an object")},
    "response.cancel": {"response_id": (str, "a string")},
    "conversation.item.create": {"previous_item_id": (str, "a string")},
}


class ClientEventError(ProtocolError):
    """A client event the server cannot take; becomes an ``error`` event."""

    def __init__(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None
    ):
        super().__init__(code, message)
        self.param = param
        self.event_id = event_id


def parse_event(text: str, max_bytes: int) -> dict[str, Any]:
    """One client message -> its event, checked; :class:`ClientEventError` if malformed."""
    try:
        event = load_typed_json(text, max_bytes, (TOO_LARGE, INVALID_JSON, INVALID_EVENT))
    except ProtocolError as exc:
        raise ClientEventError(exc.code, str(exc)) from None
    event_id = event.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise ClientEventError(INVALID_VALUE, "event_id must be a string", "event_id")
    kind = event["type"]
    if kind not in CLIENT_EVENTS:
        raise ClientEventError(
            UNKNOWN_EVENT,
            f"unknown event type {kind[:100]!r}; expected one of "
            + ", ".join(sorted(CLIENT_EVENTS)),
            "type",
            event_id,
        )
    for name, (kind_of, what) in _FIELDS.get(kind, {}).items():
        _check(event, kind, name, kind_of, what, event_id, required=True)
    for name, (kind_of, what) in _OPTIONAL.get(kind, {}).items():
        _check(event, kind, name, kind_of, what, event_id, required=False)
    return event


def _check(
    event: dict[str, Any],
    kind: str,
    name: str,
    kind_of: type | tuple[type, ...],
    what: str,
    event_id: str | None,
    required: bool,
) -> None:
    value = event.get(name)
    if value is None:
        if required:
            raise ClientEventError(MISSING, f"{kind} needs {name} ({what})", name, event_id)
        return
    wrong = not isinstance(value, kind_of) or isinstance(value, bool)
    if not wrong and kind_of is int and value < 0:
        wrong = True
    if wrong:
        raise ClientEventError(
            INVALID_VALUE, f"{kind}.{name} must be {what}, got {value!r:.80}", name, event_id
        )


def typed_user_text(item: dict[str, Any], event_id: str | None = None) -> str:
    """The text of a ``conversation.item.create`` item: a user message of ``input_text``
    parts (the only items flowvoice's LLM nodes can take), else :class:`ClientEventError`."""
    content = item.get("content")
    parts = content if isinstance(content, list) else []
    texts = [
        part.get("text")
        for part in parts
        if isinstance(part, dict) and part.get("type") == "input_text"
    ]
    if (
        item.get("type", "message") != "message"
        or item.get("role") != "user"
        or not texts
        or len(texts) != len(parts)
        or not all(isinstance(text, str) for text in texts)
    ):
        raise ClientEventError(
            UNSUPPORTED,
            "only user messages of input_text parts can be added "
            '({"type": "message", "role": "user", "content": [{"type": "input_text", '
            '"text": "..."}]})',
            "item",
            event_id,
        )
    return " ".join(texts)


def decode_audio(data: str, event_id: str | None = None) -> np.ndarray:
    """Base64 PCM16LE mono -> int16 samples; :class:`ClientEventError` when it is not."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ClientEventError(
            INVALID_VALUE, "audio is not valid base64", "audio", event_id
        ) from None
    if len(raw) % 2:
        raise ClientEventError(
            INVALID_VALUE,
            f"audio must be PCM16 (an even number of bytes), got {len(raw)} bytes",
            "audio",
            event_id,
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def encode_audio(samples: np.ndarray) -> str:
    """int16 samples -> base64 PCM16LE."""
    return base64.b64encode(np.asarray(samples, dtype="<i2").tobytes()).decode("ascii")
