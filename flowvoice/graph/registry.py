"""Node type registry: built-in node modules plus the ``flowvoice.nodes`` entry-point group.

A third-party package exposes node classes with an entry point whose name is the node type
and whose value is the class::

    [project.entry-points."flowvoice.nodes"]
    "tts.mytts" = "mypkg.nodes:MyTTS"
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from flowvoice.node import Node

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flowvoice.nodes"
BUILTIN_MODULES = (
    "flowvoice.nodes.audio",
    "flowvoice.nodes.vad",
    "flowvoice.nodes.stt",
    "flowvoice.nodes.stt_remote",
    "flowvoice.nodes.turn",
    "flowvoice.nodes.turn_classifier",
    "flowvoice.nodes.turn_smart",
    "flowvoice.nodes.llm",
    "flowvoice.nodes.llm_remote",
    "flowvoice.nodes.text",
    "flowvoice.nodes.tts",
    "flowvoice.nodes.tts_realtime",
    "flowvoice.nodes.tts_remote",
    "flowvoice.nodes.websocket",
)

_REGISTRY: dict[str, type[Node]] = {}
_loaded = False

N = TypeVar("N", bound=type[Node])


def register(type_name: str) -> Callable[[N], N]:
    """Class decorator: register a node class under ``type_name`` (e.g. ``"stt.whisper"``)."""

    def decorate(cls: N) -> N:
        cls.type_name = type_name
        _REGISTRY[type_name] = cls
        return cls

    return decorate


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take the CLI down
            log.warning("cannot load node plugin %s (%s): %s", ep.name, ep.value, exc)
            continue
        if isinstance(cls, type) and issubclass(cls, Node):
            register(ep.name)(cls)
        else:
            log.warning("node plugin %s (%s) is not a flowvoice Node class", ep.name, ep.value)


def node_types() -> dict[str, type[Node]]:
    """All registered node types by name, sorted."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_node_type(type_name: str) -> type[Node] | None:
    """The class registered as ``type_name``, or None."""
    _load_all()
    return _REGISTRY.get(type_name)


def close_matches(type_name: str) -> list[str]:
    """Registered type names that look like ``type_name`` (for 'did you mean')."""
    _load_all()
    return difflib.get_close_matches(type_name, list(_REGISTRY), n=3, cutoff=0.75)
