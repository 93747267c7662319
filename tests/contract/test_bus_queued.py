"""The Bus contract for :meth:`Bus.queued`, run against every bus backend (the fixtures and
helpers of ``test_bus``): the messages waiting in a capability's task queue, not those a
consumer holds unacked."""

from __future__ import annotations

import asyncio

import pytest

from agentdeck.core.ports import Bus
from tests.contract.test_bus import LIMIT, bus, cap, publish, reading  # noqa: F401

pytestmark = pytest.mark.contract


async def settles_at(bus: Bus, cap: str, expected: int) -> int:  # noqa: F811
    """``bus.queued(cap)`` once it reads ``expected``, or its last answer after LIMIT seconds
    (a broker applies a requeue or an ack a moment after the client sent it)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + LIMIT
    while (count := await bus.queued(cap)) != expected and loop.time() < end:
        await asyncio.sleep(0.01)
    assert count is not None
    return count


async def test_a_queue_nobody_declared_holds_nothing(bus: Bus, cap: str) -> None:  # noqa: F811
    """A capability no message was ever published to: 0, and the bus still answers after."""
    assert await bus.queued(f"{cap}-never") == 0
    await publish(bus, cap, 1)
    assert await bus.queued(cap) == 1


async def test_queued_counts_waiting_messages_not_held_ones(bus: Bus, cap: str) -> None:  # noqa: F811
    """Published messages count until a consumer takes them; one held unacked does not count,
    one given back (its consumer left) counts again, one acked never again; other
    capabilities' do not count."""
    await publish(bus, cap, 1, 2, 3)
    await publish(bus, f"{cap}-other", 1)
    assert await bus.queued(cap) == 3
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        await consumer.take()  # held, never settled
        assert await settles_at(bus, cap, 2) == 2
    assert await settles_at(bus, cap, 3) == 3
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        for _ in range(3):
            await (await consumer.take()).ack()
        assert await settles_at(bus, cap, 0) == 0
    assert await bus.queued(f"{cap}-other") == 1
