"""Queued is not lost: an overdue dispatched attempt whose capability's queue still holds
messages waits, even while an agent of the capability shows a free slot.

Driven round by round with a fake clock; the bus is the memory bus with its queue count set
by the test (as a broker's would be), and the agent a record in the registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.models import AgentRecord, AgentState
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T

NO_JITTER = RetryPolicy(max_attempts=3, initial_delay=1.0, max_delay=10.0, jitter=0.0)

THREE = """
name: three
tasks:
  - {key: a, capability: echo}
  - {key: b, capability: echo}
  - {key: c, capability: echo}
"""


class CountedBus(MemoryBus):
    """The memory bus, except that the queue count is what the test sets: a number, None
    (cannot tell) or an error to raise. Records every question."""

    count: int | Exception | None = 0
    asked: list[str]

    async def queued(self, capability: str) -> int | None:  # type: ignore[override]
        self.asked.append(capability)
        if isinstance(self.count, Exception):
            raise self.count
        return self.count


@dataclass
class Deck:
    store: SqliteStore
    bus: CountedBus
    registry: MemoryRegistry
    scheduler: Scheduler
    clock: FakeClock

    async def settle(self) -> None:
        for _ in range(50):
            for _ in range(5):
                await asyncio.sleep(0)
            if not await self.scheduler.tick() and not self.scheduler._inbox:
                return
        raise AssertionError("scheduler did not settle")

    async def dispatched(self) -> str:
        """Submit three echo tasks with a free agent of echo, and dispatch them; the messages
        are taken off the bus (no agent will ever report them)."""
        now = self.clock.now()
        agent = AgentRecord("agent-1", "echo", ("echo",), 4, AgentState.UP, now, now, in_flight=0)
        await self.registry.register(agent, ttl=3600)
        client = Client(self.store, self.clock, poll=0.001)
        workflow = await client.submit(parse_spec(THREE, fmt="yaml", limits=SpecLimits()))
        await self.settle()
        it = self.bus.consume_tasks(["echo"], prefetch=100)
        delivery = await asyncio.wait_for(anext(it), 2)
        await delivery.ack()
        await it.aclose()  # type: ignore[attr-defined]
        return workflow.id

    async def overdue(self) -> None:
        """Move past every dispatched attempt's deadline, then run rounds."""
        self.clock.advance(self.scheduler.config.max_dispatch_wait + 1)
        await self.settle()


@pytest.fixture
async def deck(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Deck]:
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = CountedBus(clock=clock)
    bus.asked = []
    registry = MemoryRegistry(clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    config = SchedulerConfig(default_retry=NO_JITTER, lost_grace=5.0)
    scheduler = Scheduler(store, bus, registry, clock, node="node-1", config=config)
    yield Deck(store, bus, registry, scheduler, clock)
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def statuses(deck: Deck, workflow_id: str) -> set[tuple[T, int]]:
    return {(t.status, t.attempt) for t in await deck.store.list_tasks(workflow_id=workflow_id)}


async def test_an_overdue_attempt_waits_while_its_queue_holds_messages(deck: Deck) -> None:
    """An agent of the capability has a free slot, but 7 messages wait in its queue: each
    overdue attempt is pushed out (a `waiting` line naming the queue), none is spent."""
    workflow = await deck.dispatched()
    deck.bus.count = 7
    await deck.overdue()
    assert await statuses(deck, workflow) == {(T.DISPATCHED, 1)}
    for key in "abc":
        events = await deck.store.task_events(f"{workflow}/{key}")
        [waiting] = [e for e in events if e.kind == "waiting"]
        assert waiting.detail["reason"] == "7 message(s) wait in the queue of 'echo'"
        assert waiting.detail["wait"] == 2 * deck.scheduler.config.dispatch_timeout


async def test_once_the_queue_is_empty_with_a_free_slot_the_attempt_is_lost(deck: Deck) -> None:
    """The queue drained and an agent still has a free slot, yet nobody reported them: the
    messages are gone, and the attempts fail as lost (retried)."""
    workflow = await deck.dispatched()
    deck.bus.count = 3
    await deck.overdue()
    assert await statuses(deck, workflow) == {(T.DISPATCHED, 1)}
    deck.bus.count = 0
    await deck.overdue()
    tasks = await deck.store.list_tasks(workflow_id=workflow)
    assert {(t.status, t.attempt) for t in tasks} == {(T.RETRYING, 1)}
    for task in tasks:
        assert task.error is not None and task.error.kind == "lost"
        assert "its queue was empty" in task.error.message


async def test_the_queue_is_asked_once_per_capability_a_round(deck: Deck) -> None:
    """Three overdue attempts of one capability in one round: one question to the bus."""
    await deck.dispatched()
    deck.bus.count = 5
    deck.bus.asked.clear()
    deck.clock.advance(deck.scheduler.config.dispatch_timeout + 1)
    await deck.scheduler.tick()
    assert deck.bus.asked == ["echo"]


@pytest.mark.parametrize("answer", [None, BackendUnavailable("broker gone")], ids=["none", "error"])
async def test_a_bus_that_cannot_tell_leaves_the_free_slot_to_decide(
    deck: Deck, answer: Exception | None
) -> None:
    """None, or an error while asking: as before the queue count existed, a free slot alone
    makes an overdue attempt lost. An error is logged once, not every round."""
    workflow = await deck.dispatched()
    deck.bus.count = answer
    with capture_logs() as logs:
        await deck.overdue()  # lost: retrying
        await deck.overdue()  # the retries are dispatched (taken by nobody)...
        await deck.overdue()  # ...and lost again
    assert await statuses(deck, workflow) == {(T.RETRYING, 2)}
    warnings = [e for e in logs if e["event"] == "queue_length_unknown"]
    assert len(warnings) == (0 if answer is None else 1)
    if warnings:
        assert "broker gone" in warnings[0]["error"]


async def test_no_free_slot_waits_without_asking_the_queue(deck: Deck) -> None:
    """Every agent busy: the attempt waits as before, and the bus is not asked at all."""
    workflow = await deck.dispatched()
    await deck.registry.heartbeat("agent-1", 3600, in_flight=4, state=AgentState.UP)
    deck.bus.asked.clear()
    await deck.overdue()
    assert await statuses(deck, workflow) == {(T.DISPATCHED, 1)}
    assert deck.bus.asked == []
