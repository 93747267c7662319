"""``Store.apply`` on SQLite: the statements around the shared decision.

Everything here runs inside the caller's write transaction (``BEGIN IMMEDIATE``), so no other
writer can touch the rows meanwhile. That allows a fast shape, whatever the batch size: read up
front the tasks named and the dependents of those that may succeed; decide every
compare-and-set and every dependent's count in Python (:func:`backends.sql.decide.decide`);
then one ``executemany`` per set of columns written writes each touched task's final state,
one appends the events, one the usage rows, and one query reads the tasks back.
``UPDATE ... RETURNING`` per change, and a count-down statement per success, were simpler
and about twice as slow.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import Any

from agentdeck.backends.sql import decide
from agentdeck.backends.sql.codec import TASK_COLUMNS, columns
from agentdeck.backends.sql.decide import Plan, TaskState
from agentdeck.backends.sqlite.dialect import (
    INSERT_EVENT,
    INSERT_USAGE,
    TASKS,
    in_list,
    json_list,
)
from agentdeck.core.errors import LeaseLost
from agentdeck.core.ports import Applied

__all__ = ["FENCE_NAME", "apply", "check_fence"]

#: The row of the ``fence`` table that ``apply(fence=...)`` checks and advances.
FENCE_NAME = "scheduler"

_DEPS_SQL = (
    f"SELECT needs_id, task_id FROM task_deps WHERE {in_list('needs_id', '?')} "
    "ORDER BY needs_id, task_id"
)
_STATES_SQL = f"SELECT {columns(decide.STATE_COLUMNS)} FROM tasks WHERE {in_list('id', '?')}"
_TASKS_SQL = f"SELECT {columns(TASK_COLUMNS)} FROM tasks WHERE {in_list('id', '?')}"


@lru_cache(maxsize=256)
def _update_sql(names: tuple[str, ...]) -> str:
    """The UPDATE of a task's status, ``updated_at`` and the columns ``names``; its parameters
    are the status, ``at``, the values of ``names`` and the id.

    Only the columns a batch set: SQLite maintains the index of every column an UPDATE sets,
    even to the value it had. Cached: a batch repeats a handful of shapes.
    """
    assignments = "".join(f", {name} = ?" for name in names)
    return f"UPDATE tasks SET status = ?, updated_at = ?{assignments} WHERE id = ?"


def check_fence(conn: sqlite3.Connection, fence: int) -> None:
    """Raise LeaseLost if a newer token has written; otherwise record ``fence`` as the newest."""
    row = conn.execute("SELECT token FROM fence WHERE name = ?", (FENCE_NAME,)).fetchone()
    if row is not None and row[0] > fence:
        raise LeaseLost(
            f"fencing token {fence} is older than token {row[0]}, which has already written: "
            "another scheduler holds the lease"
        )
    if row is None or row[0] < fence:
        conn.execute(
            "INSERT INTO fence (name, token) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET token = excluded.token",
            (FENCE_NAME, fence),
        )


def apply(conn: sqlite3.Connection, plans: list[Plan], at: float, fence: int | None) -> Applied:
    """Check ``fence``, then apply ``plans`` (validated by :func:`backends.sql.decide.plan`)
    in order; see :class:`backends.sql.decide.Decision` for what the answer holds."""
    if fence is not None:
        check_fence(conn, fence)
    if not plans:
        return Applied(tasks=[], released=[])
    ids = decide.succeeding(plans)
    waiting = decide.waiting_on(conn.execute(_DEPS_SQL, (json_list(ids),))) if ids else {}
    rows = conn.execute(_STATES_SQL, (json_list(decide.to_read(plans, waiting)),))
    decision = decide.decide(plans, {r[0]: TaskState(*r) for r in rows}, waiting, at)
    shapes: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}  # a statement per column set
    for s in decision.writes:
        names = decision.changed[s.id]
        values = (decide.value(s, name) for name in names)
        shapes.setdefault(names, []).append((s.status, at, *values, s.id))
    for names, params in shapes.items():
        conn.executemany(_update_sql(names), params)
    conn.executemany(INSERT_EVENT, decision.events)
    if decision.usage:
        conn.executemany(INSERT_USAGE, decision.usage)
    wanted = json_list(decision.moved + decision.released)
    tasks = map(TASKS.from_row, conn.execute(_TASKS_SQL, (wanted,)))
    return decide.applied(decision, tasks)
