"""Import an optional engine package, or fail with the install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from flowvoice.node import NodeSetupError

OFFLINE_EXTRA = "pip install 'flowvoice[offline]'"


def require(module: str, package: str, extra: str = OFFLINE_EXTRA) -> ModuleType:
    """Import ``module``; when missing, raise NodeSetupError naming ``package`` and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NodeSetupError(
            f"the Python package '{package}' is not installed (import {module!r} failed: {exc}); "
            f"install it with `pip install {package}` or `{extra}`"
        ) from exc
