"""Rows of the PostgreSQL store to and from the frozen dataclasses of :mod:`core.models`.

``jsonb`` values travel as JSON text both ways (asyncpg's default for ``jsonb``): we encode
them here, so a value that is not JSON fails with a ValueError naming the field before
anything is sent, and decoding stays in one place. ``text[]`` travels as a list of str.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentdeck.core.models import JSON, Command, CommandStatus, ErrorInfo, Task, TaskEvent, Workflow
from agentdeck.core.states import TaskStatus, WorkflowStatus

__all__ = [
    "COMMAND_COLUMNS",
    "EVENT_COLUMNS",
    "EVENT_INSERT_COLUMNS",
    "TASK_COLUMNS",
    "WORKFLOW_COLUMNS",
    "command_from_row",
    "command_to_row",
    "dumps",
    "dumps_or_null",
    "error_or_null",
    "event_from_row",
    "task_from_row",
    "task_to_row",
    "workflow_from_row",
    "workflow_to_row",
]

Row = Mapping[str, Any]
"""A record as asyncpg returns it (read by column name)."""

TASK_COLUMNS: tuple[str, ...] = (
    "id",
    "workflow_id",
    "key",
    "capability",
    "status",
    "input",
    "needs",
    "pending",
    "created_at",
    "updated_at",
    "timeout",
    "attempt",
    "first_attempt",
    "retry",
    "output",
    "error",
    "agent_id",
    "not_before",
    "deadline",
    "started_at",
    "finished_at",
)
WORKFLOW_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "status",
    "created_at",
    "updated_at",
    "task_count",
    "finished_at",
    "labels",
)
EVENT_INSERT_COLUMNS: tuple[str, ...] = (
    "task_id",
    "workflow_id",
    "at",
    "kind",
    "attempt",
    "from_status",
    "to_status",
    "agent_id",
    "detail",
)
EVENT_COLUMNS: tuple[str, ...] = ("seq", *EVENT_INSERT_COLUMNS)
COMMAND_COLUMNS: tuple[str, ...] = (
    "id",
    "action",
    "target",
    "created_at",
    "actor",
    "args",
    "status",
    "result",
    "finished_at",
)


def dumps(value: JSON, what: str) -> str:
    """``value`` as compact JSON text. Raises ValueError naming ``what`` when it is not JSON
    (NaN and infinities included: ``jsonb`` has no way to store them)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc


def dumps_or_null(value: JSON, what: str) -> str | None:
    """Like :func:`dumps`, but None stays SQL NULL."""
    return None if value is None else dumps(value, what)


def _loads_or_none(text: str | None) -> JSON:
    return None if text is None else json.loads(text)


def error_or_null(error: object, what: str) -> str | None:
    """An ErrorInfo as JSON text; None stays NULL. Raises ValueError for anything else."""
    if error is None:
        return None
    if not isinstance(error, ErrorInfo):
        raise ValueError(f"{what} must be an ErrorInfo or None, got {type(error).__name__}")
    return dumps(error.to_dict(), what)


def task_from_row(r: Row) -> Task:
    """A ``tasks`` record (with every column of :data:`TASK_COLUMNS`) as a Task."""
    error = r["error"]
    return Task(
        id=r["id"],
        workflow_id=r["workflow_id"],
        key=r["key"],
        capability=r["capability"],
        status=TaskStatus(r["status"]),
        input=json.loads(r["input"]),
        needs=tuple(r["needs"]),
        pending=r["pending"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        timeout=r["timeout"],
        attempt=r["attempt"],
        first_attempt=r["first_attempt"],
        retry=_loads_or_none(r["retry"]),
        output=_loads_or_none(r["output"]),
        error=ErrorInfo.from_dict(json.loads(error)) if error is not None else None,
        agent_id=r["agent_id"],
        not_before=r["not_before"],
        deadline=r["deadline"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def task_to_row(t: Task) -> tuple[Any, ...]:
    """A Task as a ``tasks`` row in :data:`TASK_COLUMNS` order. Raises ValueError."""
    what = f"task {t.id!r}"
    return (
        t.id,
        t.workflow_id,
        t.key,
        t.capability,
        TaskStatus(t.status).value,
        dumps(t.input, f"input of {what}"),
        list(t.needs),
        t.pending,
        t.created_at,
        t.updated_at,
        t.timeout,
        t.attempt,
        t.first_attempt,
        dumps_or_null(None if t.retry is None else dict(t.retry), f"retry of {what}"),
        dumps_or_null(t.output, f"output of {what}"),
        error_or_null(t.error, f"error of {what}"),
        t.agent_id,
        t.not_before,
        t.deadline,
        t.started_at,
        t.finished_at,
    )


def workflow_from_row(r: Row) -> Workflow:
    """A ``workflows`` record as a Workflow."""
    return Workflow(
        id=r["id"],
        name=r["name"],
        status=WorkflowStatus(r["status"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        task_count=r["task_count"],
        finished_at=r["finished_at"],
        labels=json.loads(r["labels"]),
    )


def workflow_to_row(w: Workflow) -> tuple[Any, ...]:
    """A Workflow as a ``workflows`` row in :data:`WORKFLOW_COLUMNS` order. Raises ValueError."""
    return (
        w.id,
        w.name,
        WorkflowStatus(w.status).value,
        w.created_at,
        w.updated_at,
        w.task_count,
        w.finished_at,
        dumps(dict(w.labels), f"labels of workflow {w.id!r}"),
    )


def event_from_row(r: Row) -> TaskEvent:
    """A ``task_events`` record as a TaskEvent."""
    from_status, to_status = r["from_status"], r["to_status"]
    return TaskEvent(
        seq=r["seq"],
        task_id=r["task_id"],
        workflow_id=r["workflow_id"],
        at=r["at"],
        kind=r["kind"],
        attempt=r["attempt"],
        from_status=TaskStatus(from_status) if from_status is not None else None,
        to_status=TaskStatus(to_status) if to_status is not None else None,
        agent_id=r["agent_id"],
        detail=json.loads(r["detail"]),
    )


def command_from_row(r: Row) -> Command:
    """A ``commands`` record as a Command."""
    return Command(
        id=r["id"],
        action=r["action"],
        target=r["target"],
        created_at=r["created_at"],
        actor=r["actor"],
        args=json.loads(r["args"]),
        status=CommandStatus(r["status"]),
        result=r["result"],
        finished_at=r["finished_at"],
    )


def command_to_row(c: Command) -> tuple[Any, ...]:
    """A Command as a ``commands`` row in :data:`COMMAND_COLUMNS` order. Raises ValueError."""
    return (
        c.id,
        c.action,
        c.target,
        c.created_at,
        c.actor,
        dumps(dict(c.args), f"args of command {c.id!r}"),
        CommandStatus(c.status).value,
        c.result,
        c.finished_at,
    )
