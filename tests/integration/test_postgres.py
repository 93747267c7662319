"""PostgresStore beyond the Store contract: migrations under a lock, several stores on one
database, large batches, connection faults, and LISTEN/NOTIFY.

The contract itself (tests/contract/test_store.py) runs on PostgreSQL too. Each test here gets
a fresh database (``backends.postgres.testing.scratch_database``), dropped after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from agentdeck.backends import open_store
from agentdeck.backends.postgres import PostgresStore, schema, testing
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, ConfigError, ConflictError, LeaseLost
from agentdeck.core.models import Change, Command, Task, Workflow, task_id
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W
from tests.conftest import require_service

integration = pytest.mark.integration

#: How long a test waits for something the server does at once (a notification, a
#: reconnection) before it counts as never happening.
PATIENCE = 5.0


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """The URL of a fresh, empty database on the test server."""
    server = urlsplit(testing.server_url())
    require_service("PostgreSQL", server.hostname or "127.0.0.1", server.port or 5432)
    async with testing.scratch_database() as database_url:
        yield database_url


@pytest.fixture
async def store(url: str, clock: FakeClock) -> AsyncIterator[PostgresStore]:
    """A migrated store on the fresh database."""
    async with PostgresStore.from_url(url, clock=clock) as opened:
        await opened.migrate()
        yield opened


@pytest.fixture
def pool_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the store's attempts to open its pool (one list item per attempt)."""
    attempts: list[int] = []
    create_pool = asyncpg.create_pool

    def counting(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        return create_pool(*args, **kwargs)

    monkeypatch.setattr(asyncpg, "create_pool", counting)
    return attempts


@pytest.fixture
async def admin(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the same database, for looking behind the store's back."""
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


# ------------------------------------------------------------------------------- helpers


def workflow(
    clock: FakeClock, workflow_id: str, n: int, *, chain: bool = False
) -> tuple[Workflow, list[Task]]:
    """A running workflow of ``n`` tasks: independent, or with every tenth a new chain head."""
    now = clock.now()
    tasks = []
    for i in range(n):
        needs = (f"t{i - 1:05d}",) if chain and i % 10 else ()
        tasks.append(
            Task(
                id=task_id(workflow_id, f"t{i:05d}"),
                workflow_id=workflow_id,
                key=f"t{i:05d}",
                capability="echo",
                status=T.BLOCKED if needs else T.READY,
                input={"i": i},
                needs=needs,
                pending=len(needs),
                created_at=now,
                updated_at=now,
            )
        )
    return Workflow(workflow_id, workflow_id, W.RUNNING, now, now, n), tasks


def dispatch(tid: str) -> Change:
    """ready -> dispatched as attempt 1."""
    return Change(tid, T.DISPATCHED, frozenset({T.READY}), attempt=0, values={"attempt": 1})


def succeed(tid: str) -> Change:
    """Attempt 1 succeeds."""
    return Change(
        tid, T.SUCCEEDED, frozenset({T.DISPATCHED, T.RUNNING}), attempt=1, values={"output": 1}
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until ``check()`` holds, polling the server; fail after :data:`PATIENCE`."""
    deadline = time.monotonic() + PATIENCE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def listening(admin: asyncpg.Connection) -> bool:
    """True once a watch connection has run its last LISTEN and sits idle."""
    return bool(
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'agentdeck-watch' AND state = 'idle' "
            "AND query LIKE 'LISTEN%agentdeck_commands%'"
        )
    )


async def next_change(changes: AsyncIterator[str]) -> str:
    """The next name a watch yields, failing the test if none comes."""
    return await asyncio.wait_for(anext(changes), PATIENCE)


# ---------------------------------------------------------------------------- URLs (no server)


def test_url_options_and_the_postgres_scheme(clock: FakeClock) -> None:
    """postgres:// is accepted, pool options are read, and the password is never shown."""
    store = PostgresStore.from_url(
        "postgres://bob:s3cret@db.example:6543/deck?min_size=0&max_size=3&sslmode=disable",
        clock=clock,
    )
    assert store.where == "db.example:6543/deck"
    assert "s3cret" not in repr(store)
    assert "s3cret" not in repr(store._target)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://bob:s3cret@h/db?max_size=0", "max_size"),
        ("postgresql://bob:s3cret@h/db?min_size=5&max_size=2", "min_size=5"),
        ("postgresql://bob:s3cret@h/db?command_timeout=soon", "command_timeout"),
        ("postgresql://bob:s3cret@h:port/db", "not a valid"),
        ("mysql://bob:s3cret@h/db", "mysql"),
        ("postgresql://h", "names no database"),
    ],
)
def test_bad_urls_are_config_errors_naming_the_problem(
    clock: FakeClock, url: str, named: str
) -> None:
    """A malformed store URL is one ConfigError naming the bad part, never the password."""
    with pytest.raises(ConfigError, match=named) as caught:
        PostgresStore.from_url(url, clock=clock)
    assert "s3cret" not in str(caught.value)


def test_open_store_picks_postgres_for_both_schemes(clock: FakeClock) -> None:
    """The backend table maps postgresql:// and postgres:// to PostgresStore."""
    for scheme in ("postgresql", "postgres"):
        assert isinstance(open_store(f"{scheme}://u@h/db", clock=clock), PostgresStore)


async def test_an_unreachable_server_fails_after_bounded_retries(
    clock: FakeClock, pool_attempts: list[int]
) -> None:
    """No server at the URL: a few attempts, then one line naming host:port/db, no password."""
    store = PostgresStore.from_url(
        "postgresql://bob:s3cret@127.0.0.1:1/agentdeck", clock=clock, connect_wait=0.001
    )
    with pytest.raises(BackendUnavailable) as caught:
        await store.migrate()
    message = str(caught.value)
    assert len(pool_attempts) == 5
    assert "127.0.0.1:1/agentdeck" in message
    assert "after 5 attempt(s)" in message
    assert "s3cret" not in message
    assert "\n" not in message
    await store.close()


async def test_a_watch_on_an_unreachable_server_fails_naming_the_host(clock: FakeClock) -> None:
    """A watch that cannot connect fails on its first wait, naming host:port/db only."""
    store = PostgresStore.from_url("postgresql://bob:s3cret@127.0.0.1:1/agentdeck", clock=clock)
    async with aclosing(store.changes()) as changes:
        with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1/agentdeck") as caught:
            await anext(changes)
    assert "s3cret" not in str(caught.value)
    await store.close()


# ---------------------------------------------------------------------------- migrations


@integration
async def test_stores_migrating_at_once_apply_each_migration_once(
    url: str, clock: FakeClock, admin: asyncpg.Connection
) -> None:
    """Five nodes starting together on an empty database: the schema is created once."""
    stores = [PostgresStore.from_url(url, clock=clock) for _ in range(5)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        versions = await admin.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [v for (v,) in versions] == list(range(1, schema.latest_version() + 1))
        await stores[0].create_workflow(*workflow(clock, "wf", 1))
        assert (await stores[4].get_workflow("wf")).id == "wf"
    finally:
        await asyncio.gather(*(s.close() for s in stores))


@integration
async def test_a_database_of_a_newer_agentdeck_is_refused(
    store: PostgresStore, url: str, clock: FakeClock, admin: asyncpg.Connection
) -> None:
    """A schema version beyond this code's newest is a ConfigError naming both versions."""
    newer = schema.latest_version() + 1
    await admin.execute("INSERT INTO schema_migrations VALUES ($1, 0)", newer)
    async with PostgresStore.from_url(url, clock=clock) as other:
        with pytest.raises(ConfigError, match=rf"version {newer}.*version {newer - 1}"):
            await other.migrate()


@integration
async def test_a_missing_database_is_refused_at_once(
    url: str, clock: FakeClock, pool_attempts: list[int]
) -> None:
    """A database that does not exist fails at the first attempt (waiting will not create
    it), naming it."""
    missing = testing.url_for("agentdeck_no_such_db")
    async with PostgresStore.from_url(missing, clock=clock, connect_wait=0.001) as store:
        with pytest.raises(BackendUnavailable, match="agentdeck_no_such_db"):
            await store.migrate()
    assert len(pool_attempts) == 1


@integration
async def test_a_store_without_schema_says_to_migrate(url: str, clock: FakeClock) -> None:
    """Using a database nobody migrated is a ConfigError that says what to do."""
    async with PostgresStore.from_url(url, clock=clock) as store:
        with pytest.raises(ConfigError, match="run the migrations"):
            await store.get_task("wf/a")


# --------------------------------------------------------------------------- concurrency


@integration
async def test_two_stores_racing_for_the_same_tasks_move_each_once(
    store: PostgresStore, url: str, clock: FakeClock
) -> None:
    """Two nodes dispatching the same 300 tasks in opposite orders, in batches, at once:
    each task moves exactly once, and no deadlock occurs."""
    wf, tasks = workflow(clock, "wf", 300)
    await store.create_workflow(wf, tasks)
    ids = [t.id for t in tasks]
    async with PostgresStore.from_url(url, clock=clock) as other:

        async def run(s: PostgresStore, order: list[str]) -> int:
            moved = 0
            for i in range(0, len(order), 50):
                applied = await s.apply([dispatch(t) for t in order[i : i + 50]], clock.now())
                moved += len(applied.tasks)
            return moved

        counts = await asyncio.gather(run(store, ids), run(other, ids[::-1]))
    assert sum(counts) == 300
    assert await store.count_tasks(["wf"]) == {"wf": {T.DISPATCHED: 300}}
    events = await store.events_since(0, limit=10_000)
    assert sorted(e.task_id for e in events if e.kind == "dispatched") == sorted(ids)


@integration
async def test_a_deposed_leader_on_another_store_cannot_write(
    store: PostgresStore, url: str, clock: FakeClock
) -> None:
    """Once a newer token wrote through one node, the older token fails on every node."""
    wf, [a, b] = workflow(clock, "wf", 2)
    await store.create_workflow(wf, [a, b])
    async with PostgresStore.from_url(url, clock=clock) as other:
        await store.apply([dispatch(a.id)], clock.now(), fence=1)
        await other.apply([], clock.now(), fence=2)
        with pytest.raises(LeaseLost):
            await store.apply([dispatch(b.id)], clock.now(), fence=1)
    assert (await store.get_task(b.id)).status is T.READY


@integration
async def test_a_deposed_leader_is_refused_even_when_its_batch_changes_nothing(
    store: PostgresStore, url: str, clock: FakeClock
) -> None:
    """The fence is checked when every compare-and-set of a batch fails, too."""
    wf, [a] = workflow(clock, "wf", 1)
    await store.create_workflow(wf, [a])
    await store.apply([], clock.now(), fence=2)
    with pytest.raises(LeaseLost):
        await store.apply([succeed(a.id)], clock.now(), fence=1)  # a is not in flight


@integration
async def test_then_comes_after_the_changes_are_committed(
    store: PostgresStore, clock: FakeClock
) -> None:
    """``then`` runs once the changes are committed: a dependent it publishes never runs on
    an upstream result the Store could still lose. ``then`` raising leaves them written and
    the dependent ready for the next dispatch."""
    wf, tasks = workflow(clock, "wf", 2, chain=True)
    a, b = tasks
    await store.create_workflow(wf, tasks)
    await store.apply([dispatch(a.id)], clock.now(), fence=1)

    async def then(applied: Any) -> list[Change]:
        assert [t.id for t in applied.released] == [b.id]
        assert (await store.get_task(a.id)).status is T.SUCCEEDED  # committed, seen by others
        raise RuntimeError("the broker said no")

    with pytest.raises(RuntimeError):
        await store.apply([succeed(a.id)], clock.now(), fence=1, then=then)
    assert (await store.get_task(a.id)).status is T.SUCCEEDED
    assert (await store.get_task(b.id)).status is T.READY


@integration
async def test_a_poller_sees_every_event_while_two_stores_write(
    store: PostgresStore, url: str, clock: FakeClock
) -> None:
    """Events commit in seq order: polling events_since from the last seq seen, while two
    nodes write concurrently, misses none of them."""
    seen: list[int] = []
    writing = True

    async def poll() -> None:
        last = 0
        while True:
            done = not writing
            for event in await store.events_since(last, limit=10_000):
                seen.append(event.seq)
                last = event.seq
            if done:
                return

    async def write(s: PostgresStore, prefix: str) -> None:
        for i in range(40):
            wf, tasks = workflow(clock, f"{prefix}{i}", 3)
            await s.create_workflow(wf, tasks)
            await s.apply([dispatch(t.id) for t in tasks], clock.now())

    async with PostgresStore.from_url(url, clock=clock) as other:
        poller = asyncio.create_task(poll())
        await asyncio.gather(write(store, "a"), write(other, "b"))
        writing = False
        await poller
    every = [e.seq for e in await store.events_since(0, limit=10_000)]
    assert len(every) == 2 * 40 * 3 * 2
    assert seen == every


# --------------------------------------------------------------------------- performance


@integration
async def test_large_batches(
    store: PostgresStore, clock: FakeClock, record_property: Callable[[str, object], None]
) -> None:
    """A 10,000-task workflow and 1,000-change batches apply whole (timings are reported,
    not asserted: see the test's properties, or run with -s)."""
    timings: dict[str, float] = {}

    async def timed(name: str, work: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        result = await work
        timings[name] = round((time.perf_counter() - started) * 1000, 1)
        return result

    wf, tasks = workflow(clock, "big", 10_000, chain=True)
    await timed("create_workflow_10000_ms", store.create_workflow(wf, tasks))
    heads = [t.id for t in tasks if not t.needs]
    small, small_tasks = workflow(clock, "small", 1_000)
    await store.create_workflow(small, small_tasks)
    ids = [t.id for t in small_tasks]
    dispatches = [dispatch(i) for i in ids]
    dispatched = await timed("apply_1000_dispatch_ms", store.apply(dispatches, 0.0))
    successes = [succeed(i) for i in ids]
    succeeded = await timed("apply_1000_succeed_ms", store.apply(successes, 0.0))
    await store.apply([dispatch(i) for i in heads], 0.0)
    releases = [succeed(i) for i in heads]
    released = await timed("apply_1000_succeed_release_1000_ms", store.apply(releases, 0.0))
    for name, ms in timings.items():
        record_property(name, ms)
    print(f"\nPostgresStore large batches: {timings}")

    assert (len(dispatched.tasks), len(succeeded.tasks)) == (1_000, 1_000)
    assert len(released.released) == 1_000
    assert await store.count_tasks(["big"]) == {
        "big": {T.SUCCEEDED: 1_000, T.READY: 1_000, T.BLOCKED: 8_000}
    }


# -------------------------------------------------------------------------------- faults


@integration
async def test_a_write_cut_off_by_a_lost_connection_is_backend_unavailable(
    store: PostgresStore, url: str, clock: FakeClock, admin: asyncpg.Connection
) -> None:
    """The server kills the session of a write in progress: BackendUnavailable, nothing
    half-written, and the next write on the same store works."""
    wf, [task] = workflow(clock, "wf", 1)
    await store.create_workflow(wf, [task])
    holder = await asyncpg.connect(url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", task.id)
        write = asyncio.create_task(store.apply([dispatch(task.id)], clock.now()))

        async def waiting_on_the_lock() -> bool:
            return bool(
                await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'agentdeck' "
                    "AND datname = current_database() AND wait_event_type = 'Lock'"
                )
            )

        await eventually(waiting_on_the_lock, "the store's write to wait on the row lock")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'agentdeck' AND datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        with pytest.raises(BackendUnavailable, match="failed during apply"):
            await write
        await tx.rollback()
    finally:
        await holder.close()
    assert (await store.get_task(task.id)).status is T.READY
    assert (await store.apply([dispatch(task.id)], clock.now())).tasks


@integration
async def test_reads_survive_the_server_dropping_every_connection(
    url: str, clock: FakeClock, admin: asyncpg.Connection
) -> None:
    """After the server ends every session of a pool (as a restart does), reads still answer:
    broken connections are dropped and replaced, not handed out again."""
    async with PostgresStore.from_url(f"{url}?min_size=4&max_size=4", clock=clock) as store:
        await store.migrate()
        await store.create_workflow(*workflow(clock, "wf", 1))
        for _ in range(2):
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'agentdeck' AND datname = current_database()"
            )
            assert killed == 4
            for _ in range(8):
                assert (await store.get_workflow("wf")).id == "wf"


# ------------------------------------------------------------------------- LISTEN/NOTIFY


@integration
async def test_a_submitted_workflow_and_a_queued_command_wake_a_waiter(
    store: PostgresStore, url: str, clock: FakeClock, admin: asyncpg.Connection
) -> None:
    """Another node's create_workflow and add_command each wake this node's watch."""
    async with (
        aclosing(store.changes()) as changes,
        PostgresStore.from_url(url, clock=clock) as other,
    ):
        first = asyncio.create_task(next_change(changes))
        await eventually(lambda: listening(admin), "the watch to listen")
        await other.create_workflow(*workflow(clock, "wf", 2))
        assert await first == "workflows"
        await other.add_command(Command("c1", "pause", "wf", clock.now()))
        assert await next_change(changes) == "commands"


@integration
async def test_a_write_that_rolls_back_wakes_no_one(
    store: PostgresStore, clock: FakeClock, admin: asyncpg.Connection
) -> None:
    """NOTIFY is part of the transaction: a refused create_workflow sends nothing."""
    await store.create_workflow(*workflow(clock, "wf", 1))
    async with aclosing(store.changes()) as changes:
        first = asyncio.create_task(next_change(changes))
        await eventually(lambda: listening(admin), "the watch to listen")
        with pytest.raises(ConflictError):
            await store.create_workflow(*workflow(clock, "wf", 1))
        await store.add_command(Command("c1", "pause", "wf", clock.now()))
        assert await first == "commands"


@integration
async def test_a_watch_ends_when_the_store_closes(
    store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Closing the store ends a waiting watch, and releases its connection."""
    async with aclosing(store.changes()) as changes:
        waiter = asyncio.create_task(anext(changes))
        await eventually(lambda: listening(admin), "the watch to listen")
        await store.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiter, PATIENCE)
    await eventually(lambda: _not(listening(admin)), "the watch connection to close")


@integration
async def test_a_watch_reconnects_after_losing_its_connection(
    store: PostgresStore, clock: FakeClock, admin: asyncpg.Connection
) -> None:
    """When the server kills the listening session, the watch reconnects, says "look now"
    for each channel (it may have missed something), then wakes on commits again."""
    async with aclosing(store.changes()) as changes:
        waiter = asyncio.create_task(next_change(changes))
        await eventually(lambda: listening(admin), "the watch to listen")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'agentdeck-watch' AND datname = current_database()"
        )
        assert {await waiter, await next_change(changes)} == {"workflows", "commands"}
        await eventually(lambda: listening(admin), "the watch to listen again")
        await store.add_command(Command("c1", "pause", "wf", clock.now()))
        assert await next_change(changes) == "commands"


async def _not(check: Awaitable[bool]) -> bool:
    return not await check
