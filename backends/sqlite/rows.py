"""Rows of the SQLite store to and from the frozen dataclasses of :mod:`core.models`.

JSON-shaped fields are stored as JSON text; ``needs`` as a JSON list read back as a tuple; an
``ErrorInfo`` through ``to_dict``/``from_dict``. Floats and None round-trip exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from agentdeck.core.models import JSON, Command, CommandStatus, ErrorInfo, Task, TaskEvent, Workflow
from agentdeck.core.states import TaskStatus, WorkflowStatus

Row = tuple[Any, ...]

TASK_COLUMNS = (
    "id, workflow_id, key, capability, status, input, needs, pending, created_at, updated_at, "
    "timeout, attempt, first_attempt, retry, output, error, agent_id, not_before, deadline, "
    "started_at, finished_at"
)
WORKFLOW_COLUMNS = "id, name, status, created_at, updated_at, task_count, finished_at, labels"
EVENT_COLUMNS = (
    "seq, task_id, workflow_id, at, kind, attempt, from_status, to_status, agent_id, detail"
)
COMMAND_COLUMNS = "id, action, target, created_at, actor, args, status, result, finished_at"

INSERT_TASK = f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * 21)})"
INSERT_WORKFLOW = f"INSERT INTO workflows ({WORKFLOW_COLUMNS}) VALUES ({', '.join('?' * 8)})"
INSERT_COMMAND = f"INSERT INTO commands ({COMMAND_COLUMNS}) VALUES ({', '.join('?' * 9)})"
INSERT_EVENT = (
    "INSERT INTO task_events (task_id, workflow_id, at, kind, attempt, from_status, "
    "to_status, agent_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def dumps(value: JSON, what: str) -> str:
    """``value`` as compact JSON text. Raises ValueError naming ``what`` when it is not JSON."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc


def dumps_or_null(value: JSON, what: str) -> str | None:
    """Like :func:`dumps`, but None stays NULL."""
    return None if value is None else dumps(value, what)


def loads_or_none(text: str | None) -> JSON:
    """JSON text back to a value; NULL to None."""
    return None if text is None else json.loads(text)


def json_list(values: Iterable[str]) -> str:
    """A list as one JSON parameter, read in SQL as ``IN (SELECT value FROM json_each(?))``.

    One statement text for any length keeps the statement cache useful and avoids the
    bound-variable limit.
    """
    return json.dumps(list(values))


def error_or_null(error: ErrorInfo | None, what: str) -> str | None:
    """An ErrorInfo as JSON text; None stays NULL. Raises ValueError for anything else."""
    if error is None:
        return None
    if not isinstance(error, ErrorInfo):
        raise ValueError(f"{what} must be an ErrorInfo or None, got {type(error).__name__}")
    return dumps(error.to_dict(), what)


_TASK_STATUS = {s.value: s for s in TaskStatus}  # a dict lookup is ten times Enum(...)


def task_from_row(r: Row) -> Task:
    """A ``tasks`` row (columns in :data:`TASK_COLUMNS` order) as a Task."""
    # Hot: apply and the listings decode thousands of rows, hence the shortcuts for the
    # common empty columns.
    return Task(
        id=r[0],
        workflow_id=r[1],
        key=r[2],
        capability=r[3],
        status=_TASK_STATUS[r[4]],
        input=json.loads(r[5]),
        needs=() if r[6] == "[]" else tuple(json.loads(r[6])),
        pending=r[7],
        created_at=r[8],
        updated_at=r[9],
        timeout=r[10],
        attempt=r[11],
        first_attempt=r[12],
        retry=None if r[13] is None else json.loads(r[13]),
        output=None if r[14] is None else json.loads(r[14]),
        error=None if r[15] is None else ErrorInfo.from_dict(json.loads(r[15])),
        agent_id=r[16],
        not_before=r[17],
        deadline=r[18],
        started_at=r[19],
        finished_at=r[20],
    )


def task_to_row(t: Task) -> Row:
    """A Task as a ``tasks`` row, in :data:`TASK_COLUMNS` order. Raises ValueError."""
    what = f"task {t.id!r}"
    return (
        t.id,
        t.workflow_id,
        t.key,
        t.capability,
        TaskStatus(t.status).value,
        dumps(t.input, f"input of {what}"),
        dumps(list(t.needs), f"needs of {what}"),
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
    """A ``workflows`` row as a Workflow."""
    return Workflow(
        id=r[0],
        name=r[1],
        status=WorkflowStatus(r[2]),
        created_at=r[3],
        updated_at=r[4],
        task_count=r[5],
        finished_at=r[6],
        labels=json.loads(r[7]),
    )


def workflow_to_row(w: Workflow) -> Row:
    """A Workflow as a ``workflows`` row. Raises ValueError."""
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
    """A ``task_events`` row as a TaskEvent."""
    return TaskEvent(
        seq=r[0],
        task_id=r[1],
        workflow_id=r[2],
        at=r[3],
        kind=r[4],
        attempt=r[5],
        from_status=TaskStatus(r[6]) if r[6] is not None else None,
        to_status=TaskStatus(r[7]) if r[7] is not None else None,
        agent_id=r[8],
        detail=json.loads(r[9]),
    )


def command_from_row(r: Row) -> Command:
    """A ``commands`` row as a Command."""
    return Command(
        id=r[0],
        action=r[1],
        target=r[2],
        created_at=r[3],
        actor=r[4],
        args=json.loads(r[5]),
        status=CommandStatus(r[6]),
        result=r[7],
        finished_at=r[8],
    )


def command_to_row(c: Command) -> Row:
    """A Command as a ``commands`` row. Raises ValueError."""
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
