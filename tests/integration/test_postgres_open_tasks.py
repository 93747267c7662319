"""PostgreSQL's schema version 4: the partial index ``tasks_open``, added to a version 3
database that holds work, and used by :meth:`Store.with_open_tasks` (the scheduler's "has
this workflow finished?")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from agentdeck.backends.postgres import PostgresStore, schema, testing
from agentdeck.core.clock import FakeClock
from agentdeck.core.states import TaskStatus as T
from tests.conftest import require_service
from tests.contract.test_store import dispatch, submit, succeed

pytestmark = pytest.mark.integration


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """The URL of a fresh, empty database on the test server."""
    server = urlsplit(testing.server_url())
    require_service("PostgreSQL", server.hostname or "127.0.0.1", server.port or 5432)
    async with testing.scratch_database() as database_url:
        yield database_url


async def test_a_version_3_database_with_work_in_it_gains_the_index(
    url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version 3 database (no ``tasks_open``) holding a running and a finished workflow
    migrates: only version 4 and those after it are applied, the rows are kept, the answer
    is right, and the query can be served by the new index."""
    async with PostgresStore.from_url(url, clock=clock) as store:
        await store.migrate()
        await submit(store, clock, "running", {"a": [], "b": ["a"]})
        await submit(store, clock, "done", {"a": []})
        await store.apply([dispatch("running/a"), dispatch("done/a")], clock.now())
        await store.apply([succeed("running/a"), succeed("done/a")], clock.now())
    admin = await asyncpg.connect(url)
    try:
        # Back to version 3, as a database this code's predecessor wrote (version 5 undone
        # too: it dropped the events' index by workflow).
        await admin.execute("DROP INDEX tasks_open")
        await admin.execute("CREATE INDEX task_events_workflow ON task_events (workflow_id, seq)")
        await admin.execute("DELETE FROM schema_migrations WHERE version >= 4")

        seen: list[tuple[str, Any]] = []
        async with PostgresStore.from_url(url, clock=clock) as store:
            await store.migrate()
            rows = store._rows

            async def recording(op: str, sql: str, params: Any) -> Any:
                seen.append((sql, params))
                return await rows(op, sql, params)

            monkeypatch.setattr(store, "_rows", recording)
            assert await store.with_open_tasks(["running", "done", "nope"]) == {"running"}
            assert (await store.get_task("running/b")).status == T.READY

        versions = await admin.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [v for (v,) in versions] == list(range(1, schema.latest_version() + 1))
        [(sql, params)] = seen
        # Three rows make a sequential scan cheapest; forbidding it shows the index fits.
        await admin.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in await admin.fetch(f"EXPLAIN {sql}", *params))
        assert "tasks_open" in plan, plan
    finally:
        await admin.close()


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A node of ``EXPLAIN (FORMAT JSON)`` and all the nodes under it."""
    return [node, *(n for child in node.get("Plans", []) for n in plan_nodes(child))]


async def test_ready_tasks_reads_only_ready_rows_before_any_analyze(
    url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Straight after a big submit the planner has no statistics (a server with autovacuum
    off, or any server for a while): whatever plan it picks for the ready-tasks query, no
    step of it reads a blocked or finished task, so a round costs the ready tasks it finds,
    not the workflow's size."""
    graph = {f"r{i}": [] for i in range(100)} | {f"b{i}": ["r0"] for i in range(3_000)}
    async with PostgresStore.from_url(url, clock=clock) as store:
        await store.migrate()
        await submit(store, clock, "big", graph)
        await submit(store, clock, "old", {f"d{i}": [] for i in range(200)})
        await store.apply([dispatch(f"old/d{i}") for i in range(200)], clock.now())
        await store.apply([succeed(f"old/d{i}") for i in range(200)], clock.now())
        seen: list[tuple[str, Any]] = []
        tasks = store._tasks

        async def recording(op: str, sql: str, params: Any) -> Any:
            seen.append((sql, params))
            return await tasks(op, sql, params)

        monkeypatch.setattr(store, "_tasks", recording)
        assert len(await store.ready_tasks(limit=1000)) == 100
    [(sql, params)] = seen
    admin = await asyncpg.connect(url)
    try:
        await admin.execute("SET plan_cache_mode = force_custom_plan")  # as the store's pool
        [(doc,)] = await admin.fetch(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *params)
    finally:
        await admin.close()
    nodes = plan_nodes(json.loads(doc)[0]["Plan"])
    read = [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"), n["Actual Rows"])
        for n in nodes
    ]
    # A bitmap index scan also counts index entries of rows updated since (no vacuum yet);
    # the heap visits after it drop those unread, so only the other steps count.
    assert all(n["Actual Rows"] <= 100 for n in nodes if n["Node Type"] != "Bitmap Index Scan"), (
        read
    )
    assert not any(n.get("Rows Removed by Filter") for n in nodes), read
