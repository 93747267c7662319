"""The backends each contract suite runs against, by id.

Adding a backend to a suite is one entry here. An entry opens a ready-to-use port (migrated,
started) inside an ``async with`` and closes it on exit. It receives a directory private to
the test and the test's clock:

- opening twice with the same directory must reach the same data (as two processes sharing
  one database would); set ``shared=False`` when the engine cannot do that (an in-memory
  database), and the tests that need it are skipped for that backend;
- opening with a new directory must give an empty store (a server-backed entry can derive a
  database or schema name from the directory, and should skip when the server is absent:
  see ``tests.conftest.require_service``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agentdeck.backends.sqlite.store import MEMORY, SqliteStore
from agentdeck.core.clock import Clock
from agentdeck.core.ports import Store
from tests.conftest import require_service

StoreOpener = Callable[[Path, Clock], AbstractAsyncContextManager[Store]]


@dataclass(frozen=True)
class StoreBackend:
    """How to open one Store backend for a test, and whether two opens share their data."""

    open: StoreOpener
    shared: bool = True


@asynccontextmanager
async def _sqlite_file(directory: Path, clock: Clock) -> AsyncIterator[Store]:
    async with SqliteStore(directory / "state" / "agentdeck.db", clock=clock) as store:
        await store.migrate()
        yield store


@asynccontextmanager
async def _sqlite_memory(directory: Path, clock: Clock) -> AsyncIterator[Store]:
    async with SqliteStore(MEMORY, clock=clock) as store:
        await store.migrate()
        yield store


@asynccontextmanager
async def _postgres(directory: Path, clock: Clock) -> AsyncIterator[Store]:
    # Imported here: asyncpg loads only when a PostgreSQL test runs.
    from agentdeck.backends.postgres import PostgresStore, testing

    server = urlsplit(testing.server_url())
    require_service("PostgreSQL", server.hostname or "127.0.0.1", server.port or 5432)
    # A schema per test directory, kept until the test run ends (see schema_for).
    url = await testing.schema_for(str(directory))
    async with PostgresStore.from_url(url, clock=clock) as store:
        await store.migrate()
        yield store


STORE_BACKENDS: dict[str, StoreBackend] = {
    "sqlite-file": StoreBackend(_sqlite_file),
    "sqlite-memory": StoreBackend(_sqlite_memory, shared=False),
    "postgres": StoreBackend(_postgres),
}
"""Every Store backend, by the id the tests show."""
