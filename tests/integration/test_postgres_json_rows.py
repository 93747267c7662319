"""A big batch's write (``JSON_ROWS`` tasks or more) travels as two jsonb parameters, a small
one as column arrays (``backends/postgres/transitions.py``; docs/performance.md, "Saturated
throughput, fourth pass")."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from agentdeck.backends.postgres import PostgresStore, transitions
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import LeaseLost
from agentdeck.core.models import Change
from agentdeck.core.states import TaskStatus as T
from tests.contract.test_store import dispatch, submit

pytestmark = pytest.mark.integration


@pytest.fixture
def store(fresh_postgres_store: PostgresStore) -> PostgresStore:
    return fresh_postgres_store


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every ``fetch`` that writes tasks, in order."""
    seen: list[str] = []
    original = asyncpg.connection.Connection.fetch

    async def fetch(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
        if query.lstrip().startswith("WITH f AS"):
            seen.append(query)
        return await original(self, query, *args, **kw)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", fetch)
    return seen


@pytest.mark.parametrize(
    ("size", "jsonb"),
    [(1, False), (transitions.JSON_ROWS - 1, False), (transitions.JSON_ROWS, True), (450, True)],
)
async def test_a_batch_of_json_rows_tasks_or_more_sends_them_as_jsonb(
    store: PostgresStore, clock: FakeClock, writes: list[str], size: int, jsonb: bool
) -> None:
    keys = [f"t{i:03}" for i in range(size)]
    await submit(store, clock, "wf", {k: [] for k in keys})
    ids = [f"wf/{k}" for k in keys]
    applied = await store.apply([dispatch(t) for t in ids], clock.now(), fence=7)
    assert sorted(t.id for t in applied.tasks) == ids
    running = [
        Change(t, T.RUNNING, frozenset({T.DISPATCHED}), attempt=1, values={"agent_id": "a"})
        for t in ids
    ]
    await store.apply(running, clock.now(), fence=7)
    assert len(writes) == 2
    assert all(("jsonb_array_elements" in sql) is jsonb for sql in writes)
    assert all(("unnest" in sql) is not jsonb for sql in writes)
    tasks = [await store.get_task(t) for t in ids]
    assert {(t.status, t.attempt, t.agent_id) for t in tasks} == {(T.RUNNING, 1, "a")}
    assert len(await store.events_since(0, limit=10 * size)) == 3 * size


async def test_a_big_batch_with_an_older_token_writes_nothing(
    store: PostgresStore, clock: FakeClock, writes: list[str]
) -> None:
    """The fence is checked in the jsonb statement too: an older token raises LeaseLost and
    the batch is rolled back."""
    keys = [f"t{i:03}" for i in range(transitions.JSON_ROWS + 1)]
    await submit(store, clock, "wf", {k: [] for k in keys})
    ids = [f"wf/{k}" for k in keys]
    await store.apply([dispatch(ids[0])], clock.now(), fence=9)
    with pytest.raises(LeaseLost):
        await store.apply([dispatch(t) for t in ids[1:]], clock.now(), fence=8)
    assert writes and "jsonb_array_elements" in writes[-1]
    assert {(await store.get_task(t)).status for t in ids[1:]} == {T.READY}
