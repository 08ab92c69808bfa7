"""Hugging Face hub weights: is a file in the local cache, and how does one download it.

Nothing here touches the network: nodes check the cache before constructing an engine that
would otherwise download (or hang offline), and name the exact command when a file is missing.
"""

from __future__ import annotations

from importlib import metadata

from flowvoice.nodes._deps import require


def hub_cli() -> str:
    """The hub's download command: ``hf`` (huggingface_hub >= 1.0), else ``huggingface-cli``."""
    try:
        major = int(metadata.version("huggingface_hub").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return "hf"
    return "hf" if major >= 1 else "huggingface-cli"


def download_hint(repo: str, files: list[str] | None = None, *options: str) -> str:
    """The command (in backticks) that fetches ``files`` (default: all) of ``repo``."""
    words = [hub_cli(), "download", repo, *(files or []), *options]
    return f"`{' '.join(words)}`"


def missing_files(repo: str, files: list[str], revision: str | None = None) -> list[str]:
    """The ``files`` of hub repo ``repo`` that are not in the local Hugging Face cache."""
    hub = require("huggingface_hub", "huggingface-hub", "pip install huggingface-hub")
    return [
        name
        for name in files
        if not isinstance(hub.try_to_load_from_cache(repo, name, revision=revision), str)
    ]
