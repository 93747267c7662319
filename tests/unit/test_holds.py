"""Paused capabilities: a shared set in the Registry, cached briefly, safe through an outage."""

from __future__ import annotations

import pytest

from agentdeck.backends.memory import MemoryRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import AgentdeckError, BackendUnavailable
from agentdeck.core.holds import CapabilityHolds, is_hold_record
from agentdeck.core.ports import BreakerRecord


class FlakyRegistry(MemoryRegistry):
    """A memory registry whose breaker listing can be made to fail."""

    down = False

    async def breakers(self) -> list[BreakerRecord]:
        """Every breaker, unless the registry is down."""
        if self.down:
            raise BackendUnavailable("registry down")
        return await super().breakers()


@pytest.fixture
async def registry(clock: FakeClock) -> FlakyRegistry:
    """A started registry on the fake clock."""
    r = FlakyRegistry(clock=clock)
    await r.start()
    return r


async def test_pause_and_resume_are_seen_by_every_reader(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    """One node pauses, another sees it after its cache expires; resuming clears it."""
    writer, reader = CapabilityHolds(registry, clock), CapabilityHolds(registry, clock)
    assert await reader.paused() == set()
    assert await writer.set("echo", paused=True, actor="ops") is True
    assert await writer.paused() == {"echo"}  # the writer's own cache is cleared at once
    assert await reader.paused() == set()  # still cached
    clock.advance(1)
    assert await reader.paused() == {"echo"}
    assert await writer.set("echo", paused=True) is False  # already paused
    assert await writer.set("echo", paused=False) is True
    clock.advance(1)
    assert await reader.paused() == set()
    assert all(is_hold_record(r.name) for r in await registry.breakers())


async def test_an_unreadable_registry_keeps_the_last_known_set(
    registry: FlakyRegistry, clock: FakeClock
) -> None:
    """A Registry outage neither stops dispatching nor forgets a pause."""
    holds = CapabilityHolds(registry, clock)
    await holds.set("chaos", paused=True)
    assert await holds.paused() == {"chaos"}
    registry.down = True
    clock.advance(5)
    assert await holds.paused() == {"chaos"}


async def test_a_bad_capability_name_is_refused(registry: MemoryRegistry, clock: FakeClock) -> None:
    """A name with a space or a colon is not a capability; the error names it."""
    with pytest.raises(AgentdeckError, match="'a:b' is not a capability name"):
        await CapabilityHolds(registry, clock).set("a:b", paused=True)
