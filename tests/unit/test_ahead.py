"""Caches refreshed ahead (core/ahead.py): the scheduler's lease, the holds and the breakers
start their next read three quarters through their period, between rounds, so a call at the
end of the period finds the cache fresh instead of waiting for the Registry; what each
promises does not loosen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.ahead import Ahead
from agentdeck.core.breaker import BreakerPolicy
from agentdeck.core.breakers import Breakers
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, LeaseLost
from agentdeck.core.holds import CapabilityHolds
from agentdeck.core.models import ErrorInfo, Task
from agentdeck.core.ports import BreakerRecord, Lease
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.states import TaskStatus

NOT_NOW = 0.5
"""Seconds a call may take before the test says it waited for the Registry."""


class GatedRegistry(MemoryRegistry):
    """A memory registry whose listing and lease calls wait while their gate is closed, and
    whose lease can be made taken by another node."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0
        self.renewals = 0
        self.taken = False

    async def breakers(self) -> list[BreakerRecord]:
        self.reads += 1
        await self.gate.wait()
        return await super().breakers()

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        self.renewals += 1
        await self.gate.wait()
        if self.taken:
            return None
        return await super().acquire_lease(name, holder, ttl)


@pytest.fixture
async def registry(clock: FakeClock) -> AsyncIterator[GatedRegistry]:
    r = GatedRegistry(clock=clock)
    await r.start()
    yield r
    r.gate.set()
    await r.close()


async def run_others() -> None:
    """Let the reads started ahead run to their end (the Registry here answers at once)."""
    for _ in range(20):
        await asyncio.sleep(0)


# ------------------------------------------------------------------------------- Ahead


async def test_ahead_gives_its_result_once_done_with_when_it_started() -> None:
    ahead: Ahead[int] = Ahead("test")
    gate = asyncio.Event()

    async def read() -> int:
        await gate.wait()
        return 7

    assert ahead.take() is None  # none started
    ahead.start(read, 10.0)
    ahead.start(read, 11.0)  # one at a time: this one is not started
    assert ahead.running and ahead.take() is None  # still running
    gate.set()
    await run_others()
    assert ahead.take() == (10.0, 7)
    assert not ahead.running and ahead.take() is None  # taken once


async def test_ahead_drops_a_failed_read_and_a_cancelled_one() -> None:
    ahead: Ahead[int] = Ahead("test")

    async def down() -> int:
        raise BackendUnavailable("registry down")

    ahead.start(down, 1.0)
    await run_others()
    assert ahead.take() is None and not ahead.running
    ahead.start(down, 2.0)
    ahead.cancel()
    assert await ahead.wait() is None


# ------------------------------------------------------------------------------- holds


async def test_holds_are_read_ahead_so_a_due_call_does_not_wait(
    registry: GatedRegistry, clock: FakeClock
) -> None:
    """Three quarters through ``refresh`` the next read may start; at the end of the period the call
    takes it, and shows a pause written before that read started, without a Registry call."""
    reader, writer = CapabilityHolds(registry, clock), CapabilityHolds(registry, clock)
    assert await reader.paused() == set()
    clock.advance(0.4)
    await writer.set("echo", paused=True)
    clock.advance(0.4)  # 0.8 s: the next read may start, this call keeps what it holds
    assert await reader.paused() == set()
    reader.read_ahead()
    await run_others()
    registry.gate.clear()  # from now on a Registry read would wait
    clock.advance(0.5)  # 1.3 s: past the first read's period, not the second's
    paused = await asyncio.wait_for(reader.paused(), NOT_NOW)
    assert paused == {"echo"}


async def test_a_hold_written_during_a_read_ahead_is_not_hidden_by_it(
    registry: GatedRegistry, clock: FakeClock
) -> None:
    """An early read that started before this node's own pause never replaces it."""
    holds = CapabilityHolds(registry, clock)
    assert await holds.paused() == set()
    registry.gate.clear()
    clock.advance(0.8)
    holds.read_ahead()  # it starts, and waits
    assert await holds.paused() == set()
    await holds.set("echo", paused=True)
    registry.gate.set()
    await run_others()
    assert await holds.paused() == {"echo"}


# ----------------------------------------------------------------------------- breakers

POLICY = BreakerPolicy(failure_threshold=100, min_calls=100, cool_down=30)


def failed(capability: str) -> Task:
    return Task(
        id="wf/t",
        workflow_id="wf",
        key="t",
        capability=capability,
        status=TaskStatus.FAILED,
        input=None,
        needs=(),
        pending=0,
        created_at=0,
        updated_at=0,
        attempt=1,
        error=ErrorInfo("error", "boom"),
    )


async def test_breakers_are_read_ahead_so_a_due_round_does_not_wait(
    registry: GatedRegistry, clock: FakeClock
) -> None:
    breakers = Breakers(registry, MemoryBus(clock=clock), clock, default=POLICY, refresh=1.0)
    assert await breakers.hold() == set()
    clock.advance(0.8)
    breakers.read_ahead()
    await run_others()
    registry.gate.clear()
    clock.advance(0.5)
    assert await asyncio.wait_for(breakers.hold(), NOT_NOW) == set()


async def test_counts_recorded_during_a_read_ahead_are_kept_and_written(
    registry: GatedRegistry, clock: FakeClock
) -> None:
    """The read ahead writes this node's counts, then lists the breakers: a failure recorded
    meanwhile stays in the cache (the listing does not take it back) and the next refresh
    writes it."""
    breakers = Breakers(registry, MemoryBus(clock=clock), clock, default=POLICY, refresh=1.0)
    await breakers.hold()
    await breakers.record([failed("echo")])
    registry.gate.clear()
    clock.advance(0.8)
    breakers.read_ahead()  # writes 1 failure, then waits to list
    await run_others()
    assert (await breakers.get("capability:echo")).consecutive_failures == 1
    await breakers.record([failed("echo")])  # 2, in the cache only
    registry.gate.set()
    await run_others()
    clock.advance(0.1)
    await breakers.hold()  # takes the read ahead
    assert breakers._cache["capability:echo"].consecutive_failures == 2
    clock.advance(1.0)
    await breakers.hold()  # due: the next refresh writes the counts
    await run_others()
    assert (await breakers.get("capability:echo")).consecutive_failures == 2


# -------------------------------------------------------------------------------- lease


@pytest.fixture
async def leader(
    tmp_path: Path, clock: FakeClock, registry: GatedRegistry
) -> AsyncIterator[Scheduler]:
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    breakers = Breakers(registry, bus, clock, default=POLICY, refresh=1.0)
    scheduler = Scheduler(store, bus, registry, clock, node="node-1", breakers=breakers)
    assert await scheduler._ensure_lease()  # leads: renewed every third of 4 s
    yield scheduler
    registry.gate.set()
    await scheduler.stop()
    await bus.close()
    await store.close()


async def test_the_lease_is_renewed_ahead_so_a_due_round_does_not_wait(
    leader: Scheduler, registry: GatedRegistry, clock: FakeClock
) -> None:
    start = clock.now()
    clock.advance(1.05)  # 3/4 of a third of the lease: between rounds, the renewal starts
    leader._read_ahead()
    await run_others()
    registry.gate.clear()
    clock.advance(0.7)  # 1.75 s: past a third since the first renewal, not since the second
    assert await asyncio.wait_for(leader._ensure_lease(), NOT_NOW)
    # The renewal counts from when it was sent, never later.
    assert leader._lease_renewed == pytest.approx(start + 1.05)


async def test_a_renewal_ahead_that_finds_the_lease_taken_deposes_the_leader(
    leader: Scheduler, registry: GatedRegistry, clock: FakeClock
) -> None:
    registry.taken = True
    clock.advance(1.05)
    leader._read_ahead()
    await run_others()
    with pytest.raises(LeaseLost):
        await leader._ensure_lease()


async def test_a_late_renewal_is_waited_for_on_the_path(
    leader: Scheduler, registry: GatedRegistry, clock: FakeClock
) -> None:
    """A leader never acts past a third of its lease on a renewal that has not come back."""
    registry.gate.clear()
    clock.advance(1.05)
    leader._read_ahead()  # the renewal waits on the Registry
    assert await leader._ensure_lease()  # still within a third of the lease it holds
    clock.advance(0.7)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(leader._ensure_lease(), NOT_NOW)


async def test_what_is_near_its_refresh_starts_between_rounds_with_no_report_coming(
    leader: Scheduler, registry: GatedRegistry, clock: FakeClock
) -> None:
    """Between rounds the scheduler starts the lease's renewal, the holds' and the breakers'
    reads, each once three quarters of its period have gone by (not before: no more Registry
    calls), and not while tasks it just sent may report."""
    await leader.holds.held()
    assert leader.breakers is not None
    await leader.breakers.hold()
    renewals, reads = registry.renewals, registry.reads
    clock.advance(0.2)
    leader._read_ahead()
    await run_others()
    assert (registry.renewals, registry.reads) == (renewals, reads)
    clock.advance(0.85)  # 1.05 s: past 3/4 of the lease's third, of the holds' and breakers'
    leader._sent_at = clock.now()  # a task just sent: its report may be on its way
    leader._read_ahead()
    await run_others()
    assert (registry.renewals, registry.reads) == (renewals, reads)
    leader._sent_at = None
    leader._read_ahead()
    await run_others()
    assert (registry.renewals, registry.reads) == (renewals + 1, reads + 2)


async def test_stepping_down_waits_for_what_was_started_ahead(
    leader: Scheduler, registry: GatedRegistry, clock: FakeClock
) -> None:
    """A renewal ahead still in flight ends before the lease is given up (sent after the
    release, it would take the lease again for a node that stopped); so do the reads."""
    await leader.holds.held()
    assert leader.breakers is not None
    await leader.breakers.hold()
    registry.gate.clear()
    clock.advance(1.05)
    leader._read_ahead()
    stopping = asyncio.ensure_future(leader.stop())
    await run_others()
    assert not stopping.done()  # waits for the Registry
    registry.gate.set()
    await asyncio.wait_for(stopping, NOT_NOW)
    assert not leader._lease_ahead.running and not leader.holds._ahead.running
    assert not leader.breakers._ahead.running
    assert await registry.get_lease("scheduler") is None  # released, not renewed after
