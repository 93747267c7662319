"""``Store.apply`` on PostgreSQL: the statements around the shared decision, in a number of
round trips that does not grow with the batch.

Inside the caller's transaction, one call makes at most these statements (each one round
trip; with BEGIN and COMMIT a batch costs four or five, whatever its size):

1. one statement reading the dependents of every task the batch may make ``succeeded``
   (``task_deps``, never updated after a workflow is written, so it needs no lock) and
   locking (``SELECT ... FOR UPDATE``) every task named or depending on one, in id order (two
   stores locking overlapping batches cannot deadlock);
2. one statement writing the final state of every task the batch touched (``UPDATE ... FROM
   unnest(...) RETURNING``) and appending every event (``INSERT ... SELECT FROM
   unnest(...)``, which takes the events lock before it numbers a row), with the fence check
   in the same statement (an upsert that takes the fence row's lock and returns the newest
   token: an older one raises LeaseLost, and the transaction, its update included, is rolled
   back); a batch of :data:`JSON_ROWS` tasks or more sends its rows and events as two
   ``jsonb`` arrays instead of the column arrays (see :func:`_json_rows`);
3. one such INSERT of the batch's usage rows, when it has any.

The fence comes after the row locks, as the last lock a batch takes: every fenced writer takes
its locks in one order (task rows by id, then the fence row), so two leaders (one deposed and
not knowing it yet) cannot deadlock. A batch that ends up writing nothing (every
compare-and-set failed), or has no changes, checks the fence on its own.

Between 1 and 2 the batch is decided in Python (:func:`backends.sql.decide.decide`) against
the locked rows; while they are locked no other writer can change them, so the decision cannot
go stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from pydantic_core import to_json

from agentdeck.backends.postgres.dialect import TASKS
from agentdeck.backends.postgres.schema import EVENTS_LOCK, LOCK_NAMESPACE
from agentdeck.backends.sql import decide
from agentdeck.backends.sql.codec import (
    EVENT_INSERT_COLUMNS,
    TASK_COLUMNS,
    USAGE_COLUMNS,
    columns,
)
from agentdeck.backends.sql.decide import Plan, TaskState
from agentdeck.core.errors import LeaseLost
from agentdeck.core.ports import Applied

__all__ = [
    "FENCE_NAME",
    "INSERT_EVENTS_SQL",
    "JSON_ROWS",
    "apply",
    "check_fence",
    "dispatch",
    "dispatches",
    "insert_events",
    "lock_events",
]

#: The row of the ``fence`` table that ``apply(fence=...)`` checks and advances.
FENCE_NAME = "scheduler"

# The dependents of the tasks the batch may make succeeded ($2: ``task_deps`` is never updated
# after a workflow is written, so it needs no lock), read in the statement that locks every
# task named ($1) or depending on one of those: one round trip. They come back as two arrays
# (needs_id, task_id; in key order) on every row, computed once. ``= ANY(array)`` finds the
# rows through the primary key (an ``OR id IN (SELECT ...)`` made the planner scan all tasks).
# The dependents are read one id at a time through task_deps' primary key (``LATERAL``, kept
# apart by ``OFFSET 0``, or the planner flattens it back): ``needs_id = ANY($2)`` over the
# whole table was planned as a scan of all of it whenever the table's statistics are older
# than its rows (a big workflow just submitted; a server without autovacuum), 2 ms a write
# at 20,000 dependencies, and growing with them ($2 is sorted and distinct: ``succeeding``).
_LOCK_SQL = f"""
WITH d AS (
    SELECT n.id AS needs_id, x.task_id
    FROM unnest($2::text[]) AS n(id),
        LATERAL (SELECT task_id FROM task_deps WHERE needs_id = n.id OFFSET 0) AS x
)
SELECT {columns(decide.STATE_COLUMNS)},
    (SELECT array_agg(needs_id ORDER BY needs_id, task_id) FROM d),
    (SELECT array_agg(task_id ORDER BY needs_id, task_id) FROM d)
FROM tasks WHERE id = ANY($1::text[] || ARRAY(SELECT task_id FROM d))
ORDER BY id FOR UPDATE OF tasks
"""
_STATE = len(decide.STATE_COLUMNS)

# The unnest columns are backends.sql.decide.WRITE_COLUMNS, in order. Output and error may be
# large: they are written only when a change set them (the set_* flags). $16/$17: the fence
# (name, token), upserted in the same statement (see the module's docstring); the newest token
# comes back on every row (NULL when there is no token to check). The UPDATEs below also say
# ``t.id = ANY(ARRAY(SELECT ...ids))``: an array the planner cannot see into until it runs, so
# it reckons with a few rows and finds them through the primary key whatever it believes of
# the table's size. The join alone, or ``= ANY($2)`` (an array of known length: each element
# reckoned to match 0.5 % of a table without statistics), was a scan of all of ``tasks`` while
# its statistics were older than its rows (tests/integration/test_postgres_plans.py).
_FENCE_CTE = """f AS (
    INSERT INTO fence (name, token) SELECT $16::text, $17::bigint WHERE $17::bigint IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET token = GREATEST(fence.token, excluded.token)
    RETURNING token
)"""
# Both forms of the write (column arrays, jsonb rows) set the same columns from ``u``.
_SET_WRITTEN = """UPDATE tasks AS t SET
    status = u.status, updated_at = $1,
    attempt = u.attempt, first_attempt = u.first_attempt, agent_id = u.agent_id,
    not_before = u.not_before, deadline = u.deadline, started_at = u.started_at,
    finished_at = u.finished_at, pending = u.pending,
    output = CASE WHEN u.set_output THEN u.output ELSE t.output END,
    error = CASE WHEN u.set_error THEN u.error ELSE t.error END
"""
_UPDATE = f"""
{_SET_WRITTEN}FROM unnest(
    $2::text[], $3::text[], $4::integer[], $5::integer[], $6::text[], $7::float8[],
    $8::float8[], $9::float8[], $10::float8[], $11::integer[], $12::boolean[], $13::jsonb[],
    $14::boolean[], $15::jsonb[]
) AS u(id, status, attempt, first_attempt, agent_id, not_before, deadline, started_at,
       finished_at, pending, set_output, output, set_error, error)
WHERE t.id = u.id AND t.id = ANY(ARRAY(SELECT unnest($2::text[])))
RETURNING {columns(TASK_COLUMNS, "t.")}, (SELECT token FROM f)
"""
_UPDATE_SQL = f"WITH {_FENCE_CTE}{_UPDATE}"
_TASK = len(TASK_COLUMNS)


def _events_sql(first: int) -> str:
    """The events INSERT, its parameters numbered from ``$first``: nine arrays (one per
    column), then the events lock's two keys. The lock is in the statement itself: an
    uncorrelated constant condition becomes a one-time filter, evaluated before the first row
    is read and numbered."""
    p = [f"${first + i}" for i in range(11)]
    return f"""
INSERT INTO task_events ({columns(EVENT_INSERT_COLUMNS)})
SELECT * FROM unnest(
    {p[0]}::text[], {p[1]}::text[], {p[2]}::float8[], {p[3]}::text[], {p[4]}::integer[],
    {p[5]}::text[], {p[6]}::text[], {p[7]}::text[], {p[8]}::jsonb[]
)
WHERE (SELECT pg_advisory_xact_lock({p[9]}, {p[10]})) IS NOT NULL
"""


INSERT_EVENTS_SQL = _events_sql(1)
"""Append events: nine column arrays ($1-$9), then the events lock's keys ($10, $11)."""

# The update and its events in one statement, one round trip. A data-modifying WITH that the
# main query does not read (``e``) runs once the main query is done, so the locks are taken in
# the same order as by two statements: the rows, the fence (with the first updated row), and
# the events lock last.
_WRITE_SQL = f"WITH {_FENCE_CTE}, w AS ({_UPDATE}), e AS ({_events_sql(18)})\nSELECT * FROM w"

# A big batch's write travels as two jsonb parameters instead (see _json_rows): the written
# states ($2, each an array of the values of backends.sql.decide.WRITE_COLUMNS in order) and
# the events ($5, in order; the events lock's keys are $6 and $7). asyncpg checks every element
# of the 23 unnest arrays against collections.abc before it sends them (~5 µs of the daemon's
# CPU a task over its two writes; the two JSON texts cost ~0.9 µs), and at 1,000 rows
# PostgreSQL too spends less (bench_pgwrite: ~51 against ~53-56 µs a task). But a jsonb write
# costs PostgreSQL ~0.35-0.7 ms more whatever its size (one row: 2.0 against 1.2 ms for the
# two writes; 60 rows: 104-106 against 79-86 µs a task; even at 150): so only batches of at
# least JSON_ROWS written tasks take it, never a lone task's, a chain step's or a 100-wide
# layer's (docs/performance.md, "Saturated throughput, fourth pass").
JSON_ROWS = 200
"""The fewest written tasks for which :func:`apply` sends its rows as ``jsonb``."""

_FENCE_CTE_JSON = _FENCE_CTE.replace("$16", "$3").replace("$17", "$4")
_UPDATE_JSON = f"""
{_SET_WRITTEN}FROM (
    SELECT r->>0 AS id, r->>1 AS status, (r->>2)::integer AS attempt,
        (r->>3)::integer AS first_attempt, r->>4 AS agent_id, (r->>5)::float8 AS not_before,
        (r->>6)::float8 AS deadline, (r->>7)::float8 AS started_at,
        (r->>8)::float8 AS finished_at, (r->>9)::integer AS pending,
        (r->>10)::boolean AS set_output, (r->>11)::jsonb AS output,
        (r->>12)::boolean AS set_error, (r->>13)::jsonb AS error
    FROM jsonb_array_elements($2::jsonb) AS r
) AS u
WHERE t.id = u.id AND t.id = ANY(ARRAY(SELECT r->>0 FROM jsonb_array_elements($2::jsonb) AS r))
RETURNING {columns(TASK_COLUMNS, "t.")}, (SELECT token FROM f)
"""
_EVENTS_JSON = f"""
INSERT INTO task_events ({columns(EVENT_INSERT_COLUMNS)})
SELECT r->>0, r->>1, (r->>2)::float8, r->>3, (r->>4)::integer, r->>5, r->>6, r->>7,
    (r->>8)::jsonb
FROM jsonb_array_elements($5::jsonb) AS r
WHERE (SELECT pg_advisory_xact_lock($6, $7)) IS NOT NULL
"""
_UPDATE_JSON_SQL = f"WITH {_FENCE_CTE_JSON}{_UPDATE_JSON}"
_WRITE_JSON_SQL = (
    f"WITH {_FENCE_CTE_JSON}, w AS ({_UPDATE_JSON}), e AS ({_EVENTS_JSON})\nSELECT * FROM w"
)
# The scheduler's dispatch (see :func:`dispatches`) in one statement, a transaction of its own:
# no BEGIN, no lock statement, no decision in Python and no COMMIT, the compare-and-set made
# by the statement itself. ``l`` locks the named tasks in id order (as _LOCK_SQL does: two
# writers of overlapping batches cannot deadlock) and reads them as they stand once locked,
# each beside its change (found through the primary key by ``= ANY``, then joined by id:
# linear in the batch, where matching the changes to a CTE of the locked rows is a nested
# loop over both, and a join alone may scan every task). ``w`` moves those that are
# ``ready`` at the expected attempt, only if no newer token has written: that check is an
# uncorrelated condition, a one-time filter evaluated before the first row is written, and
# it counts ``l`` before it reads ``f`` (the fence's upsert), so every row is locked before
# the fence, the last lock but the events'. A refused token writes nothing (the caller then
# raises LeaseLost). ``e`` appends the events of the rows moved, in the batch's order, naming
# the agent the task had (the change clears it), under the events lock. One row comes back
# even when none moved: the newest token first, then each moved row's columns. $2-$7: per
# change, id, expected attempt, new attempt, deadline, event kind, detail; $8/$9: the fence;
# $10/$11: the events lock.
_DISPATCH_SQL = f"""
WITH {_FENCE_CTE.replace("$16", "$8").replace("$17", "$9")},
l AS (
    SELECT t.id, t.status, t.attempt AS was, t.agent_id, u.expect, u.attempt, u.deadline,
        u.kind, u.detail, u.ord
    FROM unnest(
        $2::text[], $3::integer[], $4::integer[], $5::float8[], $6::text[], $7::jsonb[]
    ) WITH ORDINALITY AS u(id, expect, attempt, deadline, kind, detail, ord)
    JOIN tasks AS t ON t.id = u.id
    WHERE t.id = ANY($2::text[])
    ORDER BY t.id FOR UPDATE OF t
),
w AS (
    UPDATE tasks AS t SET
        status = 'dispatched', updated_at = $1, attempt = l.attempt, agent_id = NULL,
        not_before = NULL, deadline = l.deadline, error = NULL
    FROM l
    WHERE t.id = l.id AND l.status = 'ready' AND l.was = l.expect
        AND NOT EXISTS (
            SELECT 1 FROM f WHERE (SELECT count(*) FROM l) >= 0 AND f.token > $9::bigint
        )
    RETURNING {columns(TASK_COLUMNS, "t.")}, l.agent_id AS agent_before,
        l.kind AS event_kind, l.detail AS event_detail, l.ord
),
e AS (
    INSERT INTO task_events ({columns(EVENT_INSERT_COLUMNS)})
    SELECT w.id, w.workflow_id, $1, w.event_kind, w.attempt, 'ready', 'dispatched',
        w.agent_before, w.event_detail
    FROM w
    WHERE (SELECT pg_advisory_xact_lock($10, $11)) IS NOT NULL
    ORDER BY w.ord
)
SELECT (SELECT token FROM f) AS newest, w.* FROM (SELECT) AS one LEFT JOIN w ON true
ORDER BY w.ord
"""
_DISPATCH_VALUES = frozenset({"attempt", "agent_id", "not_before", "deadline", "error"})
_NO_ERROR: tuple[None] = (None,)


def dispatches(plans: Sequence[Plan]) -> bool:
    """Whether ``plans`` are the scheduler's dispatch (``core.scheduler.dispatch``), which
    :func:`dispatch` writes in one statement: each moves a distinct task from ``ready`` at a
    given attempt to ``dispatched``, setting its attempt and deadline and clearing its agent,
    ``not_before`` and error, and nothing else (no output, no usage)."""
    if not plans:
        return False
    for p in plans:
        if (
            p.to != "dispatched"
            or p.expect != _READY_ONLY
            or p.attempt is None
            or p.columns != _DISPATCH_VALUES
            or p.output is not None
            or p.error != _NO_ERROR
            or p.usage is not None
        ):
            return False
        values = dict(p.scalars)
        if values["agent_id"] is not None or values["not_before"] is not None:
            return False
        if not isinstance(values["attempt"], int) or not isinstance(
            values["deadline"], int | float | None
        ):
            return False
    return len({p.task_id for p in plans}) == len(plans)


_READY_ONLY = frozenset({"ready"})


async def dispatch(
    conn: asyncpg.Connection, plans: list[Plan], at: float, fence: int | None
) -> Applied:
    """:func:`apply` for plans that :func:`dispatches`: the same rows and events written, the
    same answer, in one statement that is its own transaction (run it outside one: no BEGIN
    and COMMIT round trips) instead of a transaction of two (the lock statement and the
    write), with no decision in Python. Raises LeaseLost, having written nothing, when a
    newer token has written."""
    ids, expect, attempts, deadlines, kinds, details = [], [], [], [], [], []
    for p in plans:
        values = dict(p.scalars)
        ids.append(p.task_id)
        expect.append(p.attempt)
        attempts.append(values["attempt"])
        deadlines.append(values["deadline"])
        kinds.append(p.kind)
        details.append(p.detail)
    written = await conn.fetch(
        _DISPATCH_SQL, at, ids, expect, attempts, deadlines, kinds, details,
        FENCE_NAME, fence, LOCK_NAMESPACE, EVENTS_LOCK,
    )  # fmt: skip
    if fence is not None:
        refuse_older(fence, written[0][0])
    moved = [TASKS.from_row(r[1 : 1 + _TASK]) for r in written if r[1] is not None]
    return Applied(tasks=moved, released=[])


_INSERT_USAGE_SQL = f"""
INSERT INTO attempt_usage ({columns(USAGE_COLUMNS)})
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::integer[], $4::text[], $5::bigint[], $6::bigint[],
    $7::bigint[], $8::bigint[], $9::float8[], $10::float8[]
)
ON CONFLICT (task_id, attempt) DO NOTHING
"""

_FENCE_SQL = """
INSERT INTO fence (name, token) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET token = GREATEST(fence.token, excluded.token)
RETURNING token
"""


async def check_fence(conn: asyncpg.Connection, fence: int) -> None:
    """Raise LeaseLost if a newer token has written; otherwise record ``fence`` as the newest.

    One upsert: it takes the fence row's lock (like ``SELECT ... FOR UPDATE``, held until the
    caller's transaction ends, so fenced writers run one at a time) and creates the row on
    the first fenced write without a race between two first writers.
    """
    refuse_older(fence, await conn.fetchval(_FENCE_SQL, FENCE_NAME, fence))


def refuse_older(fence: int, newest: int) -> None:
    """Raise LeaseLost if ``newest`` (the fence row's token after a fenced write) is newer."""
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


async def insert_events(conn: asyncpg.Connection, events: Sequence[decide.EventRow]) -> None:
    """Append ``events`` in order (under :func:`lock_events`, taken by the same statement)."""
    if not events:
        return
    await conn.execute(INSERT_EVENTS_SQL, *_arrays(events), LOCK_NAMESPACE, EVENTS_LOCK)


def _json_rows(rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` as one JSON array of arrays, which PostgreSQL reads back to the same values:
    a big batch's states (:func:`backends.sql.decide.write_row` rows) and its events.

    Written by pydantic-core (``to_json``, ~3x the standard library's encoder here).
    Output, error and an event's detail are JSON text already, so they travel as JSON
    strings and are parsed once, by the ``::jsonb`` cast, as the ``jsonb[]`` elements were.
    Floats are written in their shortest round-tripping form (the cast through ``numeric``
    and text gives the same double back; ``-0.0`` comes back ``0.0``); an infinity or NaN,
    which JSON has no number for, as the text ``float8`` reads (``Infinity``, ``-Infinity``,
    ``NaN``: ``inf_nan_mode="strings"``). Text outside ASCII travels as is; a string that is
    not UTF-8 (a lone surrogate) raises a ValueError before anything is sent, as asyncpg's
    encoding of an array does."""
    return to_json(rows, inf_nan_mode="strings").decode()


def _arrays(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows as one array per column (the parameters of an ``unnest``)."""
    return [list(column) for column in zip(*rows, strict=True)]


async def apply(
    conn: asyncpg.Connection, plans: list[Plan], at: float, fence: int | None
) -> Applied:
    """Apply ``plans`` (validated by :func:`backends.sql.decide.plan`) in order and check
    ``fence`` (see the module's docstring); see :class:`backends.sql.decide.Decision` for what
    the answer holds. Raises LeaseLost when a newer token has written."""
    if not plans:
        if fence is not None:
            await check_fence(conn, fence)
        return Applied(tasks=[], released=[])
    rows = await conn.fetch(_LOCK_SQL, decide.to_read(plans, {}), decide.succeeding(plans))
    # No row: no task of the batch exists, so none is released either.
    deps = zip(rows[0][_STATE] or (), rows[0][_STATE + 1] or (), strict=True) if rows else ()
    waiting = decide.waiting_on(deps)
    states = {r[0]: TaskState(*r[:_STATE]) for r in rows}
    decision = decide.decide(plans, states, waiting, at, own=True)  # states: built above
    if not decision.writes:
        if fence is not None:
            await check_fence(conn, fence)
        return Applied(tasks=[], released=[])
    new = [decide.write_row(s) for s in decision.writes]
    if len(new) >= JSON_ROWS:
        updates = [at, _json_rows(new), FENCE_NAME, fence]
        if decision.events:
            rows_json = _json_rows(decision.events)
            written = await conn.fetch(
                _WRITE_JSON_SQL, *updates, rows_json, LOCK_NAMESPACE, EVENTS_LOCK
            )
        else:  # every change makes an event; kept exact all the same
            written = await conn.fetch(_UPDATE_JSON_SQL, *updates)
    else:
        updates = [at, *_arrays(new), FENCE_NAME, fence]
        if decision.events:
            events = (*_arrays(decision.events), LOCK_NAMESPACE, EVENTS_LOCK)
            written = await conn.fetch(_WRITE_SQL, *updates, *events)
        else:
            written = await conn.fetch(_UPDATE_SQL, *updates)
    if fence is not None:
        refuse_older(fence, written[0][_TASK])
    if decision.usage:
        await conn.execute(_INSERT_USAGE_SQL, *_arrays(decision.usage))
    return decide.applied(decision, (TASKS.from_row(r[:_TASK]) for r in written))
