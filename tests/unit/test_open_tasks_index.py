"""The open tasks by workflow (PostgreSQL's schema 4; SQLite's index of version 1): what
"has this workflow finished?" reads, on both stores.

The scheduler asks :meth:`Store.with_open_tasks` after every round that finished tasks; the
query must be served by an index search of the open tasks (PostgreSQL: the partial index
``tasks_open``; SQLite: ``tasks_workflow`` by workflow and status), so its cost does not
grow with the workflow's finished tasks. A partial index serves only a query whose condition
matches its own, hence the test that the texts agree.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentdeck.backends.postgres import schema as pg_schema
from agentdeck.backends.sql.reads import OPEN_STATUSES_SQL
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.clock import FakeClock
from agentdeck.core.states import TASK_TERMINAL, TaskStatus
from tests.contract.test_store import dispatch, submit, succeed


def open_index_predicate(migrations: tuple[tuple[str, ...], ...]) -> str:
    """The ``IN (...)`` list of the migration that creates ``tasks_open``."""
    [statement] = [s for m in migrations for s in m if "tasks_open" in s]
    found = re.search(r"status IN (\(.*?\))", statement)
    assert found, statement
    return found.group(1)


def test_open_statuses_are_the_statuses_not_final() -> None:
    """The list names every status a task can leave, and no final one."""
    named = set(re.findall(r"'(\w+)'", OPEN_STATUSES_SQL))
    assert named == {s.value for s in TaskStatus if s not in TASK_TERMINAL}


def test_postgres_indexes_the_list_the_query_asks_for() -> None:
    """PostgreSQL's ``tasks_open`` is on the very text the query uses (else no index use)."""
    assert open_index_predicate(pg_schema.MIGRATIONS) == OPEN_STATUSES_SQL


async def test_sqlite_answers_from_an_index_of_workflow_and_status(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's ``tasks_workflow`` (workflow_id, status), there since version 1, serves the
    query as an index search per open status: no index of its own is needed."""
    path = tmp_path / "agentdeck.db"
    seen: list[tuple[str, Any]] = []
    async with SqliteStore(path, clock=clock) as store:
        await store.migrate()
        await submit(store, clock, "running", {"a": [], "b": ["a"]})
        await submit(store, clock, "done", {"a": []})
        await store.apply([dispatch("running/a"), dispatch("done/a")], clock.now())
        await store.apply([succeed("running/a"), succeed("done/a")], clock.now())
        rows = store._rows

        async def recording(op: str, sql: str, params: Any) -> Any:
            seen.append((sql, params))
            return await rows(op, sql, params)

        monkeypatch.setattr(store, "_rows", recording)
        assert await store.with_open_tasks(["running", "done"]) == {"running"}
    [(sql, params)] = seen
    with sqlite3.connect(path) as raw:
        plan = " ".join(str(r[-1]) for r in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "SEARCH t USING COVERING INDEX tasks_workflow (workflow_id=? AND status=?)" in plan
