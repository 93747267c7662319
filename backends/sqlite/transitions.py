"""``Store.apply`` on SQLite: the statements around the shared decision.

Everything here runs inside the caller's write transaction (``BEGIN IMMEDIATE``), so no other
writer can touch the rows meanwhile. That allows a fast shape, whatever the batch size: read up
front the tasks named and the dependents of those that may succeed; decide every
compare-and-set and every dependent's count in Python (:func:`backends.sql.decide.decide`);
then one ``executemany`` writes each touched task's final state, one appends the events, and
one query reads the tasks back. ``UPDATE ... RETURNING`` per change, and a count-down
statement per success, were simpler and about twice as slow.
"""

from __future__ import annotations

import sqlite3

from agentdeck.backends.sql import decide
from agentdeck.backends.sql.codec import TASK_COLUMNS, columns
from agentdeck.backends.sql.decide import Plan, TaskState
from agentdeck.backends.sqlite.dialect import INSERT_EVENT, TASKS, in_list, json_list
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


def _update_sql() -> str:
    """One UPDATE per decided state; its parameters are :func:`decide.write_row` then ``at``.

    Output and error are written only when the batch set them (``set_output``/``set_error``).
    """
    n = {name: f"?{i}" for i, name in enumerate(decide.WRITE_COLUMNS, start=1)}
    plain = "".join(f", {name} = {n[name]}" for name in decide.SCALARS)
    return (
        f"UPDATE tasks SET status = {n['status']}, updated_at = ?{len(n) + 1}{plain}, "
        f"output = CASE WHEN {n['set_output']} THEN {n['output']} ELSE output END, "
        f"error = CASE WHEN {n['set_error']} THEN {n['error']} ELSE error END "
        f"WHERE id = {n['id']}"
    )


_UPDATE_SQL = _update_sql()


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
    conn.executemany(_UPDATE_SQL, [(*decide.write_row(s), at) for s in decision.writes])
    conn.executemany(INSERT_EVENT, decision.events)
    wanted = json_list(decision.moved + decision.released)
    tasks = map(TASKS.from_row, conn.execute(_TASKS_SQL, (wanted,)))
    return decide.applied(decision, tasks)
