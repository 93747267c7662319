"""``SqliteStore``: the :class:`core.ports.Store` port on one local SQLite file.

This is the embedded default: durable, no server, and safe to share between the daemon and a
CLI process on the same machine.

How it is built, and why:

- **One worker thread per store** owns the ``sqlite3`` connection. Every call runs there through
  ``loop.run_in_executor``, so the event loop never waits on the disk, calls are serialized
  without a lock, and the connection is only ever touched by the thread that made it.
- **Every write is one ``BEGIN IMMEDIATE`` transaction.** It takes SQLite's write lock up front,
  so a second process queues on ``busy_timeout`` instead of failing half-way with
  ``SQLITE_BUSY`` when a read lock would need upgrading. Writers are therefore serialized,
  which also makes ``task_events.seq`` increase in commit order: a watcher polling
  ``events_since`` can never see seq N+1 before seq N.
- **WAL journal**: readers never block the writer and the writer never blocks readers.
- **Migrations** (:mod:`backends.sqlite.schema`) are numbered and recorded in
  ``schema_version``; ``migrate`` applies the missing ones under ``BEGIN IMMEDIATE``, so two
  processes starting at once do not race, and a database written by a newer agentdeck is
  refused with :class:`ConfigError`.
- **apply** (:mod:`backends.sqlite.transitions`) decides each compare-and-set under the write
  lock and batches what it can; 1,000 changes take a few tens of milliseconds.

Beyond the Protocol's docstrings, this store guarantees (and the contract suite checks):

- ``apply`` and ``set_workflow_status`` refuse, with :class:`InvalidTransition` and before
  writing anything, a change whose ``expect`` holds a status the transition table does not
  allow to reach the target; ``apply`` refuses unknown value names with :class:`ValueError`.
- Changes in one ``apply`` call take effect in order: a later change sees earlier ones (the
  same task may move twice). ``Applied.tasks`` and ``Applied.released`` hold each task once,
  in the order it first moved, as it stands when the call commits.
- ``count_tasks`` answers for every given workflow that exists (an empty dict when it has no
  tasks) and leaves out ids that do not exist.

URLs (see :func:`path_from_url`)::

    sqlite:///var/lib/agentdeck/state.db   absolute path (three slashes, like file:///)
    sqlite://state/agentdeck.db            relative to the working directory
    sqlite://~/agentdeck.db                relative to the home directory
    sqlite://:memory:                      private in-memory database (tests); also sqlite:///:memory:
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from agentdeck.backends._checks import check_page as _check_page
from agentdeck.backends._checks import check_tasks as _check_tasks
from agentdeck.backends._checks import task_order as _task_order
from agentdeck.backends._checks import workflow_change as _workflow_change
from agentdeck.backends.sqlite import schema
from agentdeck.backends.sqlite.rows import (
    COMMAND_COLUMNS,
    EVENT_COLUMNS,
    INSERT_COMMAND,
    INSERT_EVENT,
    INSERT_TASK,
    INSERT_WORKFLOW,
    TASK_COLUMNS,
    WORKFLOW_COLUMNS,
    Row,
    command_from_row,
    command_to_row,
    dumps,
    event_from_row,
    json_list,
    loads_or_none,
    task_from_row,
    task_to_row,
    workflow_from_row,
    workflow_to_row,
)
from agentdeck.backends.sqlite.transitions import apply_plans, check_fence, plan
from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable, ConfigError, ConflictError, NotFound
from agentdeck.core.models import JSON, Change, Command, CommandStatus, Task, TaskEvent, Workflow
from agentdeck.core.ports import Applied
from agentdeck.core.states import TaskStatus, WorkflowStatus

__all__ = ["MEMORY", "SqliteStore", "path_from_url"]

MEMORY = ":memory:"
"""The path that asks for a private in-memory database."""

#: How long a call waits for another process's write lock before giving up with
#: BackendUnavailable. A write transaction here lasts milliseconds; seconds of waiting means
#: something is stuck, and the caller's retry policy should take over.
BUSY_TIMEOUT_MS = 5_000

#: Engine messages that mean "cannot use the database now" rather than a bug in a statement.
_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "disk is full")

_P = ParamSpec("_P")
_R = TypeVar("_R")

# --------------------------------------------------------------------------------------- URL


def path_from_url(url: str) -> str:
    """The database path named by a ``sqlite:`` URL (:data:`MEMORY` for an in-memory one).

    ``sqlite:///abs/path.db`` is absolute (like ``file:///``); ``sqlite://rel/path.db`` is
    relative to the working directory; ``sqlite://~/x.db`` to the home directory;
    ``sqlite://:memory:`` and ``sqlite:///:memory:`` are in-memory. Raises ConfigError.
    """
    forms = "sqlite:///absolute/path.db, sqlite://relative/path.db or sqlite://:memory:"
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigError(f"store URL scheme {parts.scheme!r} is not sqlite; expected {forms}")
    if "@" in parts.netloc:
        # Never echo this URL: whatever precedes '@' may be a password.
        raise ConfigError(f"a SQLite store URL takes no user or password; expected {forms}")
    if parts.query or parts.fragment:
        raise ConfigError(
            "a SQLite store URL takes no query or fragment "
            f"(got {parts.query or parts.fragment!r}); expected {forms}"
        )
    path = unquote(parts.netloc + parts.path)
    if path in (MEMORY, "/" + MEMORY):
        return MEMORY
    if path in ("", "/"):
        raise ConfigError(f"store URL {url!r} names no database file; expected {forms}")
    return path


# ------------------------------------------------------------------------------------ store


class SqliteStore:
    """The Store port on one SQLite file (or a private in-memory database for tests).

    Build it with a path or :meth:`from_url`, call :meth:`migrate` once, and :meth:`close`
    it when done (``async with`` closes on exit). Several instances, in one process or many,
    may share a file; each sees the others' committed writes.
    """

    def __init__(self, path: str | Path, *, clock: Clock) -> None:
        memory = str(path) == MEMORY
        self._path: Path | None = None if memory else Path(path).expanduser().absolute()
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentdeck-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, clock: Clock) -> SqliteStore:
        """A store for a ``sqlite:`` URL (see :func:`path_from_url`). Raises ConfigError."""
        return cls(path_from_url(url), clock=clock)

    @property
    def path(self) -> Path | None:
        """The database file, or None for an in-memory database."""
        return self._path

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path) if self._path else MEMORY!r})"

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ worker plumbing

    @property
    def _where(self) -> str:
        return str(self._path) if self._path else "the in-memory database"

    def _connection(self) -> sqlite3.Connection:
        """The worker thread's connection, opened (and the file created) on first use."""
        if self._conn is not None:
            return self._conn
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            MEMORY if self._path is None else str(self._path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; write transactions are begun explicitly
            cached_statements=256,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL syncs at checkpoints only. A commit still survives the
            # process being killed (SIGKILL included: it is in the WAL file); only a power cut
            # or OS crash can lose the last commits, and it never corrupts the file. FULL
            # would fsync on every commit, which is what makes SQLite writes slow.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _translate(self, exc: sqlite3.Error) -> Exception | None:
        """The agentdeck error for an engine error, or None to let it through (a bug)."""
        message = str(exc)
        lowered = message.lower()
        if "no such table" in lowered:
            return ConfigError(
                f"SQLite database {self._where} has no agentdeck schema ({message}); "
                "run the migrations first"
            )
        if "not a database" in lowered:
            return ConfigError(f"{self._where} is not a SQLite database")
        if isinstance(exc, sqlite3.OperationalError) and any(m in lowered for m in _UNAVAILABLE):
            return BackendUnavailable(f"SQLite database {self._where} is unusable: {message}")
        return None

    def _run(
        self,
        write: bool,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        """Run ``fn`` on the worker thread; a write runs as one BEGIN IMMEDIATE transaction."""
        try:
            conn = self._connection()
            if not write:
                return fn(conn, *args, **kwargs)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args, **kwargs)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from exc
        except OSError as exc:  # the database's directory could not be created
            raise BackendUnavailable(f"cannot open SQLite database {self._where}: {exc}") from exc

    async def _call(
        self,
        write: bool,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        if self._closed:
            raise BackendUnavailable(f"the SQLite store on {self._where} is closed")
        loop = asyncio.get_running_loop()
        # A cancelled caller stops waiting, but a started transaction still runs to its end:
        # the write happens whole or not at all, as with any database.
        return await loop.run_in_executor(
            self._executor, lambda: self._run(write, fn, *args, **kwargs)
        )

    async def _read(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        return await self._call(False, fn, *args, **kwargs)

    async def _write(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        return await self._call(True, fn, *args, **kwargs)

    # ---------------------------------------------------------------------- lifecycle

    async def migrate(self) -> None:
        """Create or upgrade the schema; a no-op when it is current, safe from two processes
        at once. Raises ConfigError when the database was written by a newer agentdeck."""
        await self._write(schema.migrate, self._clock.now(), self._where)

    async def close(self) -> None:
        """Close the connection and stop the worker thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=True)  # the queue is empty: this joins an idle thread

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---------------------------------------------------------------------- workflows

    async def create_workflow(self, workflow: Workflow, tasks: Sequence[Task]) -> None:
        """Write the workflow, its tasks, their dependencies and a ``created`` event per task in
        one transaction. Raises ConflictError if the id exists, and ValueError (nothing
        written) for tasks that do not fit the workflow: another workflow id, a duplicate key,
        an unknown need, a ``task_count`` that is not the number of tasks."""
        await self._write(_create_workflow, workflow, list(tasks))

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """One workflow. Raises NotFound."""
        rows = await self._read(
            _fetch_all, f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?", (workflow_id,)
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
        where, params = "", []
        if status is not None:
            where = "WHERE status IN (SELECT value FROM json_each(?))"
            params.append(json_list(WorkflowStatus(s).value for s in status))
        rows = await self._read(
            _fetch_all,
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows {where} "
            "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [workflow_from_row(r) for r in rows]

    async def count_workflows(self) -> dict[WorkflowStatus, int]:
        """How many workflows are in each status (absent: none)."""
        rows = await self._read(
            _fetch_all, "SELECT status, COUNT(*) FROM workflows GROUP BY status", ()
        )
        return {WorkflowStatus(status): n for status, n in rows}

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
        return await self._write(
            _set_workflow_status,
            workflow_id,
            json_list(s.value for s in sources),
            target.value,
            at,
            finished_at,
            fence,
        )

    # -------------------------------------------------------------------------- tasks

    async def get_task(self, task_id: str) -> Task:
        """One task. Raises NotFound."""
        tasks = await self._read(
            _fetch_tasks, f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
        )
        if not tasks:
            raise NotFound(f"task {task_id!r} not found")
        return tasks[0]

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
        where, params = _task_filter(workflow_id, status, capability, agent_id)
        return await self._read(
            _fetch_tasks,
            f"SELECT {TASK_COLUMNS} FROM tasks {where} ORDER BY {order} LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )

    async def total_tasks(
        self,
        *,
        workflow_id: str | None = None,
        status: Collection[TaskStatus] | None = None,
        capability: str | None = None,
        agent_id: str | None = None,
    ) -> int:
        """How many tasks match every filter given (what :meth:`list_tasks` pages through)."""
        where, params = _task_filter(workflow_id, status, capability, agent_id)
        rows = await self._read(_fetch_all, f"SELECT COUNT(*) FROM tasks {where}", params)
        return int(rows[0][0])

    async def count_by_capability(
        self, status: Collection[TaskStatus]
    ) -> dict[str, dict[TaskStatus, int]]:
        """For each capability with tasks in one of ``status``, how many are in each."""
        rows = await self._read(
            _fetch_all,
            "SELECT capability, status, COUNT(*) FROM tasks "
            "WHERE status IN (SELECT value FROM json_each(?)) GROUP BY capability, status",
            (json_list(TaskStatus(s).value for s in status),),
        )
        counts: dict[str, dict[TaskStatus, int]] = {}
        for capability, state, n in rows:
            counts.setdefault(capability, {})[TaskStatus(state)] = n
        return counts

    async def count_tasks(self, workflow_ids: Collection[str]) -> dict[str, dict[TaskStatus, int]]:
        """For each given workflow that exists, how many of its tasks are in each status
        (statuses with none are absent; a workflow without tasks maps to ``{}``)."""
        if not workflow_ids:
            return {}
        rows = await self._read(
            _fetch_all,
            "SELECT w.id, t.status, COUNT(t.id) FROM workflows AS w "
            "LEFT JOIN tasks AS t ON t.workflow_id = w.id "
            "WHERE w.id IN (SELECT value FROM json_each(?)) GROUP BY w.id, t.status",
            (json_list(workflow_ids),),
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
        columns = ", ".join(f"t.{c}" for c in TASK_COLUMNS.split(", "))
        # The literal 'ready' (not a parameter) lets SQLite use the partial index tasks_ready.
        return await self._read(
            _fetch_tasks,
            f"SELECT {columns} FROM tasks AS t JOIN workflows AS w ON w.id = t.workflow_id "
            "WHERE t.status = 'ready' AND w.status = 'running' "
            "AND t.capability NOT IN (SELECT value FROM json_each(?)) "
            "ORDER BY t.created_at, t.id LIMIT ?",
            (json_list(hold), limit),
        )

    async def due_tasks(self, now: float, *, limit: int = 500) -> list[Task]:
        """Tasks whose time has come, soonest due first: ``retrying`` with ``not_before <=
        now``, and ``dispatched``/``running`` with ``deadline <= now``."""
        _check_page(limit)
        # Two branches, each served by its own partial index, rather than one OR.
        return await self._read(
            _fetch_tasks,
            f"SELECT {TASK_COLUMNS} FROM ("
            f"SELECT {TASK_COLUMNS}, not_before AS due FROM tasks "
            "WHERE status = 'retrying' AND not_before <= ? "
            "UNION ALL "
            f"SELECT {TASK_COLUMNS}, deadline AS due FROM tasks "
            "WHERE status IN ('dispatched', 'running') AND deadline <= ?"
            ") ORDER BY due, id LIMIT ?",
            (now, now, limit),
        )

    async def outputs(self, task_ids: Collection[str]) -> dict[str, JSON]:
        """The outputs of the given tasks that exist (None for a task without one)."""
        if not task_ids:
            return {}
        rows = await self._read(
            _fetch_all,
            "SELECT id, output FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
            (json_list(task_ids),),
        )
        return {task_id: loads_or_none(output) for task_id, output in rows}

    async def apply(
        self, changes: Sequence[Change], at: float, *, fence: int | None = None
    ) -> Applied:
        """Apply compare-and-set transitions in one transaction (see the Protocol).

        With ``fence`` and no changes, it only records the token, so a new leader can lock
        out the old one before its first real write. Raises LeaseLost (nothing written),
        ValueError for an unknown value name, InvalidTransition when ``expect`` holds a status
        that cannot reach ``to``.
        """
        if not changes and fence is None:
            return Applied(tasks=[], released=[])
        return await self._write(_apply, list(changes), at, fence)

    # ------------------------------------------------------------------------- events

    async def task_events(self, task_id: str) -> list[TaskEvent]:
        """A task's history, oldest first (empty for an unknown task)."""
        rows = await self._read(
            _fetch_all,
            f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = ? ORDER BY seq",
            (task_id,),
        )
        return [event_from_row(r) for r in rows]

    async def events_since(
        self, seq: int, *, workflow_id: str | None = None, limit: int = 1000
    ) -> list[TaskEvent]:
        """Events with ``seq`` greater than the one given, in order."""
        _check_page(limit)
        where = "seq > ?"
        params: list[Any] = [seq]
        if workflow_id is not None:
            where += " AND workflow_id = ?"
            params.append(workflow_id)
        rows = await self._read(
            _fetch_all,
            f"SELECT {EVENT_COLUMNS} FROM task_events WHERE {where} ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return [event_from_row(r) for r in rows]

    # ----------------------------------------------------------------------- commands

    async def add_command(self, command: Command) -> None:
        """Queue an operator's command. Raises ConflictError if its id exists."""
        await self._write(_add_command, command_to_row(command))

    async def pending_commands(self, limit: int = 100) -> list[Command]:
        """Commands not yet carried out, oldest first (ties: first queued first)."""
        _check_page(limit)
        rows = await self._read(
            _fetch_all,
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE status = 'pending' "
            "ORDER BY created_at, seq LIMIT ?",
            (limit,),
        )
        return [command_from_row(r) for r in rows]

    async def finish_command(self, command: Command) -> None:
        """Record a command's outcome (status, result, finished_at). Raises NotFound."""
        await self._write(
            _finish_command,
            command.id,
            CommandStatus(command.status).value,
            command.result,
            command.finished_at,
        )

    async def get_command(self, command_id: str) -> Command:
        """One command. Raises NotFound."""
        rows = await self._read(
            _fetch_all, f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?", (command_id,)
        )
        if not rows:
            raise NotFound(f"command {command_id!r} not found")
        return command_from_row(rows[0])

    async def list_commands(self, limit: int = 100, offset: int = 0) -> list[Command]:
        """The action log, newest first (ties: last queued first), a page at a time."""
        _check_page(limit, offset)
        rows = await self._read(
            _fetch_all,
            f"SELECT {COMMAND_COLUMNS} FROM commands ORDER BY created_at DESC, seq DESC"
            " LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [command_from_row(r) for r in rows]

    async def count_commands(self) -> int:
        """How many commands the action log holds."""
        rows = await self._read(_fetch_all, "SELECT count(*) FROM commands", ())
        return int(rows[0][0])

    # ---------------------------------------------------------------------- snapshots

    async def dump_workflows(self, *, after: str = "", limit: int = 1000) -> list[Workflow]:
        """Workflows whose id sorts after ``after``, by id."""
        _check_page(limit)
        rows = await self._read(
            _fetch_all,
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [workflow_from_row(r) for r in rows]

    async def dump_tasks(self, *, after: str = "", limit: int = 1000) -> list[Task]:
        """Tasks whose id sorts after ``after``, by id."""
        _check_page(limit)
        return await self._read(
            _fetch_tasks,
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )

    async def dump_commands(self, *, after: str = "", limit: int = 1000) -> list[Command]:
        """Commands whose id sorts after ``after``, by id."""
        _check_page(limit)
        rows = await self._read(
            _fetch_all,
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
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
        """Write records as given in one transaction (see :meth:`core.ports.Store.load`).
        Raises ConflictError, writing nothing, when any of them exists already."""
        rows = (  # encode everything before writing anything
            [workflow_to_row(w) for w in workflows],
            [task_to_row(t) for t in tasks],
            [(e.seq, *_event_row(e)) for e in events],
            [command_to_row(c) for c in commands],
            [(f"{t.workflow_id}/{need}", t.id) for t in tasks for need in dict.fromkeys(t.needs)],
        )
        await self._write(_load, *rows)


# ---------------------------------------------------------- run on the worker thread


def _task_filter(
    workflow_id: str | None,
    status: Collection[TaskStatus] | None,
    capability: str | None,
    agent_id: str | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of the task list filters."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("workflow_id", workflow_id),
        ("capability", capability),
        ("agent_id", agent_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if status is not None:
        clauses.append("status IN (SELECT value FROM json_each(?))")
        params.append(json_list(TaskStatus(s).value for s in status))
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
    return conn.execute(sql, params).fetchall()


def _fetch_tasks(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Task]:
    # Decoded on the worker thread, so parsing thousands of JSON columns stays off the loop.
    return [task_from_row(r) for r in conn.execute(sql, params)]


def _create_workflow(conn: sqlite3.Connection, workflow: Workflow, tasks: list[Task]) -> None:
    ids = _check_tasks(workflow, tasks)
    task_rows = [task_to_row(t) for t in tasks]  # encode everything before writing anything
    try:
        conn.execute(INSERT_WORKFLOW, workflow_to_row(workflow))
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"workflow {workflow.id!r} already exists") from exc
    try:
        conn.executemany(INSERT_TASK, task_rows)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"a task of workflow {workflow.id!r} already exists: {exc}") from exc
    conn.executemany(
        "INSERT OR IGNORE INTO task_deps (needs_id, task_id) VALUES (?, ?)",
        [(ids[need], t.id) for t in tasks for need in t.needs],
    )
    conn.executemany(
        INSERT_EVENT,
        [
            (
                t.id,
                t.workflow_id,
                t.created_at,
                "created",
                t.attempt,
                None,
                row[4],
                t.agent_id,
                "{}",
            )
            for t, row in zip(tasks, task_rows, strict=True)
        ],
    )


_INSERT_EVENT_WITH_SEQ = f"INSERT INTO task_events ({EVENT_COLUMNS}) VALUES ({', '.join('?' * 10)})"


def _event_row(e: TaskEvent) -> Row:
    return (
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


def _load(
    conn: sqlite3.Connection,
    workflows: list[Row],
    tasks: list[Row],
    events: list[Row],
    commands: list[Row],
    deps: list[tuple[str, str]],
) -> None:
    for what, sql, rows in (
        ("workflow", INSERT_WORKFLOW, workflows),
        ("task", INSERT_TASK, tasks),
        ("event", _INSERT_EVENT_WITH_SEQ, events),
        ("command", INSERT_COMMAND, commands),
    ):
        try:
            conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise ConflictError(
                f"cannot load: a {what} exists already or is orphaned: {exc}"
            ) from exc
    try:
        conn.executemany("INSERT INTO task_deps (needs_id, task_id) VALUES (?, ?)", deps)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"cannot load: a task needs one that is not loaded: {exc}") from exc


def _set_workflow_status(
    conn: sqlite3.Connection,
    workflow_id: str,
    expect: str,
    to: str,
    at: float,
    finished_at: float | None,
    fence: int | None,
) -> bool:
    if fence is not None:
        check_fence(conn, fence)
    cursor = conn.execute(
        "UPDATE workflows SET status = ?, updated_at = ?, finished_at = ? "
        "WHERE id = ? AND status IN (SELECT value FROM json_each(?))",
        (to, at, finished_at, workflow_id, expect),
    )
    if cursor.rowcount:
        return True
    if conn.execute("SELECT 1 FROM workflows WHERE id = ?", (workflow_id,)).fetchone() is None:
        raise NotFound(f"workflow {workflow_id!r} not found")
    return False


def _apply(
    conn: sqlite3.Connection, changes: list[Change], at: float, fence: int | None
) -> Applied:
    plans = [plan(c) for c in changes]  # validate everything before writing anything
    if fence is not None:
        check_fence(conn, fence)
    moved, released = apply_plans(conn, plans, at)
    sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?))"
    tasks = {t.id: t for t in _fetch_tasks(conn, sql, (json_list(moved + released),))}
    return Applied(tasks=[tasks[i] for i in moved], released=[tasks[i] for i in released])


def _add_command(conn: sqlite3.Connection, row: Row) -> None:
    try:
        conn.execute(INSERT_COMMAND, row)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"command {row[0]!r} already exists") from exc


def _finish_command(
    conn: sqlite3.Connection,
    command_id: str,
    status: str,
    result: str,
    finished_at: float | None,
) -> None:
    cursor = conn.execute(
        "UPDATE commands SET status = ?, result = ?, finished_at = ? WHERE id = ?",
        (status, result, finished_at, command_id),
    )
    if not cursor.rowcount:
        raise NotFound(f"command {command_id!r} not found")
