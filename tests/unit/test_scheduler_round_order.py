"""What a waiting task needs comes first in a round (issue 16, a lone task's p99): the
dispatch before the time-driven work of a polling round (commands polled, retries due,
deadlines, lost agents, the repair sweep), which the next round catches up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.messages import Report, encode
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T

ONE = "name: one\ntasks:\n  - {key: a, capability: echo}\n"


class OrderedStore(SqliteStore):
    """A SQLite store that notes the scheduler's reads, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    async def ready_tasks(self, **kwargs: Any) -> Any:
        self.calls.append("ready_tasks")
        return await super().ready_tasks(**kwargs)

    async def due_tasks(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("due_tasks")
        return await super().due_tasks(*args, **kwargs)

    async def pending_commands(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("commands")
        return await super().pending_commands(*args, **kwargs)


@pytest.fixture
async def parts(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[OrderedStore, Scheduler]]:
    store = OrderedStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    scheduler = Scheduler(store, bus, registry, clock, node="n1")
    yield store, scheduler
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def test_a_polling_round_dispatches_before_its_time_driven_work(
    parts: tuple[OrderedStore, Scheduler], clock: FakeClock
) -> None:
    """In a round that polls (every round, without a StoreWatch), a ready task is looked up
    and sent before the commands are polled and due work is read."""
    store, scheduler = parts
    await scheduler.tick()  # takes the lease
    clock.advance(scheduler.config.poll_interval)
    wf = (await Client(store, clock).submit(parse_spec(ONE, fmt="yaml", limits=SpecLimits()))).id
    store.calls.clear()
    assert await scheduler.tick()
    assert (await store.get_task(f"{wf}/a")).status == T.DISPATCHED
    calls = store.calls
    assert calls.index("ready_tasks") < calls.index("commands")
    assert calls.index("ready_tasks") < calls.index("due_tasks")


class WatchedStore(OrderedStore):
    """An ordered store with a StoreWatch that never fires (as on PostgreSQL, quiet), whose
    ready-tasks query lets a report arrive in the scheduler's inbox while it runs."""

    scheduler: Scheduler | None = None
    arrivals = 0

    async def changes(self) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield "workflows"

    async def ready_tasks(self, **kwargs: Any) -> Any:
        if self.arrivals and self.scheduler is not None:
            self.arrivals -= 1
            report = Report(kind="succeeded", task_id="x/y", attempt=1, agent_id="ag", at=0.0)
            self.scheduler._inbox.append(Arrived(encode(report)))
        return await super().ready_tasks(**kwargs)


@dataclass
class Arrived:
    """A report delivery (for a task nobody knows: applied as nothing, acked)."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    redelivered: bool = False

    async def ack(self) -> None:
        pass

    async def reject(self, reason: str) -> None:
        pass

    async def requeue(self) -> None:
        pass


async def test_a_report_that_came_in_during_the_round_goes_before_the_time_driven_work(
    tmp_path: Path, clock: FakeClock
) -> None:
    """With a StoreWatch, a round whose dispatch saw a report come in leaves the time-driven
    work to the next round with no report waiting; reports that keep coming delay it by one
    poll_interval at most."""
    store = WatchedStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    scheduler = Scheduler(store, bus, registry, clock, node="n1")
    store.scheduler = scheduler
    try:
        await scheduler.tick()  # takes the lease, polls once
        clock.advance(scheduler.config.poll_interval)
        store.calls.clear()
        store.arrivals = 1
        assert await scheduler.tick()  # polling: the dispatch looks, a report comes in
        assert "ready_tasks" in store.calls and "due_tasks" not in store.calls
        store.calls.clear()
        await scheduler.tick()  # the report applied, none waiting: the work is done now
        assert store.calls.count("due_tasks") == 1
        # Reports that keep coming: deferred while under one poll_interval, then done.
        clock.advance(scheduler.config.poll_interval)
        store.calls.clear()
        store.arrivals = 1
        await scheduler.tick()
        assert "due_tasks" not in store.calls
        clock.advance(scheduler.config.poll_interval)
        store.arrivals = 1
        scheduler._maybe_ready = True  # the dispatch looks again, and a report comes in
        await scheduler.tick()
        assert store.calls.count("due_tasks") == 1
    finally:
        await scheduler.stop()
        await bus.close()
        await registry.close()
        await store.close()


async def test_a_round_that_sent_tasks_leaves_the_time_driven_work_for_after_their_reports(
    tmp_path: Path, clock: FakeClock
) -> None:
    """With a StoreWatch, a polling round that sent a task does the time-driven work after
    that task's report (a lone task's result is not kept waiting behind it); with no report,
    a quarter of poll_interval later."""
    store = WatchedStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    scheduler = Scheduler(store, bus, registry, clock, node="n1")
    client = Client(store, clock)
    try:
        await scheduler.tick()  # takes the lease, polls once
        wf = (await client.submit(parse_spec(ONE, fmt="yaml", limits=SpecLimits()))).id
        clock.advance(scheduler.config.poll_interval)
        store.calls.clear()
        await scheduler.tick()  # polling: the task goes, the work waits for its report
        assert (await store.get_task(f"{wf}/a")).status == T.DISPATCHED
        assert "due_tasks" not in store.calls and "commands" not in store.calls
        report = Report(kind="succeeded", task_id=f"{wf}/a", attempt=1, agent_id="ag", at=0.0)
        scheduler._inbox.append(Arrived(encode(report)))
        store.calls.clear()
        await scheduler.tick()  # the result first, then the work
        assert (await store.get_task(f"{wf}/a")).status == T.SUCCEEDED
        assert store.calls.count("due_tasks") == 1
        # No report comes: the work is done once a quarter of poll_interval has gone by.
        wf = (await client.submit(parse_spec(ONE, fmt="yaml", limits=SpecLimits()))).id
        clock.advance(scheduler.config.poll_interval)
        store.calls.clear()
        await scheduler.tick()
        assert (await store.get_task(f"{wf}/a")).status == T.DISPATCHED
        assert "due_tasks" not in store.calls
        clock.advance(scheduler.config.poll_interval * 0.3)  # a quarter, and a bit more
        await scheduler.tick()
        assert store.calls.count("due_tasks") == 1
    finally:
        await scheduler.stop()
        await bus.close()
        await registry.close()
        await store.close()
