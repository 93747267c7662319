"""PostgreSQL writes the scheduler's dispatch in one statement (``transitions.dispatch``):
the same tasks, events and answer as the general write (lock, decide, write), the
compare-and-set and the fence kept (issue 16: a layer of a big workflow, a chain step)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from agentdeck.backends.postgres import PostgresStore, transitions
from agentdeck.backends.sql.decide import plan
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import LeaseLost
from agentdeck.core.models import Change, ErrorInfo, Task, TaskEvent
from agentdeck.core.scheduler.dispatch import Dispatch
from agentdeck.core.states import TaskStatus as T
from tests.contract.test_store import build, dispatch, submit

pytestmark = pytest.mark.integration


@pytest.fixture
def store(fresh_postgres_store: PostgresStore) -> PostgresStore:
    return fresh_postgres_store


def scheduler_dispatch(tasks: Sequence[Task], now: float) -> list[Change]:
    """The changes the scheduler's dispatch writes for ``tasks`` (its own method)."""
    owner = SimpleNamespace(config=SimpleNamespace(dispatch_timeout=30.0), node="node-1")
    return Dispatch._dispatch_changes(owner, tasks, now)  # type: ignore[arg-type]


async def retried(store: PostgresStore, clock: FakeClock, tid: str) -> None:
    """Take ``tid`` through a failed attempt on agent ``ag-1``, back to ``ready``."""
    await store.apply([dispatch(tid)], clock.now())
    running = Change(tid, T.RUNNING, frozenset({T.DISPATCHED}), 1, {"agent_id": "ag-1"})
    error = ErrorInfo("error", "boom", retryable=True)
    retrying = Change(tid, T.RETRYING, frozenset({T.RUNNING}), 1, {"error": error})
    await store.apply([running, retrying], clock.now())
    await store.apply([Change(tid, T.READY, frozenset({T.RETRYING}), 1)], clock.now())


def comparable(task: Task) -> dict[str, Any]:
    fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
    return {k: v for k, v in fields.items() if k not in ("id", "workflow_id")}


def event_rows(events: Sequence[TaskEvent]) -> list[tuple[Any, ...]]:
    return [
        (
            e.task_id.partition("/")[2],
            e.kind,
            e.attempt,
            e.from_status,
            e.to_status,
            e.agent_id,
            e.detail,
            e.at,
        )
        for e in events
    ]


async def dispatched_by(
    store: PostgresStore, workflow: str, fence: int | None, path: Callable[[Any], None]
) -> tuple[list[Task], list[list[tuple[Any, ...]]]]:
    """Dispatch ``workflow``'s tasks a, b (retried on ag-1), c (not ready) and d (a stale
    attempt) as the scheduler would, on a clock of its own from 100 s, that write under the
    patches ``path`` makes (undone after it); the answer's tasks and each task's events."""
    clock = FakeClock(100.0)
    await submit(store, clock, workflow, {"a": [], "b": [], "c": ["a"], "d": []})
    await retried(store, clock, f"{workflow}/b")
    clock.advance(1.5)
    tasks = [await store.get_task(f"{workflow}/{k}") for k in ("b", "a", "c", "d")]
    tasks[3] = replace(tasks[3], attempt=5)  # the compare-and-set refuses it
    changes = scheduler_dispatch(tasks, clock.now())
    patches = pytest.MonkeyPatch()
    path(patches)
    try:
        answer = await store.apply(changes, clock.now(), fence=fence)
    finally:
        patches.undo()
    assert answer.released == []
    events = [event_rows(await store.task_events(f"{workflow}/{k}")) for k in "abcd"]
    return answer.tasks, events


async def test_the_schedulers_dispatch_is_one_statement_and_writes_what_apply_writes(
    store: PostgresStore,
) -> None:
    """Written by the general path (lock, decide, write) and by the one statement: the same
    answer (in the changes' order, the refused ones left out), rows and events (the agent a
    retried task had named by its event, as the general path names it)."""

    def general(patches: pytest.MonkeyPatch) -> None:
        patches.setattr(transitions, "dispatches", lambda plans: False)

    async def forbidden(*args: Any) -> Any:
        raise AssertionError("the dispatch went through the lock statement and decide")

    def one_statement(patches: pytest.MonkeyPatch) -> None:
        patches.setattr(transitions, "apply", forbidden)

    slow_tasks, slow_events = await dispatched_by(store, "slow", 7, general)
    fast_tasks, fast_events = await dispatched_by(store, "fast", 7, one_statement)

    assert [t.key for t in fast_tasks] == ["b", "a"]
    assert [comparable(t) for t in fast_tasks] == [comparable(t) for t in slow_tasks]
    assert fast_events == slow_events
    assert fast_events[1][-1][5] == "ag-1"  # b's dispatched event names its last agent
    for key in "abcd":
        fast, slow = await store.get_task(f"fast/{key}"), await store.get_task(f"slow/{key}")
        assert comparable(fast) == comparable(slow)
    assert (await store.get_task("fast/b")).error is None


async def test_a_dispatch_with_a_stale_token_writes_nothing(
    store: PostgresStore, clock: FakeClock
) -> None:
    await submit(store, clock, "wf", {"a": [], "b": []})
    await store.apply([], clock.now(), fence=9)  # a newer leader took the lease
    tasks = [await store.get_task(f"wf/{k}") for k in "ab"]
    changes = scheduler_dispatch(tasks, clock.now())
    assert transitions.dispatches([plan(c) for c in changes])
    with pytest.raises(LeaseLost):
        await store.apply(changes, clock.now(), fence=8)
    assert [(await store.get_task(f"wf/{k}")).status for k in "ab"] == [T.READY, T.READY]
    assert [e.kind for e in await store.task_events("wf/a")] == ["created"]
    # Nothing of it applies (all refused): the fence is still checked.
    late = scheduler_dispatch([replace(tasks[0], attempt=3)], clock.now())
    with pytest.raises(LeaseLost):
        await store.apply(late, clock.now(), fence=8)
    assert (await store.apply(late, clock.now(), fence=9)).tasks == []


def test_only_the_schedulers_dispatch_takes_the_one_statement(clock: FakeClock) -> None:
    _, [task] = build(clock, "wf", {"a": []})
    ours = scheduler_dispatch([task], clock.now())
    assert transitions.dispatches([plan(c) for c in ours])
    assert not transitions.dispatches([])
    assert not transitions.dispatches([plan(dispatch("wf/a"))])  # sets the attempt only
    twice = [plan(c) for c in ours + ours]
    assert not transitions.dispatches(twice)
    with_agent = [replace(ours[0], values={**ours[0].values, "agent_id": "x"})]
    assert not transitions.dispatches([plan(c) for c in with_agent])
    also_dispatched = [replace(ours[0], expect=frozenset({T.READY, T.DISPATCHED}))]
    assert not transitions.dispatches([plan(c) for c in also_dispatched])
