"""A dependent released by a result is dispatched in the write that released it (issue 16):
no round, ready-tasks query or commit of its own, and the same holds as any dispatch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.messages import Report, TaskMessage, decode, decode_batch, encode
from agentdeck.core.models import Change
from agentdeck.core.ports import OutgoingTask
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.scheduler.base import RELEASE_WITH_RESULTS
from agentdeck.core.spec import SpecLimits, WorkflowSpec, parse_spec
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W

CHAIN = """
name: chain
tasks:
  - {key: a, capability: echo}
  - {key: b, capability: echo, needs: [a]}
  - {key: c, capability: other, needs: [a]}
"""


class CountingStore(SqliteStore):
    """A SQLite store that counts its ready-tasks queries, with a StoreWatch that never fires
    (so the scheduler queries only when something may have become ready, as on PostgreSQL)."""

    ready_queries = 0

    async def changes(self) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield "workflows"

    async def ready_tasks(self, **kwargs: Any) -> Any:
        self.ready_queries += 1
        return await super().ready_tasks(**kwargs)


class FlakyBus(MemoryBus):
    """A memory bus whose next ``fail`` task publishes are refused."""

    fail = 0

    async def publish_tasks(self, messages: list[OutgoingTask]) -> None:
        if self.fail:
            self.fail -= 1
            raise BackendUnavailable("the broker is away")
        await super().publish_tasks(messages)


@pytest.fixture
async def parts(
    tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[CountingStore, FlakyBus, Scheduler, set[str]]]:
    store = CountingStore(tmp_path / "agentdeck.db", clock=clock)
    bus = FlakyBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    held: set[str] = set()
    scheduler = Scheduler(store, bus, registry, clock, node="n1", hold=lambda: held)
    yield store, bus, scheduler, held
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def take(bus: MemoryBus, capability: str) -> TaskMessage:
    it = bus.consume_tasks([capability], prefetch=10)
    delivery = await asyncio.wait_for(anext(it), 2)
    await delivery.ack()
    await it.aclose()  # type: ignore[attr-defined]
    return decode(delivery.body, TaskMessage)


async def succeed(bus: MemoryBus, scheduler: Scheduler, msg: TaskMessage, output: Any) -> None:
    """An agent's result for ``msg``, taken in by the scheduler's consumer."""
    report = Report(
        kind="succeeded", task_id=msg.task_id, attempt=msg.attempt, agent_id="ag", at=0.0,
        output=output,
    )  # fmt: skip
    await bus.publish_report(encode(report), {})
    for _ in range(10):
        await asyncio.sleep(0)
    assert scheduler._inbox


async def started(store: CountingStore, clock: FakeClock) -> str:
    wf = await Client(store, clock).submit(parse_spec(CHAIN, fmt="yaml", limits=SpecLimits()))
    return wf.id


async def test_the_result_and_the_dispatch_of_what_it_released_are_one_round(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """B is published with A's output and recorded dispatched by the round that applied A's
    result, without a ready-tasks query; its history reads ready, then dispatched."""
    store, bus, scheduler, _ = parts
    wf = await started(store, clock)
    await scheduler.tick()
    a = await take(bus, "echo")
    await succeed(bus, scheduler, a, {"said": "hi"})
    queries = store.ready_queries
    await scheduler.tick()
    assert store.ready_queries == queries
    b = await take(bus, "echo")
    assert (b.key, b.attempt, b.upstream) == ("b", 1, {"a": {"said": "hi"}})
    c = await take(bus, "other")
    assert c.key == "c"
    assert (await store.get_task(f"{wf}/b")).status == T.DISPATCHED
    kinds = [e.kind for e in await store.task_events(f"{wf}/b")]
    assert kinds == ["created", "ready", "dispatched"]
    assert scheduler.dispatched == 3


async def test_a_held_capability_keeps_its_released_task_ready(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """A released task whose capability is held is not sent; the others are."""
    store, bus, scheduler, held = parts
    wf = await started(store, clock)
    await scheduler.tick()
    a = await take(bus, "echo")
    held.add("other")
    await succeed(bus, scheduler, a, 1)
    await scheduler.tick()
    assert (await store.get_task(f"{wf}/b")).status == T.DISPATCHED
    assert (await store.get_task(f"{wf}/c")).status == T.READY
    held.clear()
    clock.advance(scheduler.config.poll_interval)  # a lifted hold is noticed by the polling
    await scheduler.tick()
    assert (await store.get_task(f"{wf}/c")).status == T.DISPATCHED


async def test_a_paused_workflow_keeps_its_released_tasks_ready(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """A result applied while its workflow is paused releases, but sends nothing."""
    store, bus, scheduler, _ = parts
    wf = await started(store, clock)
    await scheduler.tick()
    a = await take(bus, "echo")
    assert await store.set_workflow_status(wf, {W.RUNNING}, W.PAUSED, clock.now())
    await succeed(bus, scheduler, a, 1)
    await scheduler.tick()
    assert (await store.get_task(f"{wf}/b")).status == T.READY
    assert (await store.get_task(f"{wf}/c")).status == T.READY


async def test_a_refused_publish_leaves_the_released_tasks_ready_for_the_next_round(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """The result is written even when the broker refuses the released tasks' messages; they
    stay ready and go in a later round."""
    store, bus, scheduler, _ = parts
    wf = await started(store, clock)
    await scheduler.tick()
    a = await take(bus, "echo")
    await succeed(bus, scheduler, a, 1)
    bus.fail = 2  # the release's publish, and the same round's dispatch
    await scheduler.tick()
    assert (await store.get_task(f"{wf}/a")).status == T.SUCCEEDED
    assert (await store.get_task(f"{wf}/b")).status == T.READY
    assert not scheduler._inbox  # the report was applied and acked
    await scheduler.tick()
    assert (await store.get_task(f"{wf}/b")).status == T.DISPATCHED
    assert (await take(bus, "echo")).key == "b"


async def test_a_change_that_succeeds_nothing_asks_for_no_then(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """Only a write that may make a task succeeded carries the dispatch of releases."""
    store, _, scheduler, _ = parts
    wf = await started(store, clock)
    calls: list[Any] = []
    apply = store.apply

    async def spy(changes: list[Change], at: float, **kw: Any) -> Any:
        calls.append(kw.get("then"))
        return await apply(changes, at, **kw)

    store.apply = spy  # type: ignore[method-assign]
    await scheduler.tick()
    assert calls and all(then is None for then in calls)
    assert (await store.get_task(f"{wf}/a")).status == T.DISPATCHED


async def test_a_write_of_results_of_many_workflows_leaves_its_releases_to_the_dispatch(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """Results of more than RELEASE_WITH_RESULTS workflows in one write commit alone (their
    reports acked sooner) and what they released is dispatched by the same round's dispatch."""
    store, bus, scheduler, _ = parts
    n = RELEASE_WITH_RESULTS + 1
    spec = {
        "name": "pair",
        "tasks": [{"key": "a", "capability": "echo"}, {"key": "b", "capability": "echo",
                                                       "needs": ["a"]}],
    }  # fmt: skip
    client = Client(store, clock)
    ids = [(await client.submit(WorkflowSpec.model_validate(spec))).id for _ in range(n)]
    await scheduler.tick()
    it = bus.consume_tasks(["echo"], prefetch=100)
    for _ in range(n):
        delivery = await asyncio.wait_for(anext(it), 2)
        await delivery.ack()
        await succeed(bus, scheduler, decode(delivery.body, TaskMessage), 1)
    thens: list[Any] = []
    apply = store.apply

    async def spy(changes: list[Change], at: float, **kw: Any) -> Any:
        thens.append(kw.get("then"))
        return await apply(changes, at, **kw)

    store.apply = spy  # type: ignore[method-assign]
    await scheduler.tick()
    assert thens and all(then is None for then in thens)
    assert all([(await store.get_task(f"{wf}/b")).status == T.DISPATCHED for wf in ids])
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_write_of_many_results_of_one_workflow_releases_with_them(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """Many results of one workflow (a layer of a big one) in one write: what they release is
    dispatched with them, with no ready-tasks query (issue 16, 100 layers x 100 tasks)."""
    store, bus, scheduler, _ = parts
    n = 4 * RELEASE_WITH_RESULTS
    spec = {
        "name": "fan",
        "tasks": [{"key": f"a{i}", "capability": "echo"} for i in range(n)]
        + [{"key": f"b{i}", "capability": "echo", "needs": [f"a{i}"]} for i in range(n)],
    }
    wf = (await Client(store, clock).submit(WorkflowSpec.model_validate(spec))).id
    await scheduler.tick()
    it = bus.consume_tasks(["echo"], prefetch=1000)
    done = 0
    while done < n:  # the first layer travels in batches
        delivery = await asyncio.wait_for(anext(it), 2)
        await delivery.ack()
        for item in decode_batch(delivery.body, TaskMessage):
            assert item.message is not None
            await succeed(bus, scheduler, item.message, 1)
            done += 1
    thens: list[Any] = []
    apply = store.apply

    async def spy(changes: list[Change], at: float, **kw: Any) -> Any:
        thens.append(kw.get("then"))
        return await apply(changes, at, **kw)

    store.apply = spy  # type: ignore[method-assign]
    queries = store.ready_queries
    await scheduler.tick()
    assert thens[0] is not None
    assert store.ready_queries == queries
    assert all([(await store.get_task(f"{wf}/b{i}")).status == T.DISPATCHED for i in range(n)])
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_step_that_released_a_dependent_asks_nothing_about_finishing(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """A result that released (and dispatched) a dependent leaves its workflow open: the round
    does not ask the Store whether it finished; the last results still finish it."""
    store, bus, scheduler, _ = parts
    wf = await started(store, clock)
    asked: list[list[str]] = []
    with_open_tasks = store.with_open_tasks

    async def spy(workflow_ids: Any) -> set[str]:
        asked.append(list(workflow_ids))
        return await with_open_tasks(workflow_ids)

    store.with_open_tasks = spy  # type: ignore[method-assign]
    await scheduler.tick()
    await succeed(bus, scheduler, await take(bus, "echo"), 1)
    await scheduler.tick()
    assert asked == []
    await succeed(bus, scheduler, await take(bus, "echo"), 2)
    await scheduler.tick()
    assert asked == [[wf]]  # c is open, but written before the last follow-up: asked
    assert (await store.get_workflow(wf)).status == W.RUNNING
    await succeed(bus, scheduler, await take(bus, "other"), 3)
    await scheduler.tick()
    assert (await store.get_workflow(wf)).status == W.SUCCEEDED


async def test_a_task_written_open_by_another_leader_is_not_taken_as_open(
    parts: tuple[CountingStore, FlakyBus, Scheduler, set[str]], clock: FakeClock
) -> None:
    """What a leader remembers writing counts only under the fencing token it wrote with."""
    store, _, scheduler, _ = parts
    wf = await started(store, clock)
    await scheduler.tick()
    assert scheduler._known_open() == {wf}
    scheduler._fence = (scheduler._fence or 0) + 1
    assert scheduler._known_open() == set()
