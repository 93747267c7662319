"""``SqliteRegistry``: the registry in a SQLite file, shared by every process on one machine.

The daemon heartbeats into the file and ``agentdeck agents`` in another shell reads it. The
file is opened in WAL mode (readers never wait for the writer) with a busy timeout (writers
queue up instead of failing), and every write is one ``BEGIN IMMEDIATE`` transaction, which
takes the write lock up front: a lease claim reads and writes under that one lock, so two
processes cannot both win it.

sqlite3 blocks, so each instance runs all its statements on one worker thread of its own.
The tables are prefixed ``registry_`` so the registry may share a file with the store.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

from agentdeck.backends.memory import check_ttl, claim_lease
from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable, ConfigError
from agentdeck.core.models import AgentRecord, AgentState
from agentdeck.core.ports import BreakerRecord, Lease
from agentdeck.core.settings import redact_url

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_agents (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    capabilities TEXT NOT NULL,  -- JSON array
    concurrency  INTEGER NOT NULL,
    state        TEXT NOT NULL,
    started_at   REAL NOT NULL,
    last_seen    REAL NOT NULL,
    in_flight    INTEGER NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    succeeded    INTEGER NOT NULL,
    failed       INTEGER NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_breakers (
    name    TEXT PRIMARY KEY,
    state   TEXT NOT NULL,
    data    TEXT NOT NULL,  -- JSON object
    version INTEGER NOT NULL
);
-- A released lease keeps its row (holder NULL) so the next token is still larger.
CREATE TABLE IF NOT EXISTS registry_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT,
    token      INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
"""

_AGENT_COLUMNS = (
    "id, name, capabilities, concurrency, state, started_at, last_seen, in_flight, host, pid,"
    " succeeded, failed"
)


def sqlite_path(url: str) -> Path:
    """The database file of a ``sqlite:`` URL, in the forms the SQLite store accepts too.

    ``sqlite:///abs/registry.db`` (or ``sqlite:////abs/registry.db``) is absolute,
    ``sqlite://rel/registry.db`` relative to the working directory, ``sqlite://~/registry.db``
    to the home directory. Raises ConfigError for anything else.
    """
    forms = (
        "sqlite:///absolute/registry.db, sqlite://relative/registry.db or sqlite://~/registry.db"
    )
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"{redact_url(url)!r} is not a SQLite registry URL (no user, password or options); "
            f"expected {forms}"
        )
    raw = unquote(parts.netloc + parts.path)
    if ":memory:" in raw:
        raise ConfigError("for a registry kept in this process only, use registry_url memory://")
    if not raw.strip("/") or raw.endswith("/"):
        raise ConfigError(f"{redact_url(url)!r} names no database file; expected {forms}")
    if raw.startswith("/"):
        return Path("/" + raw.lstrip("/"))  # a fourth slash is harmless: sqlite:////abs.db
    return Path(raw).expanduser().absolute()


class SqliteRegistry:
    """The registry (:class:`core.ports.Registry`) in a SQLite file.

    Expiry is decided by the injected clock, as in :class:`backends.memory.MemoryRegistry`;
    processes sharing the file must share a wall clock (they are on one machine).
    """

    def __init__(self, path: Path | str, *, clock: Clock, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def from_url(cls, url: str, *, clock: Clock) -> Self:
        """A registry for ``sqlite:///abs/path/registry.db``."""
        return cls(sqlite_path(url), clock=clock)

    async def start(self) -> None:
        """Open the file (creating it and its folder) and create the tables if needed."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-registry")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close_conn)
        executor.shutdown(wait=True)

    # -- agents

    async def register(self, agent: AgentRecord, ttl: float) -> None:
        """Store the record (replacing any with the same id) for ``ttl`` seconds."""
        check_ttl(ttl)
        await self._run(self._register, agent, ttl, self._clock.now())

    async def heartbeat(
        self,
        agent_id: str,
        ttl: float,
        *,
        in_flight: int,
        state: AgentState,
        succeeded: int = 0,
        failed: int = 0,
    ) -> bool:
        """Refresh a live record; False if it expired or never existed."""
        check_ttl(ttl)
        now = self._clock.now()
        sql = (
            "UPDATE registry_agents SET last_seen = ?, expires_at = ?, in_flight = ?, state = ?,"
            " succeeded = ?, failed = ? WHERE id = ? AND expires_at >= ?"
        )
        args = (now, now + ttl, in_flight, state.value, succeeded, failed, agent_id, now)
        return await self._run(self._write_rowcount, sql, args) == 1

    async def deregister(self, agent_id: str) -> None:
        """Forget the agent (no error if absent)."""
        await self._run(
            self._write_rowcount, "DELETE FROM registry_agents WHERE id = ?", (agent_id,)
        )

    async def agents(self, capability: str | None = None) -> list[AgentRecord]:
        """Live agents, by name then id."""
        sql = f"SELECT {_AGENT_COLUMNS} FROM registry_agents WHERE expires_at >= ?"
        args: tuple[Any, ...] = (self._clock.now(),)
        if capability is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(capabilities) WHERE value = ?)"
            args += (capability,)
        rows = await self._run(self._read, sql + " ORDER BY name, id", args)
        return [_agent(row) for row in rows]

    # -- breakers

    async def get_breaker(self, name: str) -> BreakerRecord | None:
        """The breaker's shared state, if any."""
        rows = await self._run(
            self._read,
            "SELECT name, state, data, version FROM registry_breakers WHERE name = ?",
            (name,),
        )
        return _breaker(rows[0]) if rows else None

    async def put_breaker(self, record: BreakerRecord, expected_version: int | None) -> bool:
        """Compare-and-set on the stored version (None: must not exist)."""
        data = json.dumps(dict(record.data))
        if expected_version is None:
            sql = (
                "INSERT INTO registry_breakers (name, state, data, version) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING"
            )
            args: tuple[Any, ...] = (record.name, record.state, data, record.version)
        else:
            sql = (
                "UPDATE registry_breakers SET state = ?, data = ?, version = ?"
                " WHERE name = ? AND version = ?"
            )
            args = (record.state, data, record.version, record.name, expected_version)
        return await self._run(self._write_rowcount, sql, args) == 1

    async def breakers(self) -> list[BreakerRecord]:
        """Every breaker, by name."""
        rows = await self._run(
            self._read, "SELECT name, state, data, version FROM registry_breakers ORDER BY name", ()
        )
        return [_breaker(row) for row in rows]

    # -- leases

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take, extend or be refused the lease, atomically across processes."""
        check_ttl(ttl)
        return await self._run(self._acquire, name, holder, ttl, self._clock.now())

    async def release_lease(self, name: str, holder: str) -> None:
        """Drop the lease if ``holder`` holds it; its token is not reused."""
        await self._run(
            self._write_rowcount,
            "UPDATE registry_leases SET holder = NULL WHERE name = ? AND holder = ?",
            (name, holder),
        )

    async def get_lease(self, name: str) -> Lease | None:
        """The unexpired lease, if any."""
        rows = await self._run(
            self._read,
            "SELECT name, holder, token, expires_at FROM registry_leases"
            " WHERE name = ? AND holder IS NOT NULL AND expires_at >= ?",
            (name, self._clock.now()),
        )
        return Lease(*rows[0]) if rows else None

    # -- the worker thread: everything below runs there, never on the event loop

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise BackendUnavailable(f"the sqlite registry {self.path} is not started")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk, permissions
            raise BackendUnavailable(f"sqlite registry {self.path}: {exc}") from exc

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"cannot create the folder of {self.path}: {exc}") from exc
        # isolation_level=None: no implicit transactions; each write says BEGIN IMMEDIATE itself.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            # Registry facts are rebuilt by the next heartbeat; NORMAL is durable enough in WAL.
            conn.execute("PRAGMA synchronous = NORMAL")
            with _transaction(conn):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BackendUnavailable(f"the sqlite registry {self.path} is not open")
        return self._conn

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, args).fetchall()

    def _write_rowcount(self, sql: str, args: tuple[Any, ...]) -> int:
        conn = self._connection()
        with _transaction(conn):
            return conn.execute(sql, args).rowcount

    def _register(self, agent: AgentRecord, ttl: float, now: float) -> None:
        conn = self._connection()
        with _transaction(conn):
            # Dead agents' rows go when a new one registers, so the table stays small.
            conn.execute("DELETE FROM registry_agents WHERE expires_at < ?", (now,))
            conn.execute(
                f"INSERT OR REPLACE INTO registry_agents ({_AGENT_COLUMNS}, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    agent.id,
                    agent.name,
                    json.dumps(list(agent.capabilities)),
                    agent.concurrency,
                    agent.state.value,
                    agent.started_at,
                    now,
                    agent.in_flight,
                    agent.host,
                    agent.pid,
                    agent.succeeded,
                    agent.failed,
                    now + ttl,
                ),
            )

    def _acquire(self, name: str, holder: str, ttl: float, now: float) -> Lease | None:
        conn = self._connection()
        with _transaction(conn):
            row = conn.execute(
                "SELECT holder, token, expires_at FROM registry_leases WHERE name = ?", (name,)
            ).fetchone()
            last_token = 0 if row is None else int(row[1])
            current = None if row is None or row[0] is None else Lease(name, row[0], row[1], row[2])
            lease = claim_lease(current, last_token, name, holder, ttl, now)
            if lease is not None:
                conn.execute(
                    "INSERT INTO registry_leases (name, holder, token, expires_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                    " holder = excluded.holder, token = excluded.token,"
                    " expires_at = excluded.expires_at",
                    (lease.name, lease.holder, lease.token, lease.expires_at),
                )
            return lease

    def __repr__(self) -> str:
        return f"<SqliteRegistry path={self.path} open={self._executor is not None}>"


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction holding the write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _agent(row: tuple[Any, ...]) -> AgentRecord:
    (id_, name, caps, concurrency, state, started, seen, in_flight, host, pid, ok, failed) = row
    return AgentRecord(
        id=id_,
        name=name,
        capabilities=tuple(json.loads(caps)),
        concurrency=concurrency,
        state=AgentState(state),
        started_at=started,
        last_seen=seen,
        in_flight=in_flight,
        host=host,
        pid=pid,
        succeeded=ok,
        failed=failed,
    )


def _breaker(row: tuple[Any, ...]) -> BreakerRecord:
    name, state, data, version = row
    return BreakerRecord(name=name, state=state, data=json.loads(data), version=version)
