"""The ``dispatched`` write runs while the publish is awaited (issue 16, latency), and a publish
that fails puts back what was recorded: the task is ``ready`` again, with its attempt, at the
end of the round, for a round's dispatch and for a released dependent alike."""

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
from agentdeck.core.messages import Report, TaskMessage, decode, encode
from agentdeck.core.models import Change
from agentdeck.core.ports import OutgoingTask
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T

ONE = "name: one\ntasks:\n  - {key: a, capability: echo}\n"
CHAIN = """
name: chain
tasks:
  - {key: a, capability: echo}
  - {key: b, capability: echo, needs: [a]}
"""


class GatedBus(MemoryBus):
    """A memory bus whose task publishes wait for :attr:`gate` (the broker's confirm), then
    fail ``fail`` times (a broker outage) or raise ``error``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = 0
        self.error: Exception | None = None
        self.waiting = 0

    async def publish_tasks(self, messages: list[OutgoingTask]) -> None:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if self.fail:
            self.fail -= 1
            raise BackendUnavailable("RabbitMQ at 127.0.0.1:5672/ is unreachable")
        await super().publish_tasks(messages)


class WatchingStore(SqliteStore):
    """A SQLite store that notes, for each ``dispatched`` write, how many task publishes were
    waiting for their confirm when it was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus: GatedBus | None = None
        self.publishes_waiting: list[int] = []
        self.noted = asyncio.Event()

    def note(self) -> None:
        assert self.bus is not None
        self.publishes_waiting.append(self.bus.waiting)
        self.noted.set()

    async def apply(self, changes: Any, at: float, **kw: Any) -> Any:
        if any(c.to == T.DISPATCHED for c in changes) and self.bus is not None:
            self.note()
        then = kw.get("then")
        if then is not None:

            async def watched(applied: Any) -> Any:
                more: list[Change] = list(await then(applied))
                if any(c.to == T.DISPATCHED for c in more) and self.bus is not None:
                    for _ in range(3):
                        await asyncio.sleep(0)  # the publish under way reaches the broker
                    self.note()
                return more

            kw["then"] = watched
        return await super().apply(changes, at, **kw)


THREE = """
name: three
tasks:
  - {key: a, capability: echo}
  - {key: b, capability: echo, needs: [a]}
  - {key: c, capability: echo, needs: [b]}
"""


@pytest.fixture
async def parts(
    tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[WatchingStore, GatedBus, Scheduler]]:
    store = WatchingStore(tmp_path / "agentdeck.db", clock=clock)
    bus = GatedBus.from_url("memory://", clock=clock)
    store.bus = bus
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    scheduler = Scheduler(store, bus, registry, clock, node="n1")
    yield store, bus, scheduler
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def submit(store: SqliteStore, clock: FakeClock, text: str) -> str:
    return (await Client(store, clock).submit(parse_spec(text, fmt="yaml", limits=SpecLimits()))).id


async def take(bus: MemoryBus, capability: str = "echo") -> TaskMessage:
    it = bus.consume_tasks([capability], prefetch=10)
    delivery = await asyncio.wait_for(anext(it), 2)
    await delivery.ack()
    await it.aclose()  # type: ignore[attr-defined]
    return decode(delivery.body, TaskMessage)


async def succeed(bus: MemoryBus, scheduler: Scheduler, msg: TaskMessage) -> None:
    report = Report(
        kind="succeeded", task_id=msg.task_id, attempt=msg.attempt, agent_id="ag", at=0.0
    )
    await bus.publish_report(encode(report), {})
    for _ in range(10):
        await asyncio.sleep(0)
    assert scheduler._inbox


async def test_the_dispatched_write_is_made_while_the_publish_waits_for_its_confirm(
    parts: tuple[WatchingStore, GatedBus, Scheduler], clock: FakeClock
) -> None:
    """A round's dispatch and a released dependent's: each ``dispatched`` write is made while
    the task's publish is still unconfirmed (the gate shut), and the round waits for both."""
    store, bus, scheduler = parts
    wf = await submit(store, clock, CHAIN)
    bus.gate.clear()
    tick = asyncio.ensure_future(scheduler.tick())
    await asyncio.wait_for(store.noted.wait(), 5)
    store.noted.clear()
    assert store.publishes_waiting == [1]
    assert not tick.done()  # the round waits for the confirm
    bus.gate.set()
    assert await tick
    a = await take(bus)
    bus.gate.clear()
    await succeed(bus, scheduler, a)
    tick = asyncio.ensure_future(scheduler.tick())
    await asyncio.wait_for(store.noted.wait(), 5)
    assert store.publishes_waiting == [1, 1]
    bus.gate.set()
    await tick
    assert (await store.get_task(f"{wf}/b")).status == T.DISPATCHED
    assert (await take(bus)).key == "b"
    assert scheduler.dispatched == 2


async def test_a_failed_publish_puts_the_recorded_task_back_ready_with_its_attempt(
    parts: tuple[WatchingStore, GatedBus, Scheduler], clock: FakeClock
) -> None:
    """The write went through, the broker refused: by the end of the round the task is ready
    with attempt 0 again (its history says why), not dispatched waiting for its deadline;
    the next round sends attempt 1."""
    store, bus, scheduler = parts
    wf = await submit(store, clock, ONE)
    bus.fail = 1
    await scheduler.tick()
    task = await store.get_task(f"{wf}/a")
    assert (task.status, task.attempt, task.deadline) == (T.READY, 0, None)
    events = await store.task_events(f"{wf}/a")
    assert [e.kind for e in events][-2:] == ["dispatched", "unpublished"]
    assert scheduler.dispatched == 0
    await scheduler.tick()
    task = await store.get_task(f"{wf}/a")
    assert (task.status, task.attempt) == (T.DISPATCHED, 1)
    assert (await take(bus)).attempt == 1


async def test_a_publish_that_raises_puts_back_and_raises(
    parts: tuple[WatchingStore, GatedBus, Scheduler], clock: FakeClock
) -> None:
    """An error the publish does not turn into a refusal still leaves the task ready."""
    store, bus, scheduler = parts
    wf = await submit(store, clock, ONE)
    bus.error = ValueError("a capability that cannot name a queue")
    with pytest.raises(ValueError, match="cannot name a queue"):
        await scheduler.tick()
    task = await store.get_task(f"{wf}/a")
    assert (task.status, task.attempt) == (T.READY, 0)


async def test_a_released_task_whose_publish_fails_is_put_back_and_sent_by_a_later_round(
    parts: tuple[WatchingStore, GatedBus, Scheduler], clock: FakeClock
) -> None:
    """The result is written; its dependent, recorded dispatched while its publish failed, is
    ready again with attempt 0 by the end of the round, counted as never dispatched."""
    store, bus, scheduler = parts
    wf = await submit(store, clock, CHAIN)
    await scheduler.tick()
    a = await take(bus)
    await succeed(bus, scheduler, a)
    bus.fail = 2  # the release's publish, and the same round's dispatch
    await scheduler.tick()
    assert (await store.get_task(f"{wf}/a")).status == T.SUCCEEDED
    b = await store.get_task(f"{wf}/b")
    assert (b.status, b.attempt) == (T.READY, 0)
    assert [e.kind for e in await store.task_events(f"{wf}/b")].count("unpublished") == 2
    assert scheduler.dispatched == 1  # a only
    await scheduler.tick()
    assert (await take(bus)).key == "b"
    assert (await store.get_task(f"{wf}/b")).attempt == 1


async def test_a_chain_step_reads_its_workflow_while_the_result_is_written(
    parts: tuple[WatchingStore, GatedBus, Scheduler], clock: FakeClock
) -> None:
    """The "is the workflow running?" of a dependent released by a task that needs others
    (a chain's later step) is asked while the result's write runs, not after it commits; a
    first step's (no needs: maybe a lone task) is asked after, only when it released one."""
    store, bus, scheduler = parts
    await submit(store, clock, THREE)
    await scheduler.tick()
    order: list[str] = []
    get_workflow, apply = store.get_workflow, store.apply

    async def read(workflow_id: str) -> Any:
        order.append("read")
        return await get_workflow(workflow_id)

    async def write(changes: Any, at: float, **kw: Any) -> Any:
        then = kw.get("then")
        if then is not None:

            async def noted(applied: Any) -> Any:
                order.append("released")
                return await then(applied)

            kw["then"] = noted
        order.append("write")
        return await apply(changes, at, **kw)

    store.get_workflow = read  # type: ignore[method-assign]
    store.apply = write  # type: ignore[method-assign]
    for step in ("a", "b"):
        order.clear()
        msg = await take(bus)
        assert msg.key == step
        await succeed(bus, scheduler, msg)
        await scheduler.tick()
        assert order.count("read") == 1
        if step == "a":  # no needs: read once released, as before
            assert order.index("read") > order.index("released")
        else:  # needs a: read while its result is written
            assert order.index("read") < order.index("released")
    assert (await take(bus)).key == "c"
