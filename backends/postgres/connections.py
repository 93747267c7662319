"""The connections of ``PostgresStore``: the pool, what engine errors mean, and how a read or
a write runs on a connection.

- **A pool**, sized from the URL (``min_size``, ``max_size``), opened on first use with bounded
  retries (tenacity); a server that stays unreachable fails with one
  :class:`BackendUnavailable` line naming ``host:port/database``, never the password.
- **Faults**: a lost connection, a server shutting down, a deadlock or a full server is
  :class:`BackendUnavailable` (retryable). Reads retry it a few times first (they are
  idempotent); writes do not, because a write whose commit was cut off may have happened:
  the caller decides, and compare-and-set makes a repeated ``apply`` harmless.
- A connection that broke is dropped, not returned to the pool.
- **Several hosts** (a primary and standbys): connections go through
  :class:`~backends.postgres.hosts.HostRing`; a statement that timed out drops the pool (its
  host was most likely cut off), and a connection idle for :data:`MULTI_HOST_IDLE` seconds is
  closed (the pool keeps none idle: ``min_size`` defaults to 0 with several hosts, as asyncpg
  never closes the connections that make up ``min_size``), so a node that stood by (a standby
  scheduler) does not send its first statement after a failover down a connection to the old
  primary and wait ``command_timeout`` for it.
- **Refusals**: a statement the user's role may not run (``InsufficientPrivilegeError``, from a
  grant or the commands trigger of :mod:`backends.postgres.schema`) is :class:`PermissionDenied`
  naming the authenticated user, what it tried and its role: "role ada may not cancel: it is
  read-only". Never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import tenacity

from agentdeck.backends.postgres.hosts import HostRing
from agentdeck.backends.postgres.schema import NODE, OPERATOR, ROLES, VIEWER
from agentdeck.backends.postgres.url import PostgresTarget
from agentdeck.core.errors import BackendUnavailable, ConfigError, PermissionDenied

__all__ = ["PostgresConnections", "denied_message", "fetch"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

MULTI_HOST_IDLE = 5.0
"""Seconds a pooled connection of a multi-host store may stay idle before it is closed (asyncpg's
``max_inactive_connection_lifetime``; 300 s with one host). A busy node reuses its connections
long before that; a node that stands by reconnects, through the host ring, when it needs one."""

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
    # Several hosts and none is (yet) of the kind asked for: mid-failover, no primary yet.
    asyncpg.TargetServerAttributeNotMatched,
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
    # sslmode=verify-ca/verify-full: the server's certificate is not from the CA the URL
    # trusts (sslrootcert), or does not name the host dialled. An OSError, but no retry
    # will change the certificate.
    ssl.SSLCertVerificationError,
)


def _passing(exc: BaseException) -> bool:
    """True for a connection failure worth another try."""
    return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, _REFUSED)


#: How a refused operation reads in "role X may not <verb>"; a command's op is its action.
_VERBS = {
    "create_workflow": "submit workflows",
    "apply": "change task states",
    "set_workflow_status": "change workflow states",
    "finish_command": "record command outcomes",
    "load": "restore a snapshot",
    "migrate": "migrate the schema",
}


def denied_message(op: str, user: str, roles: Sequence[str], server: str, hint: str) -> str:
    """One sentence for a refusal: who (``user``, holding agentdeck ``roles``) may not do
    ``op``, and why. A refused migration also carries the server's words and hint, which say
    what a DBA runs."""
    if NODE in roles:
        what = "it is a node: the schema's owner migrates and restores"
    elif OPERATOR in roles:
        what = "it is an operator: it may read and queue commands, nothing else"
    elif VIEWER in roles:
        what = "it is read-only"
    else:
        what = f"it has none of the roles {', '.join(ROLES)}"
    message = f"role {user} may not {_VERBS.get(op, op)}: {what}"
    if op == "migrate":
        message += f" (PostgreSQL: {server}{'; ' + hint if hint else ''})"
    return message


async def fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one statement on ``conn``."""
    return await conn.fetch(sql, *args)  # type: ignore[no-any-return]


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing to undo (see ``_open_pool``)."""


class PostgresConnections:
    """A pool on one PostgreSQL database, opened on first use, and the runners of reads and
    writes on it (the base of :class:`backends.postgres.store.PostgresStore`)."""

    def __init__(
        self, target: PostgresTarget, *, connect_attempts: int = 5, connect_wait: float = 0.2
    ) -> None:
        """``connect_attempts`` tries, waiting ``connect_wait`` seconds and doubling (at most 5 s)
        between them, before a start-up connection failure is reported."""
        if connect_attempts < 1:
            raise ValueError(f"connect_attempts must be at least 1, got {connect_attempts!r}")
        self._target = target  # its dsn may hold a password: never put it in a message
        self._connect_attempts = connect_attempts
        self._connect_wait = connect_wait
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        # Several hosts: each connection tries them one at a time, the last primary first.
        self._ring = (
            HostRing(target.hosts, target.connect_timeout) if len(target.hosts) > 1 else None
        )

    @property
    def where(self) -> str:
        """``host:port/database``: how messages name this server (no credentials)."""
        return self._target.where

    @property
    def host_states(self) -> dict[str, str]:
        """Each host of the URL (``host:port``) as this store last saw it: with several,
        ``primary``/``replica``/``down``/``?`` from the last connection's walk
        (:meth:`HostRing.states`); with one, ``connected`` while the pool is open, else
        ``?``. No I/O: for the control centre's overview."""
        if self._ring is not None:
            return self._ring.states()
        host, port = self._target.hosts[0]
        return {f"{host}:{port}": "connected" if self._pool is not None else "?"}

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
            retry=tenacity.retry_if_exception(_passing),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._open_pool()
        except ssl.SSLCertVerificationError as exc:
            raise BackendUnavailable(
                f"PostgreSQL at {self.where} failed TLS verification (sslrootcert, host name): "
                f"{self._describe(exc)}"
            ) from None
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
            connect=self._ring.connect if self._ring is not None else None,
            max_inactive_connection_lifetime=MULTI_HOST_IDLE if self._ring is not None else 300.0,
            # asyncpg prepares every statement; after five runs PostgreSQL may switch to a
            # generic plan and keep it until the next ANALYZE. A plan made while `tasks` held
            # a few hundred rows (a seq scan) then stays in use at 20,000 rows: the row-lock
            # query of every transition became the database's main cost under load (see
            # docs/performance.md). Custom plans follow the table's current size instead.
            server_settings={"plan_cache_mode": "force_custom_plan"},
            # asyncpg's default reset runs one more statement (advisory unlock, CLOSE ALL,
            # UNLISTEN, RESET ALL) every time a connection goes back to the pool: a round trip
            # per read and per write. Pooled connections change no session state (locks are
            # transaction-level, LISTEN has a connection of its own, settings are set at
            # connect); asyncpg still rolls back an open transaction before this runs.
            reset=_keep_session,
        )
        try:
            await pool.execute("SELECT 1")  # with min_size=0 nothing has connected yet
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _listen_connection(self) -> asyncpg.Connection:
        """A connection of its own for LISTEN (see :mod:`backends.postgres.watch`)."""
        connect = self._ring.connect if self._ring is not None else asyncpg.connect
        try:
            return await connect(
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
                # With several hosts, a statement that timed out most likely went to a host
                # cut off the network (no reset ever comes): its siblings would hang as long.
                cut_off = self._ring is not None and isinstance(exc, asyncio.TimeoutError)
                if _broken(exc) or cut_off:
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
        try:
            async for attempt in retrying:
                with attempt, self._errors(op):
                    async with self._connection(pool) as conn:
                        return await fn(conn, *args, **kwargs)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise await self._denied(pool, op, exc) from None
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
        try:
            with self._errors(op):
                async with self._connection(pool) as conn, conn.transaction():
                    return await fn(conn, *args, **kwargs)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise await self._denied(pool, op, exc) from None

    async def _write_one(
        self,
        op: str,
        fn: Callable[Concatenate[asyncpg.Connection, _P], Awaitable[_R]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        """Run ``fn``, which makes exactly one statement, outside an explicit transaction: the
        statement is a transaction of its own (all of it or nothing, committed before it
        answers), with no BEGIN and COMMIT round trips. ``fn`` may raise after it (a refused
        fencing token): the statement must then have written nothing. Not retried."""
        pool = await self._get_pool()
        try:
            with self._errors(op):
                async with self._connection(pool) as conn:
                    return await fn(conn, *args, **kwargs)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise await self._denied(pool, op, exc) from None

    async def _denied(
        self, pool: asyncpg.Pool, op: str, exc: asyncpg.InsufficientPrivilegeError
    ) -> PermissionDenied:
        """The refusal of ``op`` as PermissionDenied, naming the authenticated user and its
        role as the server reports them (asked on a fresh statement: the refused transaction
        is gone)."""
        user, roles = "(this user)", []
        with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            row = await pool.fetchrow(
                "SELECT session_user::text, ARRAY(SELECT rolname::text FROM pg_roles "
                "WHERE rolname = ANY($1::text[]) AND pg_has_role(session_user, oid, 'USAGE'))",
                list(ROLES),
            )
            if row is not None:
                user, roles = row[0], list(row[1])
        return PermissionDenied(
            denied_message(op, user, roles, self._describe(exc), getattr(exc, "hint", "") or "")
        )

    async def _fetch(self, op: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._read(op, fetch, sql, *args)

    async def _close_pool(self) -> None:
        """Close the pool (terminated if a connection stays busy); later calls fail."""
        self._closed = True
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except TimeoutError:  # a connection still busy: do not hang the shutdown
                pool.terminate()
