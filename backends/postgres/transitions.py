"""``Store.apply`` on PostgreSQL: compare-and-set task transitions, fencing, releasing
dependents, in a number of round trips that does not grow with the batch.

Inside the caller's transaction, one call makes at most these statements:

1. the fence: one upsert that takes the fence row's lock and refuses an older token;
2. the dependents of every task the batch may make ``succeeded`` (``task_deps``, never
   updated after a workflow is written, so it needs no lock);
3. ``SELECT ... FOR UPDATE`` of every task named or depending on one, in id order (two
   stores locking overlapping batches cannot deadlock);
4. one ``UPDATE ... FROM unnest(...)  RETURNING`` writing the final state of every task the
   batch touched;
5. the events lock and one ``INSERT ... SELECT FROM unnest(...)`` of every event.

Between 3 and 4 the batch is decided in Python against the locked rows, change by change,
exactly as if its changes were applied one by one: a later change sees earlier ones (the
same task may move twice, a released dependent may be dispatched in the same call). While the
rows are locked no other writer can change them, so the decision cannot go stale; the
count-down of dependents (``pending - 1``, ``blocked -> ready`` at zero) is part of it and
lands in the same single UPDATE.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg

from agentdeck.backends.postgres.rows import (
    EVENT_INSERT_COLUMNS,
    TASK_COLUMNS,
    dumps,
    dumps_or_null,
    error_or_null,
    task_from_row,
)
from agentdeck.backends.postgres.schema import EVENTS_LOCK, LOCK_NAMESPACE
from agentdeck.core.errors import LeaseLost
from agentdeck.core.models import CHANGE_VALUES, Change
from agentdeck.core.ports import Applied
from agentdeck.core.states import TaskStatus, check_task

__all__ = ["CHANGE_VALUES", "FENCE_NAME", "Plan", "apply", "insert_events", "lock_events", "plan"]


#: The value columns kept in :class:`_State` and written back as they are at the end.
_SCALARS = (
    "attempt",
    "first_attempt",
    "agent_id",
    "not_before",
    "deadline",
    "started_at",
    "finished_at",
    "pending",
)

#: The row of the ``fence`` table that ``apply(fence=...)`` checks and advances.
FENCE_NAME = "scheduler"

Event = tuple[Any, ...]
"""An event row in :data:`backends.postgres.rows.EVENT_INSERT_COLUMNS` order."""

_SUCCEEDED = TaskStatus.SUCCEEDED.value
_BLOCKED = TaskStatus.BLOCKED.value
_READY = TaskStatus.READY.value

_LOCK_SQL = (
    "SELECT id, workflow_id, key, status, "
    + ", ".join(_SCALARS)
    + " FROM tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
)

# Output and error may be large: they are written only when a change set them (the set_*
# flags), never read back and rewritten.
_UPDATE_SQL = f"""
UPDATE tasks AS t SET
    status = u.status, updated_at = $1,
    attempt = u.attempt, first_attempt = u.first_attempt, agent_id = u.agent_id,
    not_before = u.not_before, deadline = u.deadline, started_at = u.started_at,
    finished_at = u.finished_at, pending = u.pending,
    output = CASE WHEN u.set_output THEN u.output ELSE t.output END,
    error = CASE WHEN u.set_error THEN u.error ELSE t.error END
FROM unnest(
    $2::text[], $3::text[], $4::integer[], $5::integer[], $6::text[], $7::float8[],
    $8::float8[], $9::float8[], $10::float8[], $11::integer[], $12::boolean[], $13::jsonb[],
    $14::boolean[], $15::jsonb[]
) AS u(id, status, attempt, first_attempt, agent_id, not_before, deadline, started_at,
       finished_at, pending, set_output, output, set_error, error)
WHERE t.id = u.id
RETURNING {", ".join(f"t.{c}" for c in TASK_COLUMNS)}
"""

_INSERT_EVENTS_SQL = f"""
INSERT INTO task_events ({", ".join(EVENT_INSERT_COLUMNS)})
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::float8[], $4::text[], $5::integer[], $6::text[], $7::text[],
    $8::text[], $9::jsonb[]
)
"""

_FENCE_SQL = """
INSERT INTO fence (name, token) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET token = GREATEST(fence.token, excluded.token)
RETURNING token
"""


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated Change with its values split and encoded for the database."""

    task_id: str
    to: str
    expect: frozenset[str]
    attempt: int | None
    scalars: tuple[tuple[str, Any], ...]
    output: tuple[str | None] | None  # (json,) when the change sets the output
    error: tuple[str | None] | None  # (json,) when the change sets the error
    kind: str
    detail: str


@lru_cache(maxsize=512)
def _sources(expect: frozenset[TaskStatus], to: TaskStatus) -> frozenset[str]:
    """The expected statuses as stored strings, after checking each may reach ``to``.

    Cached: a scheduler sends the same few (expect, to) pairs thousands of times.
    """
    for status in sorted(TaskStatus(s) for s in expect):
        check_task(status, TaskStatus(to))
    return frozenset(TaskStatus(s).value for s in expect)


def plan(change: Change) -> Plan:
    """Validate one Change and encode its values.

    Raises ValueError for a value name that is not a column (or a value that is not JSON),
    and InvalidTransition when ``expect`` holds a status that cannot reach ``to``.
    """
    values = change.values
    if not values.keys() <= CHANGE_VALUES:
        unknown = sorted(set(values) - CHANGE_VALUES)
        raise ValueError(
            f"change for task {change.task_id!r} sets unknown value(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(CHANGE_VALUES))}"
        )
    to = TaskStatus(change.to)
    expect = _sources(frozenset(change.expect), to)
    what = f"the change for task {change.task_id!r}"
    return Plan(
        task_id=change.task_id,
        to=to.value,
        expect=expect,
        attempt=change.attempt,
        scalars=tuple((name, values[name]) for name in _SCALARS if name in values),
        output=(dumps_or_null(values["output"], f"output of {what}"),)
        if "output" in values
        else None,
        error=(error_or_null(values["error"], f"error of {what}"),) if "error" in values else None,
        kind=change.event or to.value,
        detail=dumps(dict(change.detail), f"detail of {what}") if change.detail else "{}",
    )


async def check_fence(conn: asyncpg.Connection, fence: int) -> None:
    """Raise LeaseLost if a newer token has written; otherwise record ``fence`` as the newest.

    One upsert: it takes the fence row's lock (like ``SELECT ... FOR UPDATE``, held until the
    caller's transaction ends, so fenced writers run one at a time) and creates the row on
    the first fenced write without a race between two first writers.
    """
    newest = await conn.fetchval(_FENCE_SQL, FENCE_NAME, fence)
    if newest > fence:
        raise LeaseLost(
            f"fencing token {fence} is older than token {newest}, which has already written: "
            "another scheduler holds the lease"
        )


async def lock_events(conn: asyncpg.Connection) -> None:
    """Take the events lock until the caller's transaction ends.

    A ``bigserial`` hands out numbers in the order transactions ask, not the order they
    commit: without this lock a watcher polling ``events_since`` could see seq N+1 committed,
    move past it, and miss seq N committed a moment later. Taken just before the insert, it
    serializes only the end of event-writing transactions.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, EVENTS_LOCK)


async def insert_events(conn: asyncpg.Connection, events: list[Event]) -> None:
    """Append ``events`` in order (under :func:`lock_events`), in one statement."""
    if not events:
        return
    await lock_events(conn)
    await conn.execute(_INSERT_EVENTS_SQL, *(list(column) for column in zip(*events, strict=True)))


@dataclass(slots=True)
class _State:
    """A locked task as the batch has left it so far."""

    workflow_id: str
    key: str
    status: str
    attempt: int
    first_attempt: int
    agent_id: str | None
    not_before: float | None
    deadline: float | None
    started_at: float | None
    finished_at: float | None
    pending: int
    output: tuple[str | None] | None = None
    error: tuple[str | None] | None = None


async def apply(
    conn: asyncpg.Connection, plans: list[Plan], at: float, fence: int | None
) -> Applied:
    """Apply the changes planned (by :func:`plan`, which validates them before anything is
    written) in order inside the caller's transaction (see the module docstring).

    ``Applied.tasks`` holds each moved task once, in the order it first moved; ``released``
    each released dependent once, in the order of release; both as they stand at the end of
    the call.
    """
    if fence is not None:
        await check_fence(conn, fence)
    if not plans:
        return Applied(tasks=[], released=[])

    dependents: dict[str, list[str]] = {}
    succeeding = sorted({p.task_id for p in plans if p.to == _SUCCEEDED})
    if succeeding:
        for needs_id, task_id in await conn.fetch(
            "SELECT needs_id, task_id FROM task_deps WHERE needs_id = ANY($1::text[]) "
            "ORDER BY needs_id, task_id",
            succeeding,
        ):
            dependents.setdefault(needs_id, []).append(task_id)
    named = {p.task_id for p in plans}.union(*dependents.values())
    states = {
        r["id"]: _State(**{name: value for name, value in r.items() if name != "id"})
        for r in await conn.fetch(_LOCK_SQL, list(named))
    }

    touched: dict[str, None] = {}  # insertion-ordered sets of ids
    moved: dict[str, None] = {}
    released: dict[str, None] = {}
    events: list[Event] = []
    for p in plans:
        state = states.get(p.task_id)
        if state is None or state.status not in p.expect:
            continue
        if p.attempt is not None and state.attempt != p.attempt:
            continue
        before, agent_before = state.status, state.agent_id
        state.status = p.to
        for name, value in p.scalars:
            setattr(state, name, value)
        if p.output is not None:
            state.output = p.output
        if p.error is not None:
            state.error = p.error
        touched[p.task_id] = moved[p.task_id] = None
        # The event names the agent involved, even when the change clears the task's.
        agent = state.agent_id if state.agent_id is not None else agent_before
        events.append(
            (p.task_id, state.workflow_id, at, p.kind, state.attempt, before, p.to, agent, p.detail)
        )
        if p.to == _SUCCEEDED:
            _count_down(p.task_id, state.key, at, dependents, states, touched, released, events)
    if not touched:
        return Applied(tasks=[], released=[])

    rows = await conn.fetch(_UPDATE_SQL, at, *_columns(touched, states))
    await insert_events(conn, events)
    tasks = {r["id"]: task_from_row(r) for r in rows}
    return Applied(tasks=[tasks[i] for i in moved], released=[tasks[i] for i in released])


def _count_down(
    task_id: str,
    key: str,
    at: float,
    dependents: dict[str, list[str]],
    states: dict[str, _State],
    touched: dict[str, None],
    released: dict[str, None],
    events: list[Event],
) -> None:
    """``task_id`` succeeded: lower each dependent's ``pending`` by one and make each
    ``blocked`` dependent reaching zero ``ready``, with a ``ready`` event."""
    detail = dumps({"released_by": key}, "detail")
    for dep_id in dependents.get(task_id, ()):
        dep = states.get(dep_id)
        if dep is None:
            continue
        dep.pending = max(dep.pending - 1, 0)
        touched[dep_id] = None
        if dep.status != _BLOCKED or dep.pending:
            continue
        dep.status = _READY
        released[dep_id] = None
        events.append(
            (dep_id, dep.workflow_id, at, "ready", dep.attempt, _BLOCKED, _READY, None, detail)
        )


def _columns(ids: dict[str, None], states: dict[str, _State]) -> list[list[Any]]:
    """The arrays of :data:`_UPDATE_SQL` ($2 to $15) for the tasks ``ids``."""
    rows = [states[i] for i in ids]
    return [
        list(ids),
        [s.status for s in rows],
        *([getattr(s, name) for s in rows] for name in _SCALARS),
        [s.output is not None for s in rows],
        [s.output[0] if s.output is not None else None for s in rows],
        [s.error is not None for s in rows],
        [s.error[0] if s.error is not None else None for s in rows],
    ]
