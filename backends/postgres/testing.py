"""Scratch databases and schemas for tests: each test gets an empty store of its own.

Two kinds, both named ``agentdeck_t_<host>_<pid>_<hex>``:

- :func:`scratch_database`: a new database for one block, dropped after it. ``CREATE
  DATABASE`` takes some 40 ms here; it is the strongest isolation there is (migrations from
  nothing; advisory locks, NOTIFY channels and ``pg_stat_activity`` are per database).
- :func:`schema_for`: a schema of the shared database :data:`SHARED_DATABASE`, private to a
  key (a test's directory), created on first use and kept until the process exits, so that
  opening the same key again reaches the same data. A few milliseconds and a few kilobytes
  each: what the contract suite uses for its hundreds of opens. The store's URL selects it
  with ``?search_path=<schema>``.

A database or schema whose creating process is gone was left behind by a run that was
killed; the next run on the same host drops it (runs on other hosts are left alone).

The server is ``AGENTDECK_TEST_POSTGRES`` (an admin URL, database ``postgres``) or
:data:`DEFAULT_SERVER`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg

__all__ = [
    "DEFAULT_SERVER",
    "PREFIX",
    "SHARED_DATABASE",
    "create_database",
    "drop_database",
    "schema_for",
    "scratch_database",
    "server_url",
    "url_for",
]

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SHARED_DATABASE = "agentdeck_test"
PREFIX = "agentdeck_t_"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_NAME = re.compile(rf"{PREFIX}{_HOST}_(\d+)_[0-9a-f]+")

_kept: set[str] = set()  # schemas of schema_for, dropped when the process exits
_swept: set[str] = set()  # "databases" and/or "schemas": swept once per process


def server_url() -> str:
    """The admin URL of the test server."""
    return os.environ.get("AGENTDECK_TEST_POSTGRES", DEFAULT_SERVER)


def url_for(name: str, server: str | None = None, *, search_path: str | None = None) -> str:
    """The URL of database ``name`` on the test server (with a ``search_path`` if given)."""
    parts = urlsplit(server or server_url())
    query = urlencode({"search_path": search_path}) if search_path else parts.query
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", query, ""))


async def create_database(name: str, server: str | None = None) -> str:
    """Create database ``name`` if it does not exist; returns its URL."""
    conn = await asyncpg.connect(server or server_url())
    try:
        await _sweep(conn, "databases")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # created meanwhile
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url_for(name, server)


async def drop_database(name: str, server: str | None = None) -> None:
    """Drop database ``name`` (no error if absent), ending any session still on it."""
    conn = await asyncpg.connect(server or server_url())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(server: str | None = None) -> AsyncIterator[str]:
    """A new empty database for the block (its URL), dropped after it."""
    name = f"{_own_prefix()}{secrets.token_hex(6)}"
    url = await create_database(name, server)
    try:
        yield url
    finally:
        await drop_database(name, server)


async def schema_for(key: str, server: str | None = None) -> str:
    """The URL of a schema of :data:`SHARED_DATABASE` private to ``key``, created on first
    use and kept until this process exits."""
    name = f"{_own_prefix()}{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if name not in _kept:
        database = await create_database(SHARED_DATABASE, server)
        conn = await asyncpg.connect(database)
        try:
            await _sweep(conn, "schemas")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
        finally:
            await conn.close()
        if not _kept:
            atexit.register(_drop_kept, server)
        _kept.add(name)
    return url_for(SHARED_DATABASE, server, search_path=name)


def _own_prefix() -> str:
    return f"{PREFIX}{_HOST}_{os.getpid()}_"


def _drop_kept(server: str | None) -> None:
    async def drop_all() -> None:
        conn = await asyncpg.connect(url_for(SHARED_DATABASE, server))
        try:
            for name in sorted(_kept):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()

    with contextlib.suppress(OSError, asyncpg.PostgresError):
        asyncio.run(drop_all())


async def _sweep(conn: asyncpg.Connection, kind: str) -> None:
    """Once per process and kind: drop databases or schemas of this host whose creating
    process is gone."""
    if kind in _swept:
        return
    _swept.add(kind)
    if kind == "databases":
        listing, drop = (
            "SELECT datname FROM pg_database",
            'DROP DATABASE IF EXISTS "{}" WITH (FORCE)',
        )
    else:
        listing, drop = "SELECT nspname FROM pg_namespace", 'DROP SCHEMA IF EXISTS "{}" CASCADE'
    for (name,) in await conn.fetch(listing):
        match = _NAME.fullmatch(name)
        if match and not _alive(int(match[1])):
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute(drop.format(name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
