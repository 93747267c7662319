"""How the scheduler meets a durable world: publish before recording, reports it must not
apply, and wake-ups from a Store that can tell it about new work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.messages import Report, TaskMessage, decode, encode
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T

ONE = "name: one\ntasks:\n  - {key: a, capability: echo}\n"


@dataclass
class RecordedDelivery:
    """A report delivery that remembers how it was settled."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    redelivered: bool = False
    settled: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.settled.append("ack")

    async def reject(self, reason: str) -> None:
        self.settled.append(f"reject: {reason}")

    async def requeue(self) -> None:
        self.settled.append("requeue")


class FlakyBus(MemoryBus):
    """A memory bus whose next ``fail`` task publishes raise, as a broker outage would."""

    fail = 0

    async def publish_tasks(self, messages: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise BackendUnavailable("RabbitMQ at 127.0.0.1:5672/ is unreachable")
        await super().publish_tasks(messages)


class WatchedStore(SqliteStore):
    """A SQLite store that also offers :class:`core.ports.StoreWatch`, fed by the test."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notes: asyncio.Queue[str] = asyncio.Queue()

    async def changes(self) -> AsyncIterator[str]:
        while True:
            yield await self.notes.get()


@dataclass
class Rig:
    store: WatchedStore
    bus: FlakyBus
    scheduler: Scheduler
    client: Client
    clock: FakeClock

    async def submit(self, text: str = ONE) -> str:
        return (await self.client.submit(parse_spec(text, fmt="yaml", limits=SpecLimits()))).id

    async def queued(self, capability: str = "echo") -> list[TaskMessage]:
        """Every task message waiting for ``capability`` (taken off the bus)."""
        out: list[TaskMessage] = []
        it = self.bus.consume_tasks([capability], prefetch=1000)
        while True:
            try:
                delivery = await asyncio.wait_for(anext(it), 0.05)
            except TimeoutError:
                break
            await delivery.ack()
            out.append(decode(delivery.body, TaskMessage))
        await it.aclose()  # type: ignore[attr-defined]
        return out


@pytest.fixture
async def rig(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Rig]:
    store = WatchedStore(tmp_path / "agentdeck.db", clock=clock)
    bus = FlakyBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    scheduler = Scheduler(store, bus, registry, clock, node="n1", config=SchedulerConfig())
    yield Rig(store, bus, scheduler, Client(store, clock, poll=0.001), clock)
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def test_a_failed_publish_leaves_the_task_ready_and_the_next_round_sends_attempt_one(
    rig: Rig,
) -> None:
    """Publish comes before the Store says dispatched: a broker outage leaves the task ready."""
    wf = await rig.submit()
    rig.bus.fail = 1
    await rig.scheduler.tick()
    assert (await rig.store.get_task(f"{wf}/a")).status == T.READY
    assert await rig.queued() == []
    await rig.scheduler.tick()
    task = await rig.store.get_task(f"{wf}/a")
    assert (task.status, task.attempt) == (T.DISPATCHED, 1)
    assert [m.attempt for m in await rig.queued()] == [1]


async def test_reports_for_an_unknown_task_or_a_finished_attempt_are_acked_and_logged_only(
    rig: Rig,
) -> None:
    """A report that matches no current attempt is acked and logged, and changes nothing."""
    wf = await rig.submit()
    await rig.scheduler.tick()
    (msg,) = await rig.queued()

    def report(
        kind: Literal["started", "succeeded", "failed"], task_id: str = msg.task_id, **extra: Any
    ) -> RecordedDelivery:
        body = Report(kind=kind, task_id=task_id, attempt=1, agent_id="ag", at=0.0, **extra)
        return RecordedDelivery(encode(body))

    done = report("succeeded", output={"n": 1})
    rig.scheduler._inbox.append(done)
    await rig.scheduler.tick()
    assert done.settled == ["ack"]
    events_before = await rig.store.task_events(msg.task_id)

    late = [
        report("succeeded", output={"n": 2}),
        report("failed", error={"kind": "error", "message": "late"}),
        report("started"),
        report("succeeded", task_id="nope/a", output={"n": 3}),
        report("failed", task_id="nope/b", error={"kind": "error", "message": "who?"}),
    ]
    rig.scheduler._inbox.extend(late)
    with capture_logs() as logs:
        await rig.scheduler.tick()
    assert all(d.settled == ["ack"] for d in late)
    task = await rig.store.get_task(msg.task_id)
    assert (task.status, task.output) == (T.SUCCEEDED, {"n": 1})
    assert await rig.store.task_events(msg.task_id) == events_before
    ignored = [e for e in logs if e["event"] == "reports_ignored"]
    # Counted by task: the finished one and the two unknown ones.
    assert ignored and ignored[0]["count"] == 3
    assert (await rig.store.get_workflow(wf)).status.value == "succeeded"


async def test_a_store_notification_wakes_the_idle_scheduler_without_waiting_for_a_poll(
    rig: Rig,
) -> None:
    """With a StoreWatch, work from another process is dispatched on the notification."""
    runner = asyncio.create_task(rig.scheduler.run())

    async def idle() -> None:
        """Until the scheduler waits on the (fake) clock: its round is over, it idles."""
        async with asyncio.timeout(2):
            while not any(not f.done() for _, f in rig.clock._sleepers):
                await asyncio.sleep(0.001)  # the SQLite store works in a thread: real time

    try:
        await idle()
        assert rig.scheduler.is_leader
        rounds = rig.scheduler.rounds
        # Submitted by "another process": no in-process wake-up.
        wf = await rig.submit()
        await asyncio.sleep(0.05)
        assert rig.scheduler.rounds == rounds
        assert (await rig.store.get_task(f"{wf}/a")).status == T.READY
        rig.store.notes.put_nowait("workflows")
        async with asyncio.timeout(2):
            while (await rig.store.get_task(f"{wf}/a")).status != T.DISPATCHED:
                await asyncio.sleep(0.001)
        assert [m.task_id for m in await rig.queued()] == [f"{wf}/a"]
    finally:
        await rig.scheduler.stop()
        async with asyncio.timeout(2):
            await runner  # stop() ends run()
