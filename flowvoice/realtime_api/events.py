"""Server events of the OpenAI Realtime API (GA), built as plain dicts.

Each builder returns one event with a fresh ``event_id``; the shapes follow
``openai.types.realtime`` (the tests validate every event against those models). The server
needs no ``openai`` package at run time.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, Literal

Event = dict[str, Any]
ErrorType = Literal["invalid_request_error", "server_error"]

_serial = itertools.count(1)
_process = secrets.token_hex(4)


def new_id(prefix: str) -> str:
    """A unique id like ``item_3f2a9c1b00000007``."""
    return f"{prefix}_{_process}{next(_serial):08x}"


def event(kind: str, **fields: Any) -> Event:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error(
    code: str,
    message: str,
    *,
    error_type: ErrorType = "invalid_request_error",
    param: str | None = None,
    client_event_id: str | None = None,
) -> Event:
    """An ``error`` event; ``client_event_id`` names the client event that caused it."""
    body: dict[str, Any] = {"type": error_type, "code": code, "message": message}
    if param is not None:
        body["param"] = param
    if client_event_id is not None:
        body["event_id"] = client_event_id
    return event("error", error=body)


# -- items ------------------------------------------------------------------------------------


def user_audio_item(item_id: str, transcript: str | None, status: str = "completed") -> Event:
    """The user's spoken message."""
    content = [{"type": "input_audio", "transcript": transcript}]
    return _message(item_id, "user", status, content)


def user_text_item(item_id: str, text: str) -> Event:
    """A typed user message."""
    return _message(item_id, "user", "completed", [{"type": "input_text", "text": text}])


def assistant_item(item_id: str, status: str, text: str, audio: bool) -> Event:
    """The assistant's reply: its transcript (spoken) or its text (text-only sessions)."""
    part = (
        {"type": "output_audio", "transcript": text}
        if audio
        else {"type": "output_text", "text": text}
    )
    return _message(item_id, "assistant", status, [part] if status != "in_progress" else [])


def _message(item_id: str, role: str, status: str, content: list[dict[str, Any]]) -> Event:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": role,
        "status": status,
        "content": content,
    }


# -- responses --------------------------------------------------------------------------------


def usage() -> dict[str, Any]:
    """Token usage: flowvoice does not count tokens, but clients read these fields."""
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "input_token_details": {"audio_tokens": 0, "text_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"audio_tokens": 0, "text_tokens": 0},
    }


def response(
    response_id: str,
    status: str,
    output: list[dict[str, Any]],
    modalities: list[str],
    reason: str | None = None,
) -> dict[str, Any]:
    """A ``realtime.response`` object; ``reason`` for a cancelled one."""
    details: dict[str, Any] | None = None
    if status != "in_progress":
        details = {"type": status}
        if reason is not None:
            details["reason"] = reason
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": details,
        "output": output,
        "output_modalities": modalities,
        "usage": usage(),
    }
