"""``flowvoice run`` with the test nodes registered and the real Piper voice made to block
forever inside its call on any sentence containing "hang" (tests/test_engine_hang.py runs it
in a subprocess to see the server exit for its supervisor)."""

from __future__ import annotations

import sys
import threading

from piper import PiperVoice

from flowvoice.cli import main
from flowvoice.testing import register_nodes

_never = threading.Event()
_synthesize = PiperVoice.synthesize


def synthesize(voice, text, *args, **kwargs):
    if "hang" in text:
        _never.wait()
    yield from _synthesize(voice, text, *args, **kwargs)


if __name__ == "__main__":
    register_nodes()
    PiperVoice.synthesize = synthesize
    sys.exit(main(["run", *sys.argv[1:]]))
