"""``PostgresStore``: the :class:`core.ports.Store` port (and :class:`core.ports.StoreWatch`)
on PostgreSQL through an asyncpg pool.

How it is built, and why:

- **A pool**, sized from the URL (``min_size``, ``max_size``), opened by :meth:`migrate` (or the
  first call) with bounded retries (tenacity); a server that stays unreachable fails with one
  :class:`BackendUnavailable` line naming ``host:port/database``, never the password.
- **Every write is one transaction**; batches cost a fixed number of round trips:
  ``create_workflow`` writes tasks, dependencies and events with ``COPY`` (one array INSERT
  per table when there are few), ``apply`` locks, decides and writes a whole batch with array
  parameters (:mod:`backends.postgres.transitions`).
- **Events commit in ``seq`` order.** Every transaction that appends events takes one advisory
  lock just before it does, until it commits, so a watcher polling ``events_since`` never sees
  seq N+1 before seq N (a bare ``bigserial`` would allow it).
- **Migrations** are numbered and applied under ``pg_advisory_xact_lock``, so two nodes
  starting at once do not race; a database written by a newer agentdeck is refused with
  :class:`ConfigError` (:mod:`backends.postgres.schema`).
- **Faults**: a lost connection, a server shutting down, a deadlock or a full server is
  :class:`BackendUnavailable` (retryable). Reads retry it a few times first (they are
  idempotent); writes do not, because a write whose commit was cut off may have happened:
  the caller decides, and compare-and-set makes a repeated ``apply`` harmless.
- **StoreWatch**: ``create_workflow`` and ``add_command`` NOTIFY in their transactions;
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
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Sequence,
)
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import structlog
import tenacity

from agentdeck.backends._checks import check_page as _check_page
from agentdeck.backends._checks import check_tasks as _check_tasks
from agentdeck.backends._checks import task_order as _task_order
from agentdeck.backends._checks import workflow_change as _workflow_change
from agentdeck.backends.postgres import schema, transitions
from agentdeck.backends.postgres.rows import (
    COMMAND_COLUMNS,
    EVENT_COLUMNS,
    EVENT_INSERT_COLUMNS,
    TASK_COLUMNS,
    WORKFLOW_COLUMNS,
    command_from_row,
    command_to_row,
    event_from_row,
    task_from_row,
    task_to_row,
    workflow_from_row,
    workflow_to_row,
)
from agentdeck.backends.postgres.url import PostgresTarget, parse_url
from agentdeck.backends.postgres.watch import CLOSED, COMMANDS_CHANNEL, WORKFLOWS_CHANNEL, listen
from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable, ConfigError, ConflictError, NotFound
from agentdeck.core.models import JSON, Change, Command, CommandStatus, Task, TaskEvent, Workflow
from agentdeck.core.ports import Applied
from agentdeck.core.states import TaskStatus, WorkflowStatus

__all__ = ["COPY_THRESHOLD", "PostgresStore"]

log = structlog.get_logger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Rows from which ``create_workflow`` switches from one array INSERT per table to COPY: COPY
#: is the fastest for thousands of rows, but costs a few more round trips than one INSERT.
COPY_THRESHOLD = 100

#: Errors that mean "PostgreSQL cannot serve us right now": BackendUnavailable, retryable.
#: Class 08 (connection), 53 (resources: too many connections, disk full), 57 (operator
#: intervention: shutdown, cancelled query), 40 (deadlock, serialization failure).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.TransactionRollbackError,
)
#: Errors after which a connection cannot be used again (see ``PostgresStore._connection``).
_BROKEN: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)


def _broken(exc: BaseException | None) -> bool:
    """True for an error that leaves the connection unusable."""
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)  # "connection is closed"; other InterfaceErrors are bugs
    return isinstance(exc, _BROKEN)


#: Failures at connection time that waiting will not cure.
_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # wrong password, no such role, pg_hba
    asyncpg.InvalidCatalogNameError,  # no such database
)

_TASKS = ", ".join(TASK_COLUMNS)
_T_TASKS = ", ".join(f"t.{c}" for c in TASK_COLUMNS)
_WORKFLOWS = ", ".join(WORKFLOW_COLUMNS)
_EVENTS = ", ".join(EVENT_COLUMNS)
_COMMANDS = ", ".join(COMMAND_COLUMNS)

_INSERT_WORKFLOW = (
    f"INSERT INTO workflows ({_WORKFLOWS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
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
_INSERT_COMMAND = (
    f"INSERT INTO commands ({_COMMANDS}) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)"
)


class PostgresStore:
    """The Store port on PostgreSQL, safe to share between any number of nodes.

    Build it with :meth:`from_url`, call :meth:`migrate` at start, :meth:`close` when done (or
    use ``async with``, which closes on exit).
    """

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
        if connect_attempts < 1:
            raise ValueError(f"connect_attempts must be at least 1, got {connect_attempts!r}")
        self._target = target  # its dsn may hold a password: never put it in a message
        self._clock = clock
        self._connect_attempts = connect_attempts
        self._connect_wait = connect_wait
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
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

    @property
    def where(self) -> str:
        """``host:port/database``: how messages name this server (no credentials)."""
        return self._target.where

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r})"

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ connections

    def _describe(self, exc: BaseException) -> str:
        """An engine error as text for a message, with the password masked should the
        driver ever echo it."""
        text = str(exc) or type(exc).__name__
        if self._target.password:
            text = text.replace(self._target.password, "***")
        return text

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._closed:
                raise BackendUnavailable(f"the PostgreSQL store on {self.where} is closed")
            if self._pool is None:
                self._pool = await self._connect()
        return self._pool

    async def _connect(self) -> asyncpg.Pool:
        """Open the pool, retrying what may pass (refused connections, a starting server)."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._connect_attempts),
            wait=tenacity.wait_exponential(multiplier=self._connect_wait, max=5.0),
            retry=tenacity.retry_if_exception_type(_UNAVAILABLE),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._open_pool()
        except _REFUSED as exc:
            raise BackendUnavailable(
                f"PostgreSQL at {self.where} refused the connection: {self._describe(exc)}"
            ) from None
        except asyncpg.ClientConfigurationError as exc:
            raise ConfigError(f"store URL for {self.where}: {self._describe(exc)}") from None
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(
                f"cannot reach PostgreSQL at {self.where} after {self._connect_attempts} "
                f"attempt(s): {self._describe(exc)}"
            ) from None
        except asyncpg.PostgresError as exc:  # e.g. an unknown server setting in the URL
            raise BackendUnavailable(
                f"PostgreSQL at {self.where} refused the connection: {self._describe(exc)}"
            ) from None
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _open_pool(self) -> asyncpg.Pool:
        target = self._target
        pool = await asyncpg.create_pool(
            target.dsn,
            min_size=target.min_size,
            max_size=target.max_size,
            command_timeout=target.command_timeout,
            timeout=target.connect_timeout,
            # asyncpg prepares every statement; after five runs PostgreSQL may switch to a
            # generic plan and keep it until the next ANALYZE. A plan made while `tasks` held
            # a few hundred rows (a seq scan) then stays in use at 20,000 rows: the row-lock
            # query of every transition became the database's main cost under load (see
            # docs/performance.md). Custom plans follow the table's current size instead.
            server_settings={"plan_cache_mode": "force_custom_plan"},
        )
        try:
            await pool.execute("SELECT 1")  # with min_size=0 nothing has connected yet
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _listen_connection(self) -> asyncpg.Connection:
        """A connection of its own for LISTEN (see :mod:`backends.postgres.watch`)."""
        try:
            return await asyncpg.connect(
                self._target.dsn,
                timeout=self._target.connect_timeout,
                server_settings={"application_name": f"{self._target.application_name}-watch"},
            )
        except (*_UNAVAILABLE, *_REFUSED, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BackendUnavailable(
                f"cannot listen on PostgreSQL at {self.where}: {self._describe(exc)}"
            ) from None

    @contextlib.contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """Turn engine errors met during ``op`` into agentdeck's."""
        try:
            yield
        except asyncpg.UndefinedTableError as exc:
            raise ConfigError(
                f"PostgreSQL database {self.where} has no agentdeck schema "
                f"({self._describe(exc)}); run the migrations first"
            ) from exc
        except asyncpg.DataError as exc:  # a value the column cannot hold
            raise ValueError(f"{op}: PostgreSQL refused a value: {self._describe(exc)}") from exc
        except Exception as exc:
            if not _broken(exc) and not isinstance(exc, _UNAVAILABLE):
                raise  # ours (ConflictError, LeaseLost...) or a bug: let it through
            raise BackendUnavailable(
                f"PostgreSQL at {self.where} failed during {op}: {self._describe(exc)}"
            ) from exc

    @contextlib.asynccontextmanager
    async def _connection(self, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, dropped (not returned to the pool) if it broke meanwhile."""
        async with pool.acquire(timeout=self._target.command_timeout) as conn:
            try:
                yield conn
            except Exception as exc:
                if _broken(exc):
                    # A session the server ended (a restart, an operator) can leave the
                    # connection half-closed, or in a state asyncpg cannot leave after an
                    # unsolicited FATAL (MagicStack/asyncpg#1069). Drop it, and have the pool
                    # replace its siblings too: they were most likely ended with it.
                    with contextlib.suppress(asyncpg.InterfaceError):  # already let go of
                        conn.terminate()
                    await pool.expire_connections()
                raise

    async def _read(
        self,
        op: str,
        fn: Callable[Concatenate[asyncpg.Connection, _P], Awaitable[_R]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        """Run ``fn`` on a pooled connection, retrying briefly when the connection breaks
        (one the server closed, a restart): a read may run twice. A timeout is not retried:
        a query that took too long would most likely take too long again."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, BackendUnavailable) and _broken(exc.__cause__)
            ),
            reraise=True,
        )
        pool = await self._get_pool()  # retried on its own, at start-up
        async for attempt in retrying:
            with attempt, self._errors(op):
                async with self._connection(pool) as conn:
                    return await fn(conn, *args, **kwargs)
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _write(
        self,
        op: str,
        fn: Callable[Concatenate[asyncpg.Connection, _P], Awaitable[_R]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        """Run ``fn`` in one transaction. Not retried: see the module docstring."""
        pool = await self._get_pool()
        with self._errors(op):
            async with self._connection(pool) as conn, conn.transaction():
                return await fn(conn, *args, **kwargs)

    async def _fetch(self, op: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._read(op, _fetch, sql, *args)

    # ---------------------------------------------------------------------- lifecycle

    async def migrate(self) -> None:
        """Connect (see :meth:`from_url`) and create or upgrade the schema; a no-op when it is
        current. Raises BackendUnavailable, and ConfigError when the database was written by
        a newer agentdeck."""
        applied = await self._read("migrate", schema.migrate, self._clock.now(), self.where)
        if applied:
            log.info("store_migrated", where=self.where, versions=applied)

    async def close(self) -> None:
        """End every :meth:`changes` iterator and close the pool. Safe to call twice."""
        self._closed = True
        self._closing.set()
        for queue in self._watchers:
            queue.put_nowait(CLOSED)
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except TimeoutError:  # a connection still busy: do not hang the shutdown
                pool.terminate()

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

    # ---------------------------------------------------------------------- workflows

    async def create_workflow(self, workflow: Workflow, tasks: Sequence[Task]) -> None:
        """Write the workflow, its tasks, their dependencies and a ``created`` event per task
        in one transaction, then NOTIFY ``agentdeck_workflows``. Raises ConflictError if the
        id exists, ValueError on tasks that do not fit the workflow (wrong workflow id,
        duplicate key, unknown need, wrong task_count) or values that are not JSON."""
        ids = _check_tasks(workflow, tasks)
        workflow_row = workflow_to_row(workflow)
        task_rows = [task_to_row(t) for t in tasks]
        deps = [(ids[need], t.id) for t in tasks for need in dict.fromkeys(t.needs)]
        events = [
            (t.id, workflow.id, t.created_at, "created", t.attempt, None, row[4], t.agent_id, "{}")
            for t, row in zip(tasks, task_rows, strict=True)
        ]
        await self._write(
            "create_workflow", _create_workflow, workflow_row, task_rows, deps, events
        )

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """One workflow. Raises NotFound."""
        rows = await self._fetch(
            "get_workflow", f"SELECT {_WORKFLOWS} FROM workflows WHERE id = $1", workflow_id
        )
        if not rows:
            raise NotFound(f"workflow {workflow_id!r} not found")
        return workflow_from_row(rows[0])

    async def list_workflows(
        self,
        *,
        status: Collection[WorkflowStatus] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Workflow]:
        """Workflows, newest first (ties: last written first)."""
        _check_page(limit, offset)
        if status is None:
            where, params = "", []
        else:
            where, params = "WHERE status = ANY($3::text[])", [_values(WorkflowStatus, status)]
        rows = await self._fetch(
            "list_workflows",
            f"SELECT {_WORKFLOWS} FROM workflows {where} "
            "ORDER BY created_at DESC, seq DESC LIMIT $1 OFFSET $2",
            limit,
            offset,
            *params,
        )
        return [workflow_from_row(r) for r in rows]

    async def count_workflows(self) -> dict[WorkflowStatus, int]:
        """How many workflows are in each status (absent: none)."""
        rows = await self._fetch(
            "count_workflows", "SELECT status, COUNT(*) AS n FROM workflows GROUP BY status"
        )
        return {WorkflowStatus(r["status"]): r["n"] for r in rows}

    async def set_workflow_status(
        self,
        workflow_id: str,
        expect: Collection[WorkflowStatus],
        to: WorkflowStatus,
        at: float,
        *,
        fence: int | None = None,
    ) -> bool:
        """Compare-and-set a workflow's status; True if it changed. ``finished_at`` is set when
        ``to`` is terminal and cleared otherwise. Raises NotFound, InvalidTransition when
        a status in ``expect`` cannot go to ``to``, and LeaseLost (nothing written) when
        ``fence`` is older than a token that has written (as :meth:`apply`)."""
        target, sources, finished_at = _workflow_change(expect, to, at)
        # One statement: the UPDATE and the existence check see the same snapshot.
        changed, exists = (
            await self._write(
                "set_workflow_status",
                _fenced_fetch,
                fence,
                "WITH moved AS (UPDATE workflows SET status = $2, updated_at = $3, "
                "finished_at = $4 WHERE id = $1 AND status = ANY($5::text[]) RETURNING 1) "
                "SELECT EXISTS (SELECT 1 FROM moved), "
                "EXISTS (SELECT 1 FROM workflows WHERE id = $1)",
                workflow_id,
                target.value,
                at,
                finished_at,
                [s.value for s in sources],
            )
        )[0]
        if not exists:
            raise NotFound(f"workflow {workflow_id!r} not found")
        return bool(changed)

    # -------------------------------------------------------------------------- tasks

    async def get_task(self, task_id: str) -> Task:
        """One task. Raises NotFound."""
        rows = await self._fetch("get_task", f"SELECT {_TASKS} FROM tasks WHERE id = $1", task_id)
        if not rows:
            raise NotFound(f"task {task_id!r} not found")
        return task_from_row(rows[0])

    async def list_tasks(
        self,
        *,
        workflow_id: str | None = None,
        status: Collection[TaskStatus] | None = None,
        capability: str | None = None,
        agent_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str | None = None,
        descending: bool = False,
    ) -> list[Task]:
        """Tasks matching every filter given, oldest first (by creation, then key), or by
        ``sort`` first (see :meth:`core.ports.Store.list_tasks`)."""
        _check_page(limit, offset)
        order = _task_order(sort, descending)
        params: list[Any] = [limit, offset]
        where = _task_filter(params, workflow_id, status, capability, agent_id)
        rows = await self._fetch(
            "list_tasks",
            f"SELECT {_TASKS} FROM tasks {where} ORDER BY {order} LIMIT $1 OFFSET $2",
            *params,
        )
        return [task_from_row(r) for r in rows]

    async def total_tasks(
        self,
        *,
        workflow_id: str | None = None,
        status: Collection[TaskStatus] | None = None,
        capability: str | None = None,
        agent_id: str | None = None,
    ) -> int:
        """How many tasks match every filter given (what :meth:`list_tasks` pages through)."""
        params: list[Any] = []
        where = _task_filter(params, workflow_id, status, capability, agent_id)
        rows = await self._fetch("total_tasks", f"SELECT COUNT(*) FROM tasks {where}", *params)
        return int(rows[0][0])

    async def count_by_capability(
        self, status: Collection[TaskStatus]
    ) -> dict[str, dict[TaskStatus, int]]:
        """For each capability with tasks in one of ``status``, how many are in each."""
        rows = await self._fetch(
            "count_by_capability",
            "SELECT capability, status, COUNT(*) AS n FROM tasks "
            "WHERE status = ANY($1::text[]) GROUP BY capability, status",
            _values(TaskStatus, status),
        )
        counts: dict[str, dict[TaskStatus, int]] = {}
        for r in rows:
            counts.setdefault(r["capability"], {})[TaskStatus(r["status"])] = r["n"]
        return counts

    async def count_tasks(self, workflow_ids: Collection[str]) -> dict[str, dict[TaskStatus, int]]:
        """For each given workflow that exists, how many of its tasks are in each status
        (statuses with none are absent; a workflow without tasks maps to ``{}``)."""
        if not workflow_ids:
            return {}
        rows = await self._fetch(
            "count_tasks",
            "SELECT w.id, t.status, COUNT(t.id) FROM workflows AS w "
            "LEFT JOIN tasks AS t ON t.workflow_id = w.id "
            "WHERE w.id = ANY($1::text[]) GROUP BY w.id, t.status",
            list(workflow_ids),
        )
        counts: dict[str, dict[TaskStatus, int]] = {}
        for workflow_id, status, n in rows:
            by_status = counts.setdefault(workflow_id, {})
            if status is not None:
                by_status[TaskStatus(status)] = n
        return counts

    async def ready_tasks(self, *, limit: int, hold: Collection[str] = ()) -> list[Task]:
        """Up to ``limit`` ``ready`` tasks of ``running`` workflows whose capability is not in
        ``hold``, oldest first (by creation, then id)."""
        _check_page(limit)
        # The literal 'ready' (not a parameter) lets the planner use the partial tasks_ready.
        rows = await self._fetch(
            "ready_tasks",
            f"SELECT {_T_TASKS} FROM tasks AS t JOIN workflows AS w ON w.id = t.workflow_id "
            "WHERE t.status = 'ready' AND w.status = 'running' "
            "AND NOT (t.capability = ANY($2::text[])) "
            "ORDER BY t.created_at, t.id LIMIT $1",
            limit,
            list(hold),
        )
        return [task_from_row(r) for r in rows]

    async def due_tasks(self, now: float, *, limit: int = 500) -> list[Task]:
        """Tasks whose time has come, soonest-due first: ``retrying`` with ``not_before <=
        now``, and ``dispatched``/``running`` with ``deadline <= now``."""
        _check_page(limit)
        # Two branches, each served by its own partial index, rather than one OR.
        rows = await self._fetch(
            "due_tasks",
            f"SELECT {_TASKS} FROM ("
            f"SELECT {_TASKS}, not_before AS due FROM tasks "
            "WHERE status = 'retrying' AND not_before <= $1 "
            "UNION ALL "
            f"SELECT {_TASKS}, deadline AS due FROM tasks "
            "WHERE status IN ('dispatched', 'running') AND deadline <= $1"
            ") AS due_tasks ORDER BY due, id LIMIT $2",
            now,
            limit,
        )
        return [task_from_row(r) for r in rows]

    async def outputs(self, task_ids: Collection[str]) -> dict[str, JSON]:
        """The outputs of the given tasks that exist (None for a task with no output)."""
        if not task_ids:
            return {}
        rows = await self._fetch(
            "outputs",
            "SELECT id, output FROM tasks WHERE id = ANY($1::text[])",
            list(task_ids),
        )
        return {r["id"]: _loads(r["output"]) for r in rows}

    # -------------------------------------------------------------------------- apply

    async def apply(
        self, changes: Sequence[Change], at: float, *, fence: int | None = None
    ) -> Applied:
        """Apply compare-and-set transitions in one transaction (see the Protocol and
        :mod:`backends.postgres.transitions`).

        Raises LeaseLost (nothing written) when a newer fencing token has written before,
        ValueError on an unknown value name and InvalidTransition when ``expect`` holds a
        status that cannot reach ``to``.
        """
        if not changes and fence is None:
            return Applied(tasks=[], released=[])
        plans = [transitions.plan(c) for c in changes]  # refuse a bad batch before writing
        return await self._write("apply", transitions.apply, plans, at, fence)

    # ------------------------------------------------------------------------- events

    async def task_events(self, task_id: str) -> list[TaskEvent]:
        """A task's history, oldest first (empty for an unknown task)."""
        rows = await self._fetch(
            "task_events",
            f"SELECT {_EVENTS} FROM task_events WHERE task_id = $1 ORDER BY seq",
            task_id,
        )
        return [event_from_row(r) for r in rows]

    async def events_since(
        self, seq: int, *, workflow_id: str | None = None, limit: int = 1000
    ) -> list[TaskEvent]:
        """Events with ``seq`` greater than the one given, in order; they commit in this
        order, so polling from the last seq seen misses nothing."""
        _check_page(limit)
        where = "seq > $1"
        params: list[Any] = [seq, limit]
        if workflow_id is not None:
            where += " AND workflow_id = $3"
            params.append(workflow_id)
        rows = await self._fetch(
            "events_since",
            f"SELECT {_EVENTS} FROM task_events WHERE {where} ORDER BY seq LIMIT $2",
            *params,
        )
        return [event_from_row(r) for r in rows]

    # ----------------------------------------------------------------------- commands

    async def add_command(self, command: Command) -> None:
        """Queue an operator's command and NOTIFY ``agentdeck_commands``. Raises ConflictError
        if its id exists."""
        await self._write("add_command", _add_command, command_to_row(command))

    async def pending_commands(self, limit: int = 100) -> list[Command]:
        """Commands not yet carried out, oldest first (ties: first queued first)."""
        _check_page(limit)
        rows = await self._fetch(
            "pending_commands",
            f"SELECT {_COMMANDS} FROM commands WHERE status = 'pending' "
            "ORDER BY created_at, seq LIMIT $1",
            limit,
        )
        return [command_from_row(r) for r in rows]

    async def finish_command(self, command: Command) -> None:
        """Record a command's outcome (status, result, finished_at). Raises NotFound."""
        rows = await self._write(
            "finish_command",
            _fetch,
            "UPDATE commands SET status = $2, result = $3, finished_at = $4 WHERE id = $1 "
            "RETURNING 1",
            command.id,
            CommandStatus(command.status).value,
            command.result,
            command.finished_at,
        )
        if not rows:
            raise NotFound(f"command {command.id!r} not found")

    async def get_command(self, command_id: str) -> Command:
        """One command. Raises NotFound."""
        rows = await self._fetch(
            "get_command", f"SELECT {_COMMANDS} FROM commands WHERE id = $1", command_id
        )
        if not rows:
            raise NotFound(f"command {command_id!r} not found")
        return command_from_row(rows[0])

    async def list_commands(self, limit: int = 100, offset: int = 0) -> list[Command]:
        """The action log, newest first (ties: last queued first), a page at a time."""
        _check_page(limit, offset)
        rows = await self._fetch(
            "list_commands",
            f"SELECT {_COMMANDS} FROM commands ORDER BY created_at DESC, seq DESC"
            " LIMIT $1 OFFSET $2",
            limit,
            offset,
        )
        return [command_from_row(r) for r in rows]

    async def count_commands(self) -> int:
        """How many commands the action log holds."""
        rows = await self._fetch("count_commands", "SELECT count(*) FROM commands")
        return int(rows[0][0])

    # ---------------------------------------------------------------------- snapshots

    async def dump_workflows(self, *, after: str = "", limit: int = 1000) -> list[Workflow]:
        """Workflows whose id sorts after ``after``, by id (byte order, as SQLite)."""
        _check_page(limit)
        rows = await self._fetch(
            "dump_workflows",
            f'SELECT {_WORKFLOWS} FROM workflows WHERE id > $1 COLLATE "C" '
            'ORDER BY id COLLATE "C" LIMIT $2',
            after,
            limit,
        )
        return [workflow_from_row(r) for r in rows]

    async def dump_tasks(self, *, after: str = "", limit: int = 1000) -> list[Task]:
        """Tasks whose id sorts after ``after``, by id (byte order, as SQLite)."""
        _check_page(limit)
        rows = await self._fetch(
            "dump_tasks",
            f'SELECT {_TASKS} FROM tasks WHERE id > $1 COLLATE "C" '
            'ORDER BY id COLLATE "C" LIMIT $2',
            after,
            limit,
        )
        return [task_from_row(r) for r in rows]

    async def dump_commands(self, *, after: str = "", limit: int = 1000) -> list[Command]:
        """Commands whose id sorts after ``after``, by id (byte order, as SQLite)."""
        _check_page(limit)
        rows = await self._fetch(
            "dump_commands",
            f'SELECT {_COMMANDS} FROM commands WHERE id > $1 COLLATE "C" '
            'ORDER BY id COLLATE "C" LIMIT $2',
            after,
            limit,
        )
        return [command_from_row(r) for r in rows]

    async def load(
        self,
        *,
        workflows: Sequence[Workflow] = (),
        tasks: Sequence[Task] = (),
        events: Sequence[TaskEvent] = (),
        commands: Sequence[Command] = (),
    ) -> None:
        """Write records as given in one transaction (see :meth:`core.ports.Store.load`), with
        COPY. Raises ConflictError, writing nothing, when any of them exists already."""
        tables = (  # encode everything before writing anything
            ("workflows", WORKFLOW_COLUMNS, [workflow_to_row(w) for w in workflows]),
            ("tasks", TASK_COLUMNS, [task_to_row(t) for t in tasks]),
            (
                "task_deps",
                ("needs_id", "task_id"),
                [(f"{t.workflow_id}/{n}", t.id) for t in tasks for n in dict.fromkeys(t.needs)],
            ),
            ("task_events", EVENT_COLUMNS, [_event_row(e) for e in events]),
            ("commands", COMMAND_COLUMNS, [command_to_row(c) for c in commands]),
        )
        await self._write("load", _load, tables)


# ------------------------------------------------------------ statements on a connection


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    return await conn.fetch(sql, *args)  # type: ignore[no-any-return]


async def _fenced_fetch(
    conn: asyncpg.Connection, fence: int | None, sql: str, *args: Any
) -> list[asyncpg.Record]:
    """:func:`_fetch` after the fence check of ``apply`` (in the caller's transaction, so a
    refused token writes nothing)."""
    if fence is not None:
        await transitions.check_fence(conn, fence)
    return await _fetch(conn, sql, *args)


async def _create_workflow(
    conn: asyncpg.Connection,
    workflow_row: tuple[Any, ...],
    task_rows: list[tuple[Any, ...]],
    deps: list[tuple[str, str]],
    events: list[transitions.Event],
) -> None:
    workflow_id = workflow_row[0]
    try:
        await conn.execute(_INSERT_WORKFLOW, *workflow_row)
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(f"workflow {workflow_id!r} already exists") from exc
    try:
        await _insert_rows(conn, "tasks", TASK_COLUMNS, _INSERT_TASKS, task_rows)
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(
            f"a task of workflow {workflow_id!r} already exists: {exc.detail or exc}"
        ) from exc
    await _insert_rows(conn, "task_deps", ("needs_id", "task_id"), _INSERT_DEPS, deps)
    if len(events) < COPY_THRESHOLD:
        await transitions.insert_events(conn, events)
    elif events:
        await transitions.lock_events(conn)
        await conn.copy_records_to_table(
            "task_events", records=events, columns=EVENT_INSERT_COLUMNS
        )
    # Delivered to listeners when (and only if) this transaction commits.
    await conn.execute("SELECT pg_notify($1, $2)", WORKFLOWS_CHANNEL, workflow_id)


async def _insert_rows(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
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
        await conn.copy_records_to_table(table, records=rows, columns=list(columns))


def _event_row(e: TaskEvent) -> tuple[Any, ...]:
    """An event as a ``task_events`` row in :data:`EVENT_COLUMNS` order (its seq kept)."""
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
        json.dumps(dict(e.detail)),
    )


async def _load(
    conn: asyncpg.Connection,
    tables: Sequence[tuple[str, Sequence[str], list[tuple[Any, ...]]]],
) -> None:
    for table, columns, rows in tables:
        if not rows:
            continue
        if table == "task_events":
            await transitions.lock_events(conn)
        try:
            await conn.copy_records_to_table(table, records=rows, columns=list(columns))
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


# ------------------------------------------------------------------------------ helpers


def _loads(text: str | None) -> JSON:
    return None if text is None else json.loads(text)


def _task_filter(
    params: list[Any],
    workflow_id: str | None,
    status: Collection[TaskStatus] | None,
    capability: str | None,
    agent_id: str | None,
) -> str:
    """The WHERE clause of the task list filters; their values are appended to ``params``
    (numbered after what is there already)."""
    clauses: list[str] = []
    for column, value in (
        ("workflow_id", workflow_id),
        ("capability", capability),
        ("agent_id", agent_id),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"{column} = ${len(params)}")
    if status is not None:
        params.append(_values(TaskStatus, status))
        clauses.append(f"status = ANY(${len(params)}::text[])")
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


def _values(kind: type[TaskStatus] | type[WorkflowStatus], statuses: Collection[str]) -> list[str]:
    """Statuses as stored strings; raises ValueError for one that is not a ``kind``."""
    return [kind(s).value for s in statuses]
