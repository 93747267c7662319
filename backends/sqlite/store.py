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
- **The port is shared**: :class:`backends.sql.store.SqlStore` holds every read and the checks
  and encoding of every write; the write statements are :mod:`backends.sqlite.writes`.
- **apply** (:mod:`backends.sqlite.transitions`) decides each compare-and-set under the write
  lock (:mod:`backends.sql.decide`) and batches what it can; 1,000 changes take a few tens of
  milliseconds.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from agentdeck.backends.sql.codec import Row
from agentdeck.backends.sql.decide import Plan, plan
from agentdeck.backends.sql.store import SqlStore, Then, merged
from agentdeck.backends.sql.writes import Load, NewWorkflow, StatusChange
from agentdeck.backends.sqlite import schema, transitions, writes
from agentdeck.backends.sqlite.dialect import SQLITE, TASKS
from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable, ConfigError
from agentdeck.core.models import Task
from agentdeck.core.ports import Applied

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


class SqliteStore(SqlStore):
    """The Store port on one SQLite file (or a private in-memory database for tests).

    The port is :class:`backends.sql.store.SqlStore` in the :data:`SQLITE` dialect; this class
    runs its statements on the worker thread.

    Build it with a path or :meth:`from_url`, call :meth:`migrate` once, and :meth:`close`
    it when done (``async with`` closes on exit). Several instances, in one process or many,
    may share a file; each sees the others' committed writes.
    """

    _dialect = SQLITE

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

    # ------------------------------------------------------------------ reads (shared)

    async def _rows(self, op: str, sql: str, params: Sequence[Any]) -> list[Row]:
        return await self._read(_fetch_all, sql, params)

    async def _tasks(self, op: str, sql: str, params: Sequence[Any]) -> list[Task]:
        return await self._read(_fetch_tasks, sql, params)

    # ------------------------------------------------------------------ writes (hooks)

    async def _insert_workflow(self, new: NewWorkflow) -> None:
        await self._write(writes.create_workflow, new)

    async def _set_status(self, change: StatusChange, fence: int | None) -> bool:
        return await self._write(writes.set_workflow_status, change, fence)

    async def _set_budget(
        self, workflow_id: str, budget: str | None, at: float, fence: int | None
    ) -> None:
        await self._write(writes.set_workflow_budget, workflow_id, budget, at, fence)

    async def _apply(self, plans: list[Plan], at: float, fence: int | None, then: Then) -> Applied:
        """With ``then``, two transactions: ``plans`` committed, then what ``then`` returns
        (a transaction here lives on the worker thread, which cannot wait for the loop)."""
        first = await self._write(transitions.apply, plans, at, fence)
        if then is None:
            return first
        more = [plan(c) for c in await then(first)]
        if not more:
            return first
        return merged(first, await self._write(transitions.apply, more, at, fence))

    async def _insert_command(self, row: tuple[Any, ...]) -> None:
        await self._write(writes.add_command, row)

    async def _finish(
        self, command_id: str, status: str, result: str, finished_at: float | None
    ) -> None:
        await self._write(writes.finish_command, command_id, status, result, finished_at)

    async def _load(self, rows: Load) -> None:
        await self._write(writes.load, rows)


# ---------------------------------------------------------- run on the worker thread


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
    return conn.execute(sql, params).fetchall()


def _fetch_tasks(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Task]:
    # Decoded on the worker thread, so parsing thousands of JSON columns stays off the loop.
    return [TASKS.from_row(r) for r in conn.execute(sql, params)]
