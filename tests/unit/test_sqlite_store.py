"""What the SQLite store promises beyond the Store contract: URLs, the file it keeps, schema
versions, engine errors, and sharing the file with another process."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from agentdeck.backends.sqlite import schema
from agentdeck.backends.sqlite import store as store_module
from agentdeck.backends.sqlite.store import MEMORY, SqliteStore, path_from_url
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, ConfigError
from agentdeck.core.models import Command


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/agentdeck/state.db", "/var/lib/agentdeck/state.db"),
        ("sqlite://state/agentdeck.db", "state/agentdeck.db"),
        ("sqlite://agentdeck.db", "agentdeck.db"),
        ("sqlite:///tmp/with%20space.db", "/tmp/with space.db"),
        ("sqlite://:memory:", MEMORY),
        ("sqlite:///:memory:", MEMORY),
        ("SQLITE:///x.db", "/x.db"),
    ],
)
def test_url_names_a_path(url: str, path: str) -> None:
    """Three slashes give an absolute path, two a relative one; :memory: is in-memory."""
    assert path_from_url(url) == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db/x", "not sqlite"),
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///x.db?mode=ro", "no query"),
        ("sqlite://user:hunter2@host/x.db", "no user or password"),
    ],
)
def test_bad_url_is_a_config_error(url: str, message: str) -> None:
    """A URL that is not a SQLite database path is refused with the forms allowed."""
    with pytest.raises(ConfigError, match=message) as raised:
        path_from_url(url)
    assert "sqlite:///absolute/path.db" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_relative_path_is_fixed_at_construction(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative and ~ paths are resolved once, so a later chdir does not move the database."""
    monkeypatch.chdir(tmp_path)
    store = SqliteStore.from_url("sqlite://state/agentdeck.db", clock=clock)
    monkeypatch.chdir("/")
    assert store.path == tmp_path / "state" / "agentdeck.db"
    assert SqliteStore.from_url("sqlite://~/x.db", clock=clock).path == Path.home() / "x.db"
    assert SqliteStore(MEMORY, clock=clock).path is None


async def test_file_is_created_with_its_directory_in_wal_mode(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Migrating creates missing directories and a WAL-journalled database file."""
    path = tmp_path / "deep" / "er" / "agentdeck.db"
    async with SqliteStore(path, clock=clock) as store:
        await store.migrate()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        versions = raw.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(v,) for v in range(1, schema.latest_version() + 1)]


async def test_two_processes_migrating_at_once_apply_each_migration_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Concurrent migrations of a new file serialize: each version is recorded once."""
    path = tmp_path / "agentdeck.db"
    stores = [SqliteStore(path, clock=clock) for _ in range(3)]
    await asyncio.gather(*(s.migrate() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (
            schema.latest_version(),
        )


async def test_a_version_1_database_upgrades_keeping_its_workflows(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A database written before usage and budgets gains them: its workflows read back with
    no budget and no hold, and usage rows can be summed at once."""
    path = tmp_path / "agentdeck.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        for statement in schema.MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute("INSERT INTO schema_version VALUES (1, 0)")
        raw.execute("INSERT INTO workflows VALUES ('w1', 'old', 'running', 1, 1, 0, NULL, '{}')")
    async with SqliteStore(path, clock=clock) as store:
        await store.migrate()
        workflow = await store.get_workflow("w1")
        assert (workflow.name, workflow.budget, workflow.hold_reason) == ("old", None, None)
        assert await store.usage_totals("workflow") == []


async def test_database_from_a_newer_version_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    """A schema newer than this code knows raises ConfigError naming both versions."""
    path = tmp_path / "agentdeck.db"
    async with SqliteStore(path, clock=clock) as store:
        await store.migrate()
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO schema_version VALUES (42, 0)")
    async with SqliteStore(path, clock=clock) as store:
        with pytest.raises(ConfigError, match=rf"version 42.*version {schema.latest_version()}\b"):
            await store.migrate()


async def test_a_file_that_is_not_a_database_is_a_config_error(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Pointing the store at some other file says so."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the tables you are looking for" * 100)
    async with SqliteStore(path, clock=clock) as store:
        with pytest.raises(ConfigError, match="not a SQLite database"):
            await store.migrate()


async def test_using_a_store_before_migrating_says_so(clock: FakeClock) -> None:
    """Without its schema the store raises ConfigError asking for the migrations."""
    async with SqliteStore(MEMORY, clock=clock) as store:
        with pytest.raises(ConfigError, match="run the migrations"):
            await store.pending_commands()


async def test_a_closed_store_is_unavailable(clock: FakeClock) -> None:
    """Calls after close raise BackendUnavailable; closing twice is fine."""
    store = SqliteStore(MEMORY, clock=clock)
    await store.migrate()
    await store.close()
    await store.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        await store.list_commands()


async def test_a_write_lock_held_too_long_is_backend_unavailable(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another writer keeps the lock past the busy timeout, the write fails retryably."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 20)
    path = tmp_path / "agentdeck.db"
    async with SqliteStore(path, clock=clock) as store:
        await store.migrate()
        raw = sqlite3.connect(path, isolation_level=None)
        try:
            raw.execute("BEGIN IMMEDIATE")
            with pytest.raises(BackendUnavailable, match="locked"):
                await store.add_command(Command("c1", "pause", "wf", clock.now()))
            raw.execute("ROLLBACK")
        finally:
            raw.close()
        await store.add_command(Command("c1", "pause", "wf", clock.now()))


async def test_in_memory_stores_are_private(clock: FakeClock) -> None:
    """Each in-memory store is its own database."""
    async with SqliteStore(MEMORY, clock=clock) as one, SqliteStore(MEMORY, clock=clock) as two:
        await one.migrate()
        await two.migrate()
        await one.add_command(Command("c1", "pause", "wf", clock.now()))
        assert await two.list_commands() == []


ROOT = Path(store_module.__file__).resolve().parents[2]

_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from agentdeck.backends.sqlite.store import SqliteStore
    from agentdeck.core.clock import SystemClock
    from agentdeck.core.models import Command

    async def main(path, n):
        async with SqliteStore(path, clock=SystemClock()) as store:
            await store.migrate()
            for i in range(n):
                await store.add_command(Command(f"child-{i}", "pause", "wf", float(i)))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@pytest.mark.e2e
async def test_two_processes_write_the_same_file(tmp_path: Path, clock: FakeClock) -> None:
    """Another process writing the same file at the same time loses nothing, and neither do we."""
    path = tmp_path / "agentdeck.db"
    n = 200
    async with SqliteStore(path, clock=clock) as store:
        await store.migrate()
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WRITER,
            str(path),
            str(n),
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(n):
            await store.add_command(Command(f"parent-{i}", "pause", "wf", float(i)))
        _, stderr = await child.communicate()
        assert child.returncode == 0, stderr.decode()
        ids = {c.id for c in await store.list_commands(limit=10 * n)}
    assert ids == {f"{who}-{i}" for who in ("parent", "child") for i in range(n)}
