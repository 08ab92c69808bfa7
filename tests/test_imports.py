"""The package's import graph has no cycles (scripts/import_cycles.py lists them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The layers, lowest first: a module may import only from its own layer or lower ones.
LAYERS = [
    ["flowvoice.frames"],
    ["flowvoice.node"],
    ["flowvoice.graph"],
    ["flowvoice.runtime"],
    ["flowvoice.conversation", "flowvoice.transport"],
    ["flowvoice.nodes"],
]


def _layer(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return len(LAYERS)  # server, CLI, chat, benchmarks, testing: the top


def _script():
    spec = importlib.util.spec_from_file_location(
        "import_cycles", ROOT / "scripts" / "import_cycles.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles():
    assert _script().cycles(ROOT / "flowvoice") == []


def test_imports_point_down_the_layers():
    script = _script()
    modules = script.module_names(ROOT / "flowvoice")
    upward = [
        (name, target, line)
        for name, path in modules.items()
        for target, line, _ in script.imports(name, path, modules)
        if _layer(target) > _layer(name)
    ]
    assert upward == []


def test_the_registry_loads_no_test_or_benchmark_module():
    from flowvoice.graph.registry import BUILTIN_MODULES

    assert [
        m for m in BUILTIN_MODULES if m.startswith(("flowvoice.testing", "flowvoice.bench"))
    ] == []
