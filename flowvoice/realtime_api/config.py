"""The Realtime session configuration: what the graph does by default, ``session.update``
merged into it, and what it sets in the conversation.

``session.update`` is a partial merge (only the fields present change; ``turn_detection`` is
replaced as a whole; ``null`` turns it off). The effective configuration, as reported in
``session.created`` / ``session.updated``, shows what flowvoice really does: the graph's LLM
instructions and TTS voice, 24 kHz PCM both ways, and turn detection mapped onto the turn
node:

- ``server_vad``: a fixed ``silence_duration_ms`` after the end of speech ends the turn;
- ``semantic_vad``: the turn node's own policy (``turn.smart``: Smart Turn plus the
  transcript), its wait capped by ``eagerness`` (low 8 s, medium / auto 4 s, high 2 s);
- ``create_response: false``: a committed turn waits for ``response.create``;
- ``interrupt_response: false``: speech during the reply does not interrupt it;
- ``null``: push-to-talk: ``input_audio_buffer.commit`` ends the turn, ``response.create``
  asks for the reply.
"""

from __future__ import annotations

import copy
from typing import Any

from flowvoice.conversation import Conversation
from flowvoice.nodes.llm_base import StreamingLLM
from flowvoice.nodes.turn import SilenceTurn, TurnDetector
from flowvoice.realtime_api.client_events import INVALID_VALUE, UNSUPPORTED, ClientEventError
from flowvoice.runtime.session import Session

RATE = 24000
PCM = {"type": "audio/pcm", "rate": RATE}
EAGERNESS_MAX_WAIT_MS = {"low": 8000, "medium": 4000, "auto": 4000, "high": 2000}
SERVER_VAD_DEFAULTS = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
    "idle_timeout_ms": None,
}
SEMANTIC_VAD_DEFAULTS = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}


def initial_config(session: Session, model: str) -> dict[str, Any]:
    """The configuration the graph gives a new session (``session.created``)."""
    llm = next((n for n in session.nodes.values() if isinstance(n, StreamingLLM)), None)
    turn = next((n for n in session.nodes.values() if isinstance(n, TurnDetector)), None)
    voice = next(
        (str(n.params.voice) for n in session.nodes.values() if hasattr(n.params, "voice")),
        "default",
    )
    if isinstance(turn, SilenceTurn):
        detection = {**SERVER_VAD_DEFAULTS, "silence_duration_ms": turn.params.silence_ms}
    else:
        detection = dict(SEMANTIC_VAD_DEFAULTS)
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": f"sess_{session.id}",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": llm.params.system_prompt if llm is not None else "",
        "max_output_tokens": llm.params.max_tokens if llm is not None else "inf",
        "tools": [],
        "tool_choice": "auto",
        "tracing": None,
        "audio": {
            "input": {
                "format": dict(PCM),
                "transcription": {"model": "flowvoice"},
                "noise_reduction": None,
                "turn_detection": detection,
            },
            "output": {"format": dict(PCM), "voice": voice, "speed": 1.0},
        },
    }


def merged(config: dict[str, Any], update: dict[str, Any], event_id: str | None) -> dict[str, Any]:
    """``config`` with a ``session.update``'s ``session`` merged in, checked;
    :class:`ClientEventError` (``config`` unchanged) when a field is wrong or unsupported."""
    result = copy.deepcopy(config)

    def fail(param: str, message: str, code: str = INVALID_VALUE) -> ClientEventError:
        return ClientEventError(code, message, f"session.{param}", event_id)

    kind = update.get("type", "realtime")
    if kind != "realtime":
        raise fail("type", f"only 'realtime' sessions are served, got {kind!r:.40}", UNSUPPORTED)
    if "instructions" in update:
        if not isinstance(update["instructions"], str):
            raise fail("instructions", "instructions must be a string")
        result["instructions"] = update["instructions"]
    if "output_modalities" in update:
        modalities = update["output_modalities"]
        if modalities not in (["audio"], ["text"]):
            raise fail("output_modalities", 'output_modalities must be ["audio"] or ["text"]')
        result["output_modalities"] = modalities
    if "model" in update:
        if not isinstance(update["model"], str):
            raise fail("model", "model must be a string")
        result["model"] = update["model"]
    audio = update.get("audio")
    if audio is not None:
        if not isinstance(audio, dict):
            raise fail("audio", "audio must be an object")
        _merge_audio(result["audio"], audio, fail)
    return result


def _merge_audio(current: dict[str, Any], audio: dict[str, Any], fail: Any) -> None:
    for side in ("input", "output"):
        part = audio.get(side)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise fail(f"audio.{side}", f"audio.{side} must be an object")
        fmt = part.get("format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "audio/pcm"):
            raise fail(
                f"audio.{side}.format",
                f"audio.{side}.format must be audio/pcm (24 kHz PCM16); G.711 is not served",
                UNSUPPORTED,
            )
        if fmt is not None and fmt.get("rate", RATE) != RATE:
            raise fail(f"audio.{side}.format.rate", "audio/pcm is 24000 Hz only")
    inputs, outputs = audio.get("input") or {}, audio.get("output") or {}
    if "turn_detection" in inputs:
        current["input"]["turn_detection"] = _turn_detection(inputs["turn_detection"], fail)
    if "transcription" in inputs:
        if inputs["transcription"] is not None and not isinstance(inputs["transcription"], dict):
            raise fail("audio.input.transcription", "transcription must be an object or null")
        current["input"]["transcription"] = (
            None if inputs["transcription"] is None else {"model": "flowvoice"}
        )
    speed = outputs.get("speed")
    if speed is not None and not isinstance(speed, int | float):
        raise fail("audio.output.speed", "speed must be a number")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Checks of the turn_detection fields flowvoice reads.
_DETECTION_CHECKS = {
    "threshold": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1,
    "prefix_padding_ms": lambda v: _is_int(v) and 0 <= v <= 10000,
    "silence_duration_ms": lambda v: _is_int(v) and 0 <= v <= 20000,
    "idle_timeout_ms": lambda v: _is_int(v) and v >= 0,
    "create_response": lambda v: isinstance(v, bool),
    "interrupt_response": lambda v: isinstance(v, bool),
    "eagerness": lambda v: v in EAGERNESS_MAX_WAIT_MS,
}


def _turn_detection(value: Any, fail: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("audio.input.turn_detection", "turn_detection must be an object or null")
    kind = value.get("type", "server_vad")
    defaults = {"server_vad": SERVER_VAD_DEFAULTS, "semantic_vad": SEMANTIC_VAD_DEFAULTS}.get(kind)
    if defaults is None:
        raise fail(
            "audio.input.turn_detection.type",
            f"turn_detection.type must be server_vad or semantic_vad, got {kind!r:.40}",
        )
    result = dict(defaults)
    for name in defaults.keys() - {"type"}:
        given = value.get(name)
        if given is None:
            continue
        if not _DETECTION_CHECKS[name](given):
            raise fail(f"audio.input.turn_detection.{name}", f"bad {name}: {given!r:.40}")
        result[name] = given
    return result


def apply(config: dict[str, Any], conversation: Conversation) -> None:
    """Set the conversation up as ``config`` says (instructions, turn control)."""
    conversation.instructions = config["instructions"]
    control = conversation.control
    detection = config["audio"]["input"]["turn_detection"]
    if detection is None:  # push-to-talk
        control.auto_commit = control.auto_reply = control.barge_in = False
        control.silence_ms = control.max_wait_ms = None
        return
    control.auto_commit = True
    control.auto_reply = detection["create_response"]
    control.barge_in = detection["interrupt_response"]
    if detection["type"] == "server_vad":
        control.silence_ms, control.max_wait_ms = detection["silence_duration_ms"], None
    else:
        control.silence_ms = None
        control.max_wait_ms = EAGERNESS_MAX_WAIT_MS[detection["eagerness"]]
