"""The ``agentdeck`` command line.

``agentdeck`` with no command opens the control centre; ``--daemon`` runs the same runtime
headless. Tables are for people, ``--json`` for scripts; errors go to stderr as one line and
the exit code is non-zero. Nothing imported at module level loads Textual.

One module per thing the command line holds: the group and its shared settings (``root``),
workflows and tasks, agents, the operator actions (from the actions table), breakers, holds,
snapshots, dead letters, usage, and how answers are printed (``output``). Importing this package
registers every command on :data:`main`.
"""

from __future__ import annotations

from agentdeck.tui.cli import (
    actions,
    agents,
    breakers,
    dead_letters,
    holds,
    snapshots,
    usage,
    workflows,
)
from agentdeck.tui.cli.root import main

__all__ = [
    "actions",
    "agents",
    "breakers",
    "dead_letters",
    "holds",
    "main",
    "snapshots",
    "usage",
    "workflows",
]
