"""A workflow with its progress, as tables and ``--json`` show it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdeck.core.models import Workflow
from agentdeck.core.states import TASK_TERMINAL, TaskStatus


def summarize(workflow: Workflow, counts: Mapping[TaskStatus, int]) -> dict[str, Any]:
    """A workflow with its progress, for tables and ``--json``."""
    done = sum(n for s, n in counts.items() if s in TASK_TERMINAL)
    return {
        "id": workflow.id,
        "name": workflow.name,
        "status": workflow.status.value,
        "tasks": workflow.task_count,
        "done": done,
        "counts": {s.value: n for s, n in counts.items() if n},
        "created_at": workflow.created_at,
        "finished_at": workflow.finished_at,
    }
