"""What a waiting task needs comes first in a round (issue 16, a lone task's p99): the
dispatch before the time-driven work of a polling round (commands polled, retries due,
deadlines, lost agents, the repair sweep), which the next round catches up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
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
