"""The events without an index by workflow (PostgreSQL's schema 5, SQLite's 3).

Every event paid an entry in ``task_events_workflow`` (three a task), and only
``events_since(workflow_id=...)`` could read it, which nothing in agentdeck calls. The
versions that drop it are pinned here, and a SQLite database of the version before, holding
events, migrates keeping them and still answers by workflow. (PostgreSQL's migration of a
version 4 database with events: tests/integration/test_postgres_events_index.py.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentdeck.backends.postgres import schema as pg_schema
from agentdeck.backends.sqlite import schema as sqlite_schema
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.clock import FakeClock
from tests.contract.test_store import dispatch, submit, succeed


def test_the_schema_versions_are_pinned() -> None:
    """PostgreSQL is at version 5 and SQLite at 3: a new migration updates this test."""
    assert pg_schema.latest_version() == 5
    assert sqlite_schema.latest_version() == 3


def test_the_last_migrations_drop_the_events_index_by_workflow() -> None:
    """Both stores' newest migration is the drop, idempotent (IF EXISTS), and nothing
    recreates the index after it."""
    drop = ("DROP INDEX IF EXISTS task_events_workflow",)
    assert pg_schema.MIGRATIONS[4] == drop
    assert sqlite_schema.MIGRATIONS[2] == drop


async def test_a_version_2_sqlite_database_with_events_drops_the_index(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A database migrated to version 2 (the index there) with two workflows' events goes to
    version 3: the index is gone, every event is kept and events_since by workflow still
    returns that workflow's events only, in order."""
    path = tmp_path / "agentdeck.db"
    async with SqliteStore(path, clock=clock) as store:
        await store.migrate()
        await submit(store, clock, "w1", {"a": [], "b": ["a"]})
        await submit(store, clock, "w2", {"a": []})
        await store.apply([dispatch("w1/a"), dispatch("w2/a")], clock.now())
        await store.apply([succeed("w1/a"), succeed("w2/a")], clock.now())
        before = await store.events_since(0)
    with sqlite3.connect(path) as raw:  # back to version 2, as the code before wrote it
        raw.execute("CREATE INDEX task_events_workflow ON task_events (workflow_id, seq)")
        raw.execute("DELETE FROM schema_version WHERE version = 3")
    async with SqliteStore(path, clock=clock) as store:
        await store.migrate()
        assert await store.events_since(0) == before
        w1 = await store.events_since(0, workflow_id="w1")
        assert w1 == [e for e in before if e.workflow_id == "w1"]
        assert [e.seq for e in w1] == sorted(e.seq for e in w1)
        assert await store.events_since(w1[1].seq, workflow_id="w1", limit=1) == [w1[2]]
    with sqlite3.connect(path) as raw:
        names = {n for (n,) in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        versions = [v for (v,) in raw.execute("SELECT version FROM schema_version")]
    assert "task_events_workflow" not in names
    assert "task_events_task" in names
    assert versions == [1, 2, 3]
