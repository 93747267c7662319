"""PostgresStore's query plans follow the tables' current size (see docs/performance.md)."""

from __future__ import annotations

import pytest

from agentdeck.backends.postgres import PostgresStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(fresh_postgres_store: PostgresStore) -> PostgresStore:
    return fresh_postgres_store


async def test_the_pool_plans_every_statement_for_its_arguments(store: PostgresStore) -> None:
    """Pooled connections use custom plans, so a generic plan made while a table was tiny (a
    sequential scan) is never kept once the table has grown."""
    pool = store._pool
    assert pool is not None
    assert await pool.fetchval("SHOW plan_cache_mode") == "force_custom_plan"


# A 100 x 200 layered workflow as the write path meets it straight after its submit: 20,000
# tasks and ~40,000 dependencies, never analyzed (this server runs without autovacuum; any
# server is so until autovacuum comes round).
_TASKS_SQL = """
INSERT INTO tasks (id, workflow_id, key, capability, status, input, needs, pending,
    created_at, updated_at, timeout, attempt, first_attempt)
SELECT 'w/t' || i, 'w', 't' || i, 'echo', 'blocked', '{}', '{}', 2, 0, 0, 60, 0, 0
FROM generate_series(0, 19999) AS i
"""
_DEPS_SQL = """
INSERT INTO task_deps (needs_id, task_id)
SELECT 'w/t' || i, 'w/t' || (i + 200 + k)
FROM generate_series(0, 19799) AS i, (VALUES (0), (1)) AS v(k)
WHERE i + 200 + k < 20000
"""


def _scans(plan: object) -> set[tuple[str, str]]:
    """Every (node type, relation) of an ``EXPLAIN (FORMAT JSON)`` plan, nested plans too."""
    found: set[tuple[str, str]] = set()
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.add((str(plan["Node Type"]), str(plan["Relation Name"])))
        for value in plan.values():
            found |= _scans(value)
    elif isinstance(plan, list):
        for item in plan:
            found |= _scans(item)
    return found


async def test_a_write_finds_its_tasks_and_dependents_by_primary_key_without_statistics(
    store: PostgresStore,
) -> None:
    """The lock-and-dependents read and both forms of the write (column arrays; jsonb rows
    for big batches) reach ``tasks`` and ``task_deps`` through their primary keys even when the
    tables' statistics are older than their rows, never by scanning either table (a scan of
    all of ``task_deps`` in every write was most of a layer's time in the 100 x 100 benchmark;
    docs/performance.md, "Big workflows, fourth pass")."""
    from agentdeck.backends.postgres import transitions
    from agentdeck.backends.sql.decide import WRITE_COLUMNS

    pool = store._pool
    assert pool is not None
    small, big = 100, transitions.JSON_ROWS
    async with pool.acquire() as conn:
        await conn.execute(_TASKS_SQL)
        await conn.execute(_DEPS_SQL)
        ids = [f"w/t{i}" for i in range(big)]

        async def scans(sql: str, *args: object) -> set[tuple[str, str]]:
            return _scans(await (await conn.prepare(sql)).explain(*args))

        lock = await scans(transitions._LOCK_SQL, ids[:small], ids[:small])
        row: dict[str, object] = dict.fromkeys(WRITE_COLUMNS)
        row.update(status="ready", attempt=1, first_attempt=1, pending=0)
        row.update(set_output=False, set_error=False)
        rows = [[i if c == "id" else row[c] for c in WRITE_COLUMNS] for i in ids]
        arrays = [list(column) for column in zip(*rows[:small], strict=True)]
        write = await scans(transitions._UPDATE_SQL, 0.0, *arrays, "scheduler", 7)
        big_write = await scans(
            transitions._UPDATE_JSON_SQL, 0.0, transitions._json_rows(rows), "scheduler", 7
        )
    for name, plan in (("lock", lock), ("write", write), ("big write", big_write)):
        assert ("Seq Scan", "tasks") not in plan, (name, plan)
        assert ("Seq Scan", "task_deps") not in plan, (name, plan)
    assert any(table == "task_deps" for _, table in lock), lock
