"""``Store.apply`` on SQLite: compare-and-set task transitions, fencing, releasing dependents.

Everything here runs inside the caller's write transaction (``BEGIN IMMEDIATE``), so no other
writer can touch the rows meanwhile. That allows a fast shape: read up front the tasks named
and the dependents of those that may succeed; decide every compare-and-set and every
dependent's count in Python against that state, kept current as changes apply (so a batch
behaves exactly like its changes applied one at a time); then write one plain UPDATE per
applied change, one ``executemany`` for the dependents' counts and releases and one for the
events. ``UPDATE ... RETURNING`` per change, and a count-down statement per success, were
simpler and about twice as slow.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from agentdeck.backends.sqlite.rows import (
    INSERT_EVENT,
    Row,
    dumps,
    dumps_or_null,
    error_or_null,
    json_list,
)
from agentdeck.core.errors import LeaseLost
from agentdeck.core.models import CHANGE_VALUES, Change
from agentdeck.core.states import TaskStatus, check_task

__all__ = ["CHANGE_VALUES", "FENCE_NAME", "Plan", "apply_plans", "check_fence", "plan"]


#: The row of the ``fence`` table that ``apply(fence=...)`` checks and advances.
FENCE_NAME = "scheduler"

_SUCCEEDED = TaskStatus.SUCCEEDED.value
_BLOCKED = TaskStatus.BLOCKED.value
_READY = TaskStatus.READY.value


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated Change with its UPDATE statement and encoded parameters."""

    task_id: str
    to: str
    expect: frozenset[str]
    attempt: int | None
    sql: str
    params: tuple[Any, ...]
    new_attempt: int | None
    new_pending: int | None
    sets_agent: bool
    agent_id: str | None
    kind: str
    detail: str


@lru_cache(maxsize=512)
def _sources(expect: frozenset[TaskStatus], to: TaskStatus) -> tuple[str, frozenset[str]]:
    """``to`` and the expected statuses as stored strings, after checking that each expected
    status may reach ``to`` (cached: a batch repeats a handful of shapes)."""
    target = TaskStatus(to)
    sources = sorted(TaskStatus(s) for s in expect)
    for status in sources:
        check_task(status, target)
    return target.value, frozenset(s.value for s in sources)


@lru_cache(maxsize=512)
def _update_sql(names: tuple[str, ...]) -> str:
    # Guarded by the exact status and attempt the decision was made on: redundant under the
    # write lock, but it keeps every write a compare-and-set on its own.
    assignments = "".join(f", {name} = ?" for name in names)
    return (
        f"UPDATE tasks SET status = ?, updated_at = ?{assignments} "
        "WHERE id = ? AND status = ? AND attempt = ?"
    )


def _encode(task_id: str, name: str, value: Any) -> Any:
    if name == "output":
        return dumps_or_null(value, f"output for task {task_id!r}")
    if name == "error":
        return error_or_null(value, f"error for task {task_id!r}")
    return value


def plan(change: Change) -> Plan:
    """Validate one Change and build its statement.

    Raises ValueError for a value name that is not a column (or a value that is not JSON),
    and InvalidTransition when ``expect`` holds a status that cannot reach ``to``.
    """
    values = change.values
    if not CHANGE_VALUES.issuperset(values):
        unknown = sorted(set(values) - CHANGE_VALUES)
        raise ValueError(
            f"change for task {change.task_id!r} sets unknown value(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(CHANGE_VALUES))}"
        )
    to, expect = _sources(frozenset(change.expect), change.to)
    names = tuple(sorted(values))  # sorted: equal key sets share one cached statement
    detail = (
        dumps(dict(change.detail), f"detail of the change for task {change.task_id!r}")
        if change.detail
        else "{}"
    )
    return Plan(
        task_id=change.task_id,
        to=to,
        expect=expect,
        attempt=change.attempt,
        sql=_update_sql(names),
        params=tuple(_encode(change.task_id, n, values[n]) for n in names),
        new_attempt=values.get("attempt"),
        new_pending=values.get("pending"),
        sets_agent="agent_id" in values,
        agent_id=values.get("agent_id"),
        kind=change.event or to,
        detail=detail,
    )


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


@dataclass(slots=True)
class _State:
    """What the batch needs to know of a task, kept current as its changes are decided."""

    status: str
    attempt: int
    agent_id: str | None
    pending: int
    workflow_id: str
    key: str


def apply_plans(
    conn: sqlite3.Connection, plans: list[Plan], at: float
) -> tuple[list[str], list[str]]:
    """Apply ``plans`` in order; returns the ids moved and the ids released, each once, in the
    order it first happened. Skipped changes write nothing."""
    named = {p.task_id for p in plans}
    succeeding = {p.task_id for p in plans if p.to == _SUCCEEDED}
    # The tasks waiting on those that may succeed here: the only ones this batch can release.
    waiting: dict[str, list[str]] = {}
    if succeeding:
        for needs_id, task_id in conn.execute(
            "SELECT needs_id, task_id FROM task_deps "
            "WHERE needs_id IN (SELECT value FROM json_each(?)) ORDER BY needs_id, task_id",
            (json_list(succeeding),),
        ):
            waiting.setdefault(needs_id, []).append(task_id)
    dependents = {d for ds in waiting.values() for d in ds}
    states = {
        row[0]: _State(*row[1:])
        for row in conn.execute(
            "SELECT id, status, attempt, agent_id, pending, workflow_id, key FROM tasks "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json_list(named | dependents),),
        )
    }
    moved: dict[str, None] = {}  # insertion-ordered sets
    released: dict[str, None] = {}
    unwritten: dict[str, None] = {}  # dependents whose new pending/status is not written yet
    events: list[Row] = []
    for p in plans:
        state = states.get(p.task_id)
        if state is None or state.status not in p.expect:
            continue
        if p.attempt is not None and state.attempt != p.attempt:
            continue
        if p.task_id in unwritten:  # write its count first, so the guard below sees the truth
            del unwritten[p.task_id]
            _write_counts(conn, [p.task_id], states, at)
        cursor = conn.execute(p.sql, (p.to, at, *p.params, p.task_id, state.status, state.attempt))
        if cursor.rowcount != 1:  # cannot happen while we hold the write lock
            continue
        before, agent_before = state.status, state.agent_id
        state.status = p.to
        if p.new_attempt is not None:
            state.attempt = p.new_attempt
        if p.new_pending is not None:
            state.pending = p.new_pending
        if p.sets_agent:
            state.agent_id = p.agent_id
        moved[p.task_id] = None
        # The event names the agent involved, even when the change clears the task's.
        agent = state.agent_id if state.agent_id is not None else agent_before
        events.append(
            (p.task_id, state.workflow_id, at, p.kind, state.attempt, before, p.to, agent, p.detail)
        )
        if p.to == _SUCCEEDED:
            for dep_id in waiting.get(p.task_id, ()):
                if _count_off(states[dep_id]):
                    released[dep_id] = None
                    events.append(_ready_event(dep_id, states[dep_id], state.key, at))
                unwritten[dep_id] = None
    _write_counts(conn, list(unwritten), states, at)
    conn.executemany(INSERT_EVENT, events)
    return list(moved), list(released)


def _count_off(dependent: _State) -> bool:
    """One need of ``dependent`` succeeded: lower its count; True if that releases it."""
    dependent.pending = max(dependent.pending - 1, 0)
    if dependent.status == _BLOCKED and dependent.pending == 0:
        dependent.status = _READY
        return True
    return False


def _ready_event(task_id: str, dependent: _State, key: str, at: float) -> Row:
    detail = dumps({"released_by": key}, "detail")
    return (
        task_id,
        dependent.workflow_id,
        at,
        "ready",
        dependent.attempt,
        _BLOCKED,
        _READY,
        None,
        detail,
    )


def _write_counts(
    conn: sqlite3.Connection, ids: list[str], states: dict[str, _State], at: float
) -> None:
    """Write the pending counts (and releases) decided for dependents."""
    conn.executemany(
        "UPDATE tasks SET status = ?, pending = ?, updated_at = ? WHERE id = ?",
        [(states[i].status, states[i].pending, at, i) for i in ids],
    )
