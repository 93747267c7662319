"""The write transactions of ``SqliteStore``, run on its worker thread inside ``BEGIN
IMMEDIATE`` (see :mod:`backends.sqlite.store`). Rows arrive built and encoded
(:mod:`backends.sql.writes`): what is left here is statements and the engine's errors.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from agentdeck.backends.sql.writes import Load, NewWorkflow, StatusChange
from agentdeck.backends.sqlite.dialect import (
    INSERT_COMMAND,
    INSERT_EVENT,
    INSERT_EVENT_WITH_SEQ,
    INSERT_TASK,
    INSERT_USAGE_AS_GIVEN,
    INSERT_WORKFLOW,
    json_list,
)
from agentdeck.backends.sqlite.transitions import check_fence
from agentdeck.core.errors import ConflictError, NotFound

__all__ = [
    "add_command",
    "create_workflow",
    "finish_command",
    "load",
    "set_workflow_budget",
    "set_workflow_status",
]

_INSERT_DEPS = "INSERT INTO task_deps (needs_id, task_id) VALUES (?, ?)"


def create_workflow(conn: sqlite3.Connection, new: NewWorkflow) -> None:
    """Write a workflow, its tasks, dependencies and ``created`` events. Raises ConflictError
    when the workflow or one of its tasks exists."""
    try:
        conn.execute(INSERT_WORKFLOW, new.workflow)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"workflow {new.workflow[0]!r} already exists") from exc
    try:
        conn.executemany(INSERT_TASK, new.tasks)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(
            f"a task of workflow {new.workflow[0]!r} already exists: {exc}"
        ) from exc
    conn.executemany(_INSERT_DEPS, new.deps)
    conn.executemany(INSERT_EVENT, new.events)


def load(conn: sqlite3.Connection, rows: Load) -> None:
    """Write records as they are. Raises ConflictError when one exists already, is orphaned,
    or a task needs one that is not loaded."""
    tables: tuple[tuple[str, str, list[Any]], ...] = (
        ("workflow", INSERT_WORKFLOW, rows.workflows),
        ("task", INSERT_TASK, rows.tasks),
        ("event", INSERT_EVENT_WITH_SEQ, rows.events),
        ("command", INSERT_COMMAND, rows.commands),
        ("usage record", INSERT_USAGE_AS_GIVEN, rows.usage),
    )
    for what, sql, values in tables:
        try:
            conn.executemany(sql, values)
        except sqlite3.IntegrityError as exc:
            raise ConflictError(
                f"cannot load: a {what} exists already or is orphaned: {exc}"
            ) from exc
    try:
        conn.executemany(_INSERT_DEPS, rows.deps)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"cannot load: a task needs one that is not loaded: {exc}") from exc


def set_workflow_status(conn: sqlite3.Connection, change: StatusChange, fence: int | None) -> bool:
    """Make ``change`` if the workflow's status is one of its sources; True if it did.
    Raises LeaseLost for an old ``fence`` and NotFound for an unknown workflow."""
    if fence is not None:
        check_fence(conn, fence)
    cursor = conn.execute(
        "UPDATE workflows SET status = ?, updated_at = ?, finished_at = ?, hold_reason = ? "
        "WHERE id = ? AND status IN (SELECT value FROM json_each(?))",
        (
            change.target,
            change.at,
            change.finished_at,
            change.reason,
            change.workflow_id,
            json_list(change.sources),
        ),
    )
    if cursor.rowcount:
        return True
    workflow_id = change.workflow_id
    if conn.execute("SELECT 1 FROM workflows WHERE id = ?", (workflow_id,)).fetchone() is None:
        raise NotFound(f"workflow {workflow_id!r} not found")
    return False


def set_workflow_budget(
    conn: sqlite3.Connection, workflow_id: str, budget: str | None, at: float, fence: int | None
) -> None:
    """Set a workflow's budget (JSON text or NULL). Raises LeaseLost and NotFound."""
    if fence is not None:
        check_fence(conn, fence)
    cursor = conn.execute(
        "UPDATE workflows SET budget = ?, updated_at = ? WHERE id = ?", (budget, at, workflow_id)
    )
    if not cursor.rowcount:
        raise NotFound(f"workflow {workflow_id!r} not found")


def add_command(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Queue a command. Raises ConflictError if its id exists."""
    try:
        conn.execute(INSERT_COMMAND, row)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"command {row[0]!r} already exists") from exc


def finish_command(
    conn: sqlite3.Connection,
    command_id: str,
    status: str,
    result: str,
    finished_at: float | None,
) -> None:
    """Record a command's outcome. Raises NotFound."""
    cursor = conn.execute(
        "UPDATE commands SET status = ?, result = ?, finished_at = ? WHERE id = ?",
        (status, result, finished_at, command_id),
    )
    if not cursor.rowcount:
        raise NotFound(f"command {command_id!r} not found")
