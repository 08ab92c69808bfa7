"""Helpers for tests, benchmarks and deployment measurements; nothing here is a node a user
builds graphs from, and the node registry never imports this package.

- :mod:`flowvoice.testing.nodes`: ``test.tone``, ``test.passthrough``, ``test.text``,
  ``test.collect`` (small generic nodes, no models);
- :mod:`flowvoice.testing.scripted_mic`: ``test.scripted_mic``, a microphone that speaks WAV
  files on cue (barge-in tests and ``flowvoice bench bargein``);
- :mod:`flowvoice.testing.server_process`: a ``flowvoice run`` server in a subprocess (tests,
  ``flowvoice bench load``, ``deploy/measure_scaling.py``);
- :mod:`flowvoice.testing.app_server`: an app under uvicorn in a thread of this process
  (tests, ``flowvoice bench soak``).

Their node types exist only once :func:`register_nodes` has run (importing one of the node
modules registers its nodes too): ``flowvoice nodes`` does not list them.
"""

from __future__ import annotations

import importlib

NODE_MODULES = ("flowvoice.testing.nodes", "flowvoice.testing.scripted_mic")


def register_nodes() -> None:
    """Register the ``test.*`` node types (idempotent)."""
    for module in NODE_MODULES:
        importlib.import_module(module)
