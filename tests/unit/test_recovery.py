"""Lost agents: running work of an agent whose heartbeats stopped is recovered within seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.messages import Control, Report, TaskMessage, decode, encode
from agentdeck.core.models import AgentRecord, AgentState
from agentdeck.core.recovery import LostAgents
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T

TTL = 10.0
POLICY = RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=0.0)


@dataclass
class Deck:
    """A scheduler with lost-agent recovery, a registry with two agents, and a fake clock."""

    store: SqliteStore
    bus: MemoryBus
    registry: MemoryRegistry
    scheduler: Scheduler
    clock: FakeClock
    controls: AsyncIterator[bytes]

    async def settle(self) -> None:
        for _ in range(50):
            for _ in range(5):
                await asyncio.sleep(0)
            if not await self.scheduler.tick() and not self.scheduler._inbox:
                return
        raise AssertionError("scheduler did not settle")

    async def start_tasks(self, *agents: str) -> list[TaskMessage]:
        """Submit one task per agent and have each agent report it started."""
        keys = ", ".join(f"{{key: t{i}, capability: echo}}" for i in range(len(agents)))
        spec = parse_spec(f"name: w\ntasks: [{keys}]", fmt="yaml", limits=SpecLimits())
        await Client(self.store, self.clock).submit(spec)
        await self.settle()
        it = self.bus.consume_tasks(["echo"], prefetch=100)
        msgs = []
        for agent in agents:
            delivery = await asyncio.wait_for(anext(it), 2)
            await delivery.ack()
            msg = decode(delivery.body, TaskMessage)
            report = Report(
                kind="started",
                task_id=msg.task_id,
                attempt=msg.attempt,
                agent_id=agent,
                at=self.clock.now(),
            )
            await self.bus.publish_report(encode(report), {})
            msgs.append(msg)
        await it.aclose()  # type: ignore[attr-defined]
        await self.settle()
        return msgs

    async def beat(self, agent: str) -> None:
        await self.registry.heartbeat(agent, TTL, in_flight=1, state=AgentState.UP)


def agent(agent_id: str, clock: FakeClock) -> AgentRecord:
    now = clock.now()
    return AgentRecord(agent_id, agent_id, ("echo",), 4, AgentState.UP, now, now)


@pytest.fixture
async def deck(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Deck]:
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    for agent_id in ("alive", "doomed"):
        await registry.register(agent(agent_id, clock), TTL)
    scheduler = Scheduler(
        store,
        bus,
        registry,
        clock,
        node="node-1",
        config=SchedulerConfig(default_retry=POLICY, lost_grace=300),
        lost_agents=LostAgents(registry, clock, grace=4.0, interval=1.0),
    )
    controls = bus.subscribe_control()
    yield Deck(store, bus, registry, scheduler, clock, controls)
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def test_work_of_an_agent_that_stopped_heartbeating_is_retried_promptly(deck: Deck) -> None:
    """Once the agent's record expires and the grace passes, its attempt fails as lost and is
    retried, long before the task's deadline; the live agent's task is untouched."""
    alive, doomed = await deck.start_tasks("alive", "doomed")
    for _ in range(6):  # 12 s: "doomed" expired after 10 s and is first seen missing
        deck.clock.advance(2)
        await deck.beat("alive")
        await deck.settle()
    assert (await deck.store.get_task(doomed.task_id)).status is T.RUNNING
    deck.clock.advance(4)  # missing for the 4 s grace
    await deck.beat("alive")
    await deck.settle()
    lost = await deck.store.get_task(doomed.task_id)
    assert lost.status is T.RETRYING
    assert lost.error is not None and lost.error.kind == "lost"
    assert "doomed stopped sending heartbeats" in lost.error.message
    assert (await deck.store.get_task(alive.task_id)).status is T.RUNNING
    order = decode(await asyncio.wait_for(anext(deck.controls), 1), Control)
    assert (order.action, order.target) == ("cancel", doomed.task_id)
    deck.clock.advance(POLICY.initial_delay)
    await deck.settle()
    retried = await deck.store.get_task(doomed.task_id)
    assert retried.status is T.DISPATCHED and retried.attempt == 2


async def test_agent_back_within_the_grace_keeps_its_work(deck: Deck) -> None:
    """A record that vanished (a wiped registry) and came back within the grace loses nothing."""
    [msg] = await deck.start_tasks("doomed")
    await deck.registry.deregister("doomed")
    deck.clock.advance(1)
    await deck.settle()  # noticed missing now
    deck.clock.advance(2)
    await deck.registry.register(agent("doomed", deck.clock), TTL)
    await deck.settle()
    deck.clock.advance(5)
    await deck.settle()
    assert (await deck.store.get_task(msg.task_id)).status is T.RUNNING


async def test_finder_waits_for_the_grace_after_the_record_expires(
    deck: Deck, clock: FakeClock
) -> None:
    """The finder itself reports nothing until the agent has been missing for the grace."""
    finder = LostAgents(deck.registry, clock, grace=4.0, interval=0)
    [msg] = await deck.start_tasks("doomed")
    assert await finder.orphans(deck.store) == []
    clock.advance(TTL + 1)
    assert await finder.orphans(deck.store) == []  # first seen missing now
    clock.advance(4)
    assert [t.id for t in await finder.orphans(deck.store)] == [msg.task_id]
