"""Capability holds: a shared paused set in the Registry, cached briefly, safe through an
outage; open breakers listed from their own records."""

from __future__ import annotations

import pytest

from agentdeck.backends.memory import MemoryRegistry
from agentdeck.core.breaker import BreakerPolicy, BreakerState, BreakerStatus
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import AgentdeckError, BackendUnavailable
from agentdeck.core.holds import (
    CapabilityHolds,
    Hold,
    breaker_hold,
    breaker_policies,
    is_hold_record,
)
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


def _breaker(name: str, state: str, **data: object) -> BreakerRecord:
    return BreakerRecord(name, state, dict(data), 1)  # type: ignore[arg-type]


async def test_an_open_breaker_holds_its_capability_until_it_half_opens(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    """An open capability breaker is listed as a ``breaker`` hold: its reason is what it
    counted, its end when the cool-down of that capability's policy is over."""
    now = clock.now()
    reason = "5 failures in a row (threshold 5)"
    for record in (
        _breaker("capability:llm", "open", opened_at=now - 10, reason=reason),
        _breaker("capability:echo", "closed", consecutive_failures=2),
        _breaker("agent:a1", "open", opened_at=now - 10, reason="agents hold no capability"),
    ):
        await registry.put_breaker(record, None)
    policies = breaker_policies(BreakerPolicy(cool_down=30), {"llm": BreakerPolicy(cool_down=60)})
    holds = await CapabilityHolds(registry, clock, breakers=policies).holds()
    assert holds == [Hold("llm", "breaker", reason, now + 50, now - 10)]
    default = await CapabilityHolds(registry, clock).holds()
    assert [h.until for h in default] == [now + 20]  # the default policy's 30 s cool-down


async def test_a_breaker_past_its_cool_down_holds_until_the_scheduler_half_opens_it(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    """Unlike a rate limit, an open breaker's hold does not lapse by the clock alone."""
    now = clock.now()
    await registry.put_breaker(_breaker("capability:llm", "open", opened_at=now - 100), None)
    await CapabilityHolds(registry, clock).rate_limit("llm", now + 5, "429")
    clock.advance(10)
    holds = await CapabilityHolds(registry, clock).holds()
    assert [(h.kind, h.until) for h in holds] == [("breaker", now - 70)]
    assert holds[0].reason == "failures counted"


async def test_a_tripped_or_half_open_breaker_says_what_ends_its_hold(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    """Tripped by hand: until reset. Half-open: until a trial succeeds, with the trial's state."""
    now = clock.now()
    await registry.put_breaker(
        _breaker("capability:a", "open", opened_at=now, manual=True, reason="tripped by ann"), None
    )
    await registry.put_breaker(
        _breaker(
            "capability:b",
            "half_open",
            opened_at=now - 40,
            trial_in_flight=True,
            reason="5 failures in a row (threshold 5)",
        ),
        None,
    )
    holds = await CapabilityHolds(registry, clock).holds()
    assert [(h.capability, h.reason, h.until, h.ends) for h in holds] == [
        ("a", "tripped by ann", None, "until reset"),
        ("b", "half-open, trial in flight: 5 failures in a row (threshold 5)", None, "trial ok"),
    ]


async def test_breaker_holds_are_listed_not_enforced_here(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    """``held`` (what dispatch skips) leaves breakers to the breaker service, which lets a
    half-open trial through; with breakers turned off none is listed at all."""
    now = clock.now()
    await registry.put_breaker(_breaker("capability:llm", "open", opened_at=now), None)
    holds = CapabilityHolds(registry, clock)
    await holds.set("echo", paused=True)
    assert [h.kind for h in await holds.holds()] == ["paused", "breaker"]
    assert await holds.held() == {"echo"}
    assert [h.kind for h in await CapabilityHolds(registry, clock, breakers=None).holds()] == [
        "paused"
    ]


async def test_one_capabilitys_holds_sort_pause_first_and_rate_limit_last(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    """Paused, then breaker, then rate-limited: the screen's state column shows the first."""
    now = clock.now()
    holds = CapabilityHolds(registry, clock)
    await holds.rate_limit("llm", now + 60, "429")
    await registry.put_breaker(_breaker("capability:llm", "open", opened_at=now), None)
    await holds.set("llm", paused=True)
    assert [h.kind for h in await holds.holds()] == ["paused", "breaker", "rate_limited"]


def test_a_breaker_state_says_its_hold_without_io() -> None:
    """breaker_hold is pure: closed holds nothing, agents hold no capability, open ends at
    opened_at + cool-down, tripped by hand until reset, half-open until a trial succeeds."""
    policy = BreakerPolicy(cool_down=45)
    opened = BreakerState(
        "capability:llm", BreakerStatus.OPEN, 5, opened_at=100.0, reason="5 failures in a row"
    )
    assert breaker_hold(opened, policy) == Hold(
        "llm", "breaker", "5 failures in a row", 145.0, 100.0
    )
    assert breaker_hold(BreakerState("capability:llm"), policy) is None
    assert breaker_hold(BreakerState("agent:a1", BreakerStatus.OPEN, opened_at=1.0), policy) is None
    tripped = breaker_hold(
        BreakerState("capability:x", BreakerStatus.OPEN, opened_at=1.0, manual=True), policy
    )
    assert tripped is not None and (tripped.until, tripped.ends) == (None, "until reset")
    assert tripped.reason == "failures counted"  # (a record without a reason)
    half = breaker_hold(
        BreakerState("capability:x", BreakerStatus.HALF_OPEN, opened_at=1.0), policy
    )
    assert half is not None and half.reason == "half-open, one trial may go: failures counted"
    assert (half.until, half.ends) == (None, "trial ok")
