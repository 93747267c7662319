"""PostgreSQL's schema version 5: ``task_events_workflow`` dropped from a version 4 database
that holds events; the events stay, and ``events_since`` by workflow still answers, in seq
order, from the primary key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from agentdeck.backends.postgres import PostgresStore, schema, testing
from agentdeck.core.clock import FakeClock
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


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A node of ``EXPLAIN (FORMAT JSON)`` and all the nodes under it."""
    return [node, *(n for child in node.get("Plans", []) for n in plan_nodes(child))]


async def test_a_version_4_database_with_events_loses_the_index_and_keeps_the_events(
    url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only version 5 is applied; every event is kept; events_since by workflow returns that
    workflow's events in order, read by seq through the primary key."""
    async with PostgresStore.from_url(url, clock=clock) as store:
        await store.migrate()
        await submit(store, clock, "w1", {"a": [], "b": ["a"]})
        await submit(store, clock, "w2", {"a": []})
        await store.apply([dispatch("w1/a"), dispatch("w2/a")], clock.now())
        await store.apply([succeed("w1/a"), succeed("w2/a")], clock.now())
        before = await store.events_since(0)
    admin = await asyncpg.connect(url)
    try:
        # Back to version 4, as a database this code's predecessor wrote.
        await admin.execute("CREATE INDEX task_events_workflow ON task_events (workflow_id, seq)")
        await admin.execute("DELETE FROM schema_migrations WHERE version = 5")

        seen: list[tuple[str, Any]] = []
        async with PostgresStore.from_url(url, clock=clock) as store:
            await store.migrate()
            assert await store.events_since(0) == before
            rows = store._rows

            async def recording(op: str, sql: str, params: Any) -> Any:
                seen.append((sql, params))
                return await rows(op, sql, params)

            monkeypatch.setattr(store, "_rows", recording)
            w1 = await store.events_since(0, workflow_id="w1")
        assert w1 == [e for e in before if e.workflow_id == "w1"]
        assert [e.seq for e in w1] == sorted(e.seq for e in w1)

        indexes = {
            name
            for (name,) in await admin.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'task_events'"
            )
        }
        assert indexes == {"task_events_pkey", "task_events_task"}
        versions = await admin.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [v for (v,) in versions] == list(range(1, schema.latest_version() + 1))
        [(sql, params)] = seen
        # A handful of rows make a sequential scan cheapest; forbidding it shows the plan
        # left: the primary key, in seq order, with no sort.
        await admin.execute("SET enable_seqscan = off")
        [(doc,)] = await admin.fetch(f"EXPLAIN (FORMAT JSON) {sql}", *params)
        nodes = plan_nodes(json.loads(doc)[0]["Plan"])
        assert [n.get("Index Name") for n in nodes if "Index Name" in n] == ["task_events_pkey"]
        assert not any("Sort" in n["Node Type"] for n in nodes), nodes
    finally:
        await admin.close()
