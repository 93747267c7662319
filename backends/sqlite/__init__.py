"""The SQLite backends: ``SqliteStore`` (the store) and ``SqliteRegistry`` (the registry).

Both are imported on first use, so importing one does not load the other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentdeck.backends.sqlite.registry import SqliteRegistry
    from agentdeck.backends.sqlite.store import SqliteStore

__all__ = ["SqliteRegistry", "SqliteStore"]

_HOMES = {
    "SqliteStore": "agentdeck.backends.sqlite.store",
    "SqliteRegistry": "agentdeck.backends.sqlite.registry",
}


def __getattr__(name: str) -> Any:
    """Import ``SqliteStore`` or ``SqliteRegistry`` from its module when first asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
