"""Rows of the SQL stores to and from the frozen dataclasses of :mod:`core.models`.

One codec for both engines. JSON-shaped fields travel as compact JSON text (SQLite stores the
text; asyncpg passes ``jsonb`` as text both ways); an ``ErrorInfo`` goes through
``to_dict``/``from_dict``; floats and None round-trip exactly. The one column the engines
store differently, ``needs`` (JSON text on SQLite, ``text[]`` on PostgreSQL), is a
:class:`TaskCodec` each engine builds once.

Rows are read by position, in the order of the ``*_COLUMNS`` tuples: a ``sqlite3`` row and an
``asyncpg.Record`` both index that way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentdeck.core.models import (
    JSON,
    AttemptUsage,
    Budget,
    Command,
    CommandStatus,
    ErrorInfo,
    Task,
    TaskEvent,
    Usage,
    Workflow,
)
from agentdeck.core.states import TaskStatus, WorkflowStatus

__all__ = [
    "COMMAND_COLUMNS",
    "EVENT_COLUMNS",
    "EVENT_INSERT_COLUMNS",
    "TASK_COLUMNS",
    "USAGE_COLUMNS",
    "WORKFLOW_COLUMNS",
    "Row",
    "TaskCodec",
    "budget_or_null",
    "columns",
    "command_from_row",
    "command_to_row",
    "dumps",
    "dumps_or_null",
    "error_or_null",
    "event_from_row",
    "event_to_row",
    "loads_or_none",
    "usage_from_row",
    "usage_to_row",
    "workflow_from_row",
    "workflow_to_row",
]

Row = Sequence[Any]
"""A row as an engine returns it, read by position."""

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
    "budget",
    "hold_reason",
)
USAGE_COLUMNS: tuple[str, ...] = (
    "task_id",
    "workflow_id",
    "attempt",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cost_usd",
    "at",
)
"""The ``attempt_usage`` columns: one row per task attempt that reported usage."""
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


def columns(names: Iterable[str], prefix: str = "") -> str:
    """``names`` as a select list, each behind ``prefix`` (``"t."``) when given."""
    return ", ".join(f"{prefix}{name}" for name in names)


# --------------------------------------------------------------------------------- JSON


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""What ``json.dumps(value, separators=(",", ":"), allow_nan=False)`` builds on every call,
built once (it keeps no state between calls): a few microseconds less per value written."""


def dumps(value: JSON, what: str) -> str:
    """``value`` as compact JSON text. Raises ValueError naming ``what`` when it is not JSON,
    NaN and infinities included: they are not JSON, ``jsonb`` cannot store them, and a value
    must be refused the same way whichever engine holds the store."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc


def dumps_or_null(value: JSON, what: str) -> str | None:
    """Like :func:`dumps`, but None stays SQL NULL."""
    return None if value is None else dumps(value, what)


_DECODER = json.JSONDecoder()


def _loads(text: str) -> JSON:
    """``json.loads(text)``, the same value or error, with less Python around the C scanner
    (this runs for every task row read: a microsecond each counts). ``null``, the input and
    output of most tasks, is not parsed at all. A text the fast path does not take whole
    (whitespace around it, an error) goes to ``json.loads`` itself."""
    if text == "null":
        return None
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(text)  # raises the error json.loads gives
    return value if end == len(text) else json.loads(text)


def loads_or_none(text: str | None) -> JSON:
    """JSON text back to a value; NULL to None."""
    return None if text is None else _loads(text)


def error_or_null(error: object, what: str) -> str | None:
    """An ErrorInfo as JSON text; None stays NULL. Raises ValueError for anything else."""
    if error is None:
        return None
    if not isinstance(error, ErrorInfo):
        raise ValueError(f"{what} must be an ErrorInfo or None, got {type(error).__name__}")
    return dumps(error.to_dict(), what)


# -------------------------------------------------------------------------------- tasks

_TASK_STATUS = {s.value: s for s in TaskStatus}  # a dict lookup is ten times Enum(...)


@dataclass(frozen=True, slots=True)
class TaskCodec:
    """Tasks to and from rows of an engine, which says how it stores ``needs``."""

    encode_needs: Callable[[tuple[str, ...]], Any]
    """A task's needs as the engine stores them (never fails: they are strings)."""
    decode_needs: Callable[[Any], tuple[str, ...]]
    """The stored needs back as a tuple."""

    def from_row(self, r: Row) -> Task:
        """A ``tasks`` row (columns in :data:`TASK_COLUMNS` order) as a Task."""
        # Hot: apply and the listings decode thousands of rows, hence the shortcuts for the
        # common empty columns, and the arguments by position: a frozen dataclass takes 21
        # keywords in twice the time (TASK_COLUMNS is Task's field order; a test pins it).
        return Task(
            r[0],  # id
            r[1],  # workflow_id
            r[2],  # key
            r[3],  # capability
            _TASK_STATUS[r[4]],
            _loads(r[5]),  # input
            self.decode_needs(r[6]),
            r[7],  # pending
            r[8],  # created_at
            r[9],  # updated_at
            r[10],  # timeout
            r[11],  # attempt
            r[12],  # first_attempt
            None if r[13] is None else _loads(r[13]),  # retry
            None if r[14] is None else _loads(r[14]),  # output
            None if r[15] is None else ErrorInfo.from_dict(_loads(r[15])),
            r[16],  # agent_id
            r[17],  # not_before
            r[18],  # deadline
            r[19],  # started_at
            r[20],  # finished_at
        )

    def to_row(self, t: Task) -> tuple[Any, ...]:
        """A Task as a ``tasks`` row, in :data:`TASK_COLUMNS` order. Raises ValueError."""
        what = f"task {t.id!r}"
        return (
            t.id,
            t.workflow_id,
            t.key,
            t.capability,
            TaskStatus(t.status).value,
            dumps(t.input, f"input of {what}"),
            self.encode_needs(tuple(t.needs)),
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


# ---------------------------------------------------------- workflows, events, commands


def workflow_from_row(r: Row) -> Workflow:
    """A ``workflows`` row (:data:`WORKFLOW_COLUMNS` order) as a Workflow."""
    return Workflow(
        id=r[0],
        name=r[1],
        status=WorkflowStatus(r[2]),
        created_at=r[3],
        updated_at=r[4],
        task_count=r[5],
        finished_at=r[6],
        labels=json.loads(r[7]),
        budget=None if r[8] is None else Budget(**json.loads(r[8])),
        hold_reason=r[9],
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
        budget_or_null(w.budget, f"budget of workflow {w.id!r}"),
        w.hold_reason,
    )


def usage_from_row(r: Row) -> AttemptUsage:
    """An ``attempt_usage`` row (:data:`USAGE_COLUMNS` order) as an AttemptUsage."""
    return AttemptUsage(
        task_id=r[0],
        workflow_id=r[1],
        attempt=r[2],
        usage=Usage(int(r[4]), int(r[5]), int(r[6]), int(r[7]), r[8], r[3]),
        at=r[9],
    )


def usage_to_row(u: AttemptUsage) -> tuple[Any, ...]:
    """An AttemptUsage as an ``attempt_usage`` row in :data:`USAGE_COLUMNS` order."""
    used = u.usage
    return (
        u.task_id,
        u.workflow_id,
        u.attempt,
        used.model,
        used.input_tokens,
        used.output_tokens,
        used.cache_creation_input_tokens,
        used.cache_read_input_tokens,
        used.cost_usd,
        u.at,
    )


def budget_or_null(budget: Budget | None, what: str) -> str | None:
    """A Budget as JSON text; None stays NULL."""
    return None if budget is None else dumps(budget.to_dict(), what)


def event_from_row(r: Row) -> TaskEvent:
    """A ``task_events`` row (:data:`EVENT_COLUMNS` order) as a TaskEvent."""
    return TaskEvent(
        seq=r[0],
        task_id=r[1],
        workflow_id=r[2],
        at=r[3],
        kind=r[4],
        attempt=r[5],
        from_status=None if r[6] is None else _TASK_STATUS[r[6]],
        to_status=None if r[7] is None else _TASK_STATUS[r[7]],
        agent_id=r[8],
        detail=json.loads(r[9]),
    )


def event_to_row(e: TaskEvent) -> tuple[Any, ...]:
    """A TaskEvent as a ``task_events`` row in :data:`EVENT_COLUMNS` order, its ``seq`` kept
    (for :meth:`core.ports.Store.load`). Raises ValueError."""
    return (
        e.seq,
        e.task_id,
        e.workflow_id,
        e.at,
        e.kind,
        e.attempt,
        None if e.from_status is None else TaskStatus(e.from_status).value,
        None if e.to_status is None else TaskStatus(e.to_status).value,
        e.agent_id,
        dumps(dict(e.detail), f"detail of an event of task {e.task_id!r}"),
    )


def command_from_row(r: Row) -> Command:
    """A ``commands`` row (:data:`COMMAND_COLUMNS` order) as a Command."""
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
