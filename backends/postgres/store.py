"""``PostgresStore``: the :class:`core.ports.Store` port (and :class:`core.ports.StoreWatch`)
on PostgreSQL through an asyncpg pool.

How it is built, and why:

- **The port is shared**: :class:`backends.sql.store.SqlStore` holds every read and the
  checks and encoding of every write; this module holds PostgreSQL's write statements.
- **A pool**, opened by :meth:`migrate` (or the first call) with bounded retries
  (:mod:`backends.postgres.connections`).
- **Every write is one transaction**; batches cost a fixed number of round trips:
  ``create_workflow`` writes tasks, dependencies and events with ``COPY`` (when there are
  few, the whole workflow in one statement of array parameters), ``apply`` locks, decides
  and writes a whole batch with array parameters (:mod:`backends.postgres.transitions`); the
  scheduler's dispatch is one statement that makes its compare-and-set itself, without a
  BEGIN or COMMIT round trip (:func:`backends.postgres.transitions.dispatch`).
- **Events commit in ``seq`` order.** Every transaction that appends events takes one advisory
  lock just before it does, until it commits, so a watcher polling ``events_since`` never sees
  seq N+1 before seq N (a bare ``bigserial`` would allow it).
- **Migrations** are numbered and applied under ``pg_advisory_xact_lock``, so two nodes
  starting at once do not race; a database written by a newer agentdeck is refused with
  :class:`ConfigError` (:mod:`backends.postgres.schema`).
- **Faults** are :class:`BackendUnavailable`; reads retry them briefly, writes do not
  (:mod:`backends.postgres.connections`).
- **StoreWatch**: ``create_workflow`` (in its workflow INSERT) and ``add_command`` NOTIFY in
  their transactions;
  :meth:`PostgresStore.changes` LISTENs (:mod:`backends.postgres.watch`).

Beyond the Protocol's docstrings, this store guarantees what ``SqliteStore`` does (the
contract suite checks both): ``apply`` and ``set_workflow_status`` refuse an impossible
``expect`` with InvalidTransition and unknown value names with ValueError before writing
anything; changes in one ``apply`` take effect in order; ``count_tasks`` answers for every
given workflow that exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import asyncpg
import structlog

from agentdeck.backends.postgres import schema, transitions
from agentdeck.backends.postgres.connections import PostgresConnections, fetch
from agentdeck.backends.postgres.dialect import POSTGRES, TASKS
from agentdeck.backends.postgres.schema import EVENTS_LOCK, LOCK_NAMESPACE
from agentdeck.backends.postgres.url import PostgresTarget, parse_url
from agentdeck.backends.postgres.watch import CLOSED, COMMANDS_CHANNEL, WORKFLOWS_CHANNEL, listen
from agentdeck.backends.sql.codec import (
    COMMAND_COLUMNS,
    EVENT_COLUMNS,
    EVENT_INSERT_COLUMNS,
    TASK_COLUMNS,
    USAGE_COLUMNS,
    WORKFLOW_COLUMNS,
    Row,
    columns,
)
from agentdeck.backends.sql.decide import Plan, plan
from agentdeck.backends.sql.store import SqlStore, Then, merged
from agentdeck.backends.sql.writes import Load, NewWorkflow, StatusChange
from agentdeck.core.clock import Clock
from agentdeck.core.errors import ConflictError, NotFound
from agentdeck.core.models import Task
from agentdeck.core.ports import Applied

__all__ = ["COPY_THRESHOLD", "PostgresStore"]

log = structlog.get_logger(__name__)

#: Rows from which ``create_workflow`` switches from one array INSERT per table to COPY: COPY
#: is the fastest for thousands of rows, but costs a few more round trips than one INSERT.
COPY_THRESHOLD = 100

_TASKS = columns(TASK_COLUMNS)

# The NOTIFY goes in the same statement (one round trip less); it is delivered on commit.
_INSERT_WORKFLOW = (
    f"INSERT INTO workflows ({columns(WORKFLOW_COLUMNS)}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10) "
    "RETURNING pg_notify($11, id)"
)
# unnest() cannot take an array of arrays (it would flatten it), so ``needs`` travels as one
# JSON list per task here and is turned back into text[] in SQL.
_INSERT_TASKS = f"""
INSERT INTO tasks ({_TASKS})
SELECT u.id, u.workflow_id, u.key, u.capability, u.status, u.input,
       ARRAY(SELECT jsonb_array_elements_text(u.needs)), u.pending, u.created_at, u.updated_at,
       u.timeout, u.attempt, u.first_attempt, u.retry, u.output, u.error, u.agent_id,
       u.not_before, u.deadline, u.started_at, u.finished_at
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[],
    $8::integer[], $9::float8[], $10::float8[], $11::float8[], $12::integer[], $13::integer[],
    $14::jsonb[], $15::jsonb[], $16::jsonb[], $17::text[], $18::float8[], $19::float8[],
    $20::float8[], $21::float8[]
) AS u({_TASKS})
"""
_NEEDS = TASK_COLUMNS.index("needs")
_INSERT_DEPS = (
    "INSERT INTO task_deps (needs_id, task_id) SELECT * FROM unnest($1::text[], $2::text[])"
)


def _numbered_from(sql: str, first: int) -> str:
    """``sql`` with its parameters ``$1``, ``$2``... renumbered from ``$first``."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m[1]) + first - 1}", sql)


# A small workflow in one statement, one round trip: the workflow ($1-$11, its NOTIFY in the
# RETURNING), its tasks ($12-$32), dependencies ($33-$34) and created events ($35-$45, which
# take the events lock first). The main query reads ``w``, so the workflow is written first
# (a duplicate id is refused before any task is tried); the others run in order after it.
_INSERT_SMALL_WORKFLOW = (
    f"WITH w AS ({_INSERT_WORKFLOW}), "
    f"t AS ({_numbered_from(_INSERT_TASKS, 12)}), "
    f"d AS ({_numbered_from(_INSERT_DEPS, 33)}), "
    f"e AS ({_numbered_from(transitions.INSERT_EVENTS_SQL, 35)}) "
    "SELECT 1 FROM w"
)
# $7/$8: the fence (name, token), upserted first (its row locked before the workflow's, as
# by every fenced write); the UPDATE is made only when no newer token has written, and the
# newest token comes back for the caller to refuse (an upsert of an older token leaves the
# row's token as it was).
_SET_STATUS = """
WITH f AS (
    INSERT INTO fence (name, token) SELECT $7::text, $8::bigint WHERE $8::bigint IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET token = GREATEST(fence.token, excluded.token)
    RETURNING token
), moved AS (
    UPDATE workflows SET status = $2, updated_at = $3, finished_at = $4, hold_reason = $6
    WHERE id = $1 AND status = ANY($5::text[])
        AND NOT EXISTS (SELECT 1 FROM f WHERE f.token > $8::bigint)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM moved), EXISTS (SELECT 1 FROM workflows WHERE id = $1),
    (SELECT token FROM f)
"""
_INSERT_COMMAND = (
    f"INSERT INTO commands ({columns(COMMAND_COLUMNS)}) "
    "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)"
)


class PostgresStore(PostgresConnections, SqlStore):
    """The Store port on PostgreSQL, safe to share between any number of nodes.

    Build it with :meth:`from_url`, call :meth:`migrate` at start, :meth:`close` when done (or
    use ``async with``, which closes on exit). The port is :class:`backends.sql.store.SqlStore`
    in the :data:`POSTGRES` dialect; the connections are
    :class:`backends.postgres.connections.PostgresConnections`.
    """

    _dialect = POSTGRES

    def __init__(
        self,
        target: PostgresTarget,
        *,
        clock: Clock,
        connect_attempts: int = 5,
        connect_wait: float = 0.2,
    ) -> None:
        """``connect_attempts`` tries, waiting ``connect_wait`` seconds and doubling (at most 5 s)
        between them, before a start-up connection failure is reported."""
        super().__init__(target, connect_attempts=connect_attempts, connect_wait=connect_wait)
        self._clock = clock
        self._closing = asyncio.Event()
        self._watchers: set[asyncio.Queue[str]] = set()

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock, connect_attempts: int = 5, connect_wait: float = 0.2
    ) -> PostgresStore:
        """A store for ``postgresql://user:password@host:port/database[?options]`` (or
        ``postgres://``); see :mod:`backends.postgres.url` for the options. Raises ConfigError.
        Nothing connects until :meth:`migrate` (or the first call)."""
        return cls(
            parse_url(url),
            clock=clock,
            connect_attempts=connect_attempts,
            connect_wait=connect_wait,
        )

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r})"

    # ------------------------------------------------------------------ reads (shared)

    async def _rows(self, op: str, sql: str, params: Sequence[Any]) -> list[Row]:
        return await self._fetch(op, sql, *params)

    async def _tasks(self, op: str, sql: str, params: Sequence[Any]) -> list[Task]:
        return [TASKS.from_row(r) for r in await self._fetch(op, sql, *params)]

    # ---------------------------------------------------------------------- lifecycle

    async def migrate(self) -> None:
        """Connect (see :meth:`from_url`) and create or upgrade the schema; a no-op when it is
        current. Raises BackendUnavailable, and ConfigError when the database was written by
        a newer agentdeck."""
        # Only the owner may migrate, but every role opens the store this way: a schema that
        # is current is told by a read, which a viewer may do, before any lock or DDL.
        if await self._read("migrate", _version) == schema.latest_version():
            return
        applied = await self._read("migrate", schema.migrate, self._clock.now(), self.where)
        if applied:
            log.info("store_migrated", where=self.where, versions=applied)

    async def close(self) -> None:
        """End every :meth:`changes` iterator and close the pool. Safe to call twice."""
        self._closing.set()
        for queue in self._watchers:
            queue.put_nowait(CLOSED)
        await self._close_pool()

    def changes(self) -> AsyncGenerator[str, None]:
        """Yields ``workflows`` or ``commands`` each time a workflow is submitted or a command
        queued (by any node, this one included), once that write is committed. Ends when the
        store closes. Listens on its own connection from the first ``__anext__``; after a lost
        connection it reconnects by itself and yields both names once, since it may have
        missed something. Close it (``aclose``) when done."""
        return self._changes()

    async def _changes(self) -> AsyncGenerator[str, None]:
        if self._closed:
            return
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            source = listen(self._listen_connection, queue, self.where, self._closing)
            async with contextlib.aclosing(source) as names:
                async for name in names:
                    yield name
        finally:
            self._watchers.discard(queue)

    # ------------------------------------------------------------------ writes (hooks)

    async def _insert_workflow(self, new: NewWorkflow) -> None:
        """Also NOTIFY ``agentdeck_workflows`` when the transaction commits. A small workflow
        is one statement, so it needs no explicit transaction (no BEGIN, no COMMIT)."""
        if max(len(new.tasks), len(new.deps), len(new.events)) < COPY_THRESHOLD:
            await self._write_one("create_workflow", _create_small_workflow, new)
        else:
            await self._write("create_workflow", _create_workflow, new)

    async def _set_status(self, change: StatusChange, fence: int | None) -> bool:
        """One statement, its own transaction: the fence, the UPDATE (made only when the token
        is not refused) and the existence check see the same snapshot."""
        changed, exists, newest = (
            await self._write_one(
                "set_workflow_status",
                fetch,
                _SET_STATUS,
                change.workflow_id,
                change.target,
                change.at,
                change.finished_at,
                change.sources,
                change.reason,
                transitions.FENCE_NAME,
                fence,
            )
        )[0]
        if fence is not None:
            transitions.refuse_older(fence, newest)
        if not exists:
            raise NotFound(f"workflow {change.workflow_id!r} not found")
        return bool(changed)

    async def _set_budget(
        self, workflow_id: str, budget: str | None, at: float, fence: int | None
    ) -> None:
        rows = await self._write(
            "set_workflow_budget",
            _fenced_fetch,
            fence,
            "UPDATE workflows SET budget = $2::jsonb, updated_at = $3 WHERE id = $1 RETURNING 1",
            workflow_id,
            budget,
            at,
        )
        if not rows:
            raise NotFound(f"workflow {workflow_id!r} not found")

    async def _apply(self, plans: list[Plan], at: float, fence: int | None, then: Then) -> Applied:
        """With ``then``, two transactions: ``plans`` committed, then what ``then`` returns.
        Never one: ``then`` publishes released dependents, and a dependent must never run on
        an upstream result the Store could still lose (a crash between the broker's confirm
        and the commit would leave it running on an output that was never recorded).
        The scheduler's dispatch is one statement, a transaction of its own
        (:func:`transitions.dispatch`)."""
        first = await self._write_plans(plans, at, fence)
        if then is None:
            return first
        more = [plan(c) for c in await then(first)]
        if not more:
            return first
        return merged(first, await self._write_plans(more, at, fence))

    async def _write_plans(self, plans: list[Plan], at: float, fence: int | None) -> Applied:
        if transitions.dispatches(plans):
            return await self._write_one("apply", transitions.dispatch, plans, at, fence)
        return await self._write("apply", transitions.apply, plans, at, fence)

    async def _insert_command(self, row: tuple[Any, ...]) -> None:
        """Also NOTIFY ``agentdeck_commands`` when the transaction commits. Named by its
        action should the user's role refuse it ("role ada may not cancel: ...")."""
        await self._write(str(row[1]), _add_command, row)

    async def _finish(
        self, command_id: str, status: str, result: str, finished_at: float | None
    ) -> None:
        rows = await self._write(
            "finish_command",
            fetch,
            "UPDATE commands SET status = $2, result = $3, finished_at = $4 WHERE id = $1 "
            "RETURNING 1",
            command_id,
            status,
            result,
            finished_at,
        )
        if not rows:
            raise NotFound(f"command {command_id!r} not found")

    async def _load(self, rows: Load) -> None:
        """With COPY; moves the events' sequence past the loaded ones."""
        await self._write("load", _load, rows)


# ------------------------------------------------------------ statements on a connection


async def _version(conn: asyncpg.Connection) -> int:
    """The schema version of the database (0: none yet)."""
    try:
        return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
    except asyncpg.UndefinedTableError:
        return 0


async def _fenced_fetch(
    conn: asyncpg.Connection, fence: int | None, sql: str, *args: Any
) -> list[asyncpg.Record]:
    """:func:`fetch` after the fence check of ``apply`` (in the caller's transaction, so a
    refused token writes nothing)."""
    if fence is not None:
        await transitions.check_fence(conn, fence)
    return await fetch(conn, sql, *args)


async def _create_workflow(conn: asyncpg.Connection, new: NewWorkflow) -> None:
    workflow_id = new.workflow[0]
    try:
        # Also NOTIFY: delivered to listeners when (and only if) this transaction commits.
        await conn.execute(_INSERT_WORKFLOW, *new.workflow, WORKFLOWS_CHANNEL)
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(f"workflow {workflow_id!r} already exists") from exc
    try:
        await _insert_rows(conn, "tasks", TASK_COLUMNS, _INSERT_TASKS, new.tasks)
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(
            f"a task of workflow {workflow_id!r} already exists: {exc.detail or exc}"
        ) from exc
    await _insert_rows(conn, "task_deps", ("needs_id", "task_id"), _INSERT_DEPS, new.deps)
    if len(new.events) < COPY_THRESHOLD:
        await transitions.insert_events(conn, new.events)
    else:
        await transitions.lock_events(conn)
        await conn.copy_records_to_table(
            "task_events", records=new.events, columns=EVENT_INSERT_COLUMNS
        )


async def _create_small_workflow(conn: asyncpg.Connection, new: NewWorkflow) -> None:
    """:func:`_create_workflow` in one statement (:data:`_INSERT_SMALL_WORKFLOW`): its own
    transaction."""
    tasks = _columns_of(new.tasks, len(TASK_COLUMNS))
    tasks[_NEEDS] = [json.dumps(needs) for needs in tasks[_NEEDS]]
    try:
        await conn.execute(
            _INSERT_SMALL_WORKFLOW,
            *new.workflow,
            WORKFLOWS_CHANNEL,
            *tasks,
            *_columns_of(new.deps, 2),
            *_columns_of(new.events, len(EVENT_INSERT_COLUMNS)),
            LOCK_NAMESPACE,
            EVENTS_LOCK,
        )
    except asyncpg.UniqueViolationError as exc:
        workflow_id = new.workflow[0]
        if exc.table_name == "workflows":
            raise ConflictError(f"workflow {workflow_id!r} already exists") from exc
        raise ConflictError(
            f"a task of workflow {workflow_id!r} already exists: {exc.detail or exc}"
        ) from exc


def _columns_of(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """``rows`` as one list per column (``width`` of them, empty when there are no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


async def _insert_rows(
    conn: asyncpg.Connection,
    table: str,
    names: Sequence[str],
    insert_sql: str,
    rows: list[tuple[Any, ...]],
) -> None:
    """Insert ``rows``: one INSERT of array parameters (one per column) when few, COPY when
    many."""
    if not rows:
        return
    if len(rows) < COPY_THRESHOLD:
        arrays = [list(column) for column in zip(*rows, strict=True)]
        if table == "tasks":
            arrays[_NEEDS] = [json.dumps(needs) for needs in arrays[_NEEDS]]
        await conn.execute(insert_sql, *arrays)
    else:
        await conn.copy_records_to_table(table, records=rows, columns=list(names))


async def _load(conn: asyncpg.Connection, rows: Load) -> None:
    tables: tuple[tuple[str, Sequence[str], list[Any]], ...] = (
        ("workflows", WORKFLOW_COLUMNS, rows.workflows),
        ("tasks", TASK_COLUMNS, rows.tasks),
        ("task_deps", ("needs_id", "task_id"), rows.deps),
        ("task_events", EVENT_COLUMNS, rows.events),
        ("commands", COMMAND_COLUMNS, rows.commands),
        ("attempt_usage", USAGE_COLUMNS, rows.usage),
    )
    for table, names, values in tables:
        if not values:
            continue
        if table == "task_events":
            await transitions.lock_events(conn)
        try:
            await conn.copy_records_to_table(table, records=values, columns=list(names))
        except asyncpg.UniqueViolationError as exc:
            raise ConflictError(f"cannot load: a row of {table} exists already: {exc}") from exc
    # Events written from now on must sort after the loaded ones.
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('task_events', 'seq'), "
        "GREATEST((SELECT MAX(seq) FROM task_events), 1))"
    )


async def _add_command(conn: asyncpg.Connection, row: tuple[Any, ...]) -> None:
    try:
        await conn.execute(_INSERT_COMMAND, *row)
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(f"command {row[0]!r} already exists") from exc
    await conn.execute("SELECT pg_notify($1, $2)", COMMANDS_CHANNEL, row[0])
