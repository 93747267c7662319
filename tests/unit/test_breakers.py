"""Breakers shared through the Registry, and the scheduler obeying them, with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core import breaker as machine
from agentdeck.core.breaker import BreakerPolicy, BreakerState, BreakerStatus
from agentdeck.core.breakers import Breakers, _recorder, breaker_name, outcomes
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import AgentdeckError, BackendUnavailable, ConfigError, NotFound
from agentdeck.core.messages import Control, Event, Report, TaskMessage, decode, encode
from agentdeck.core.models import CommandStatus, ErrorInfo, Task
from agentdeck.core.ports import BreakerRecord, OutgoingTask
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.settings import Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T

POLICY = BreakerPolicy(failure_threshold=2, min_calls=100, cool_down=30)
NO_RETRY = RetryPolicy(max_attempts=1)


class RecordingBus(MemoryBus):
    """The memory bus, keeping every event and control message published for the test."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Event] = []
        self.controls: list[Control] = []
        self.refuse_tasks = 0
        """Task publishes still to refuse (the broker down for that many rounds)."""

    async def publish_tasks(self, messages: Sequence[OutgoingTask]) -> None:
        if self.refuse_tasks:
            self.refuse_tasks -= 1
            raise BackendUnavailable("the broker refused the publish")
        await super().publish_tasks(messages)

    async def publish_event(self, body: bytes) -> None:
        self.events.append(decode(body, Event))
        await super().publish_event(body)

    async def publish_control(self, body: bytes) -> None:
        self.controls.append(decode(body, Control))
        await super().publish_control(body)

    def breaker_kinds(self, name: str) -> list[str]:
        """The kinds of the breaker events published for breaker ``name``, in order."""
        return [
            e.data["kind"] for e in self.events if e.topic == "breaker" and e.data["name"] == name
        ]


class RacingRegistry(MemoryRegistry):
    """A registry where another node writes each breaker just before our first write."""

    raced: int = 0

    async def put_breaker(self, record: BreakerRecord, expected_version: int | None) -> bool:
        if not self.raced:
            self.raced += 1
            other = BreakerRecord(record.name, "closed", {}, (expected_version or 0) + 1)
            await super().put_breaker(other, expected_version)
            return await super().put_breaker(record, expected_version)
        return await super().put_breaker(record, expected_version)


@dataclass
class Deck:
    """A store, bus, registry, breakers, scheduler and client, driven round by round."""

    store: SqliteStore
    bus: RecordingBus
    registry: MemoryRegistry
    breakers: Breakers
    scheduler: Scheduler
    client: Client
    clock: FakeClock
    taken: list[TaskMessage] = field(default_factory=list)

    async def settle(self) -> None:
        for _ in range(50):
            for _ in range(5):
                await asyncio.sleep(0)
            if not await self.scheduler.tick() and not self.scheduler._inbox:
                return
        raise AssertionError("scheduler did not settle")

    async def submit(self, n: int, capability: str = "echo") -> str:
        tasks = ", ".join(f"{{key: t{i}, capability: {capability}}}" for i in range(n))
        spec = parse_spec(f"name: w\ntasks: [{tasks}]", fmt="yaml", limits=SpecLimits())
        return (await self.client.submit(spec)).id

    async def take_all(self, capability: str = "echo") -> list[TaskMessage]:
        """Every task message waiting for ``capability`` (acked: the test plays the agent)."""
        got: list[TaskMessage] = []
        it = self.bus.consume_tasks([capability], prefetch=1000)
        while True:
            try:
                delivery = await asyncio.wait_for(anext(it), 0.05)
            except TimeoutError:
                break
            await delivery.ack()
            got.append(decode(delivery.body, TaskMessage))
        await it.aclose()  # type: ignore[attr-defined]
        return got

    async def report(self, msg: TaskMessage, ok: bool, agent: str = "agent-1") -> None:
        for kind in ("started", "succeeded" if ok else "failed"):
            report = Report(
                kind=kind,
                task_id=msg.task_id,
                attempt=msg.attempt,
                agent_id=agent,
                at=self.clock.now(),
                error={"kind": "error", "message": "boom"} if kind == "failed" else None,  # type: ignore[arg-type]
            )
            await self.bus.publish_report(encode(report), {})

    async def statuses(self, workflow_id: str) -> list[T]:
        return [t.status for t in await self.store.list_tasks(workflow_id=workflow_id)]


@pytest.fixture
async def deck(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Deck]:
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = RecordingBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    breakers = Breakers(registry, bus, clock, default=POLICY, refresh=0)
    scheduler = Scheduler(
        store,
        bus,
        registry,
        clock,
        node="node-1",
        config=SchedulerConfig(default_retry=NO_RETRY),
        breakers=breakers,
    )
    client = Client(store, clock, poll=0.001)
    yield Deck(store, bus, registry, breakers, scheduler, client, clock)
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def open_echo(deck: Deck) -> None:
    """Fail two echo tasks so the echo breaker opens."""
    await deck.submit(2)
    await deck.settle()
    for msg in await deck.take_all():
        await deck.report(msg, ok=False)
    await deck.settle()
    assert (await deck.breakers.get("capability:echo")).status is BreakerStatus.OPEN


async def test_open_capability_breaker_holds_ready_tasks_then_a_trial_closes_it(
    deck: Deck,
) -> None:
    """Tasks of an open capability wait as ready; after the cool-down one trial goes; its
    success closes the breaker and the rest are dispatched."""
    await open_echo(deck)
    wf = await deck.submit(3)
    await deck.settle()
    assert await deck.statuses(wf) == [T.READY] * 3
    assert await deck.take_all() == []
    deck.clock.advance(30)
    await deck.settle()
    [trial] = await deck.take_all()
    assert sorted(await deck.statuses(wf)) == sorted([T.DISPATCHED, T.READY, T.READY])
    state = await deck.breakers.get("capability:echo")
    assert state.status is BreakerStatus.HALF_OPEN and state.trial_in_flight
    await deck.report(trial, ok=True)
    await deck.settle()
    assert (await deck.breakers.get("capability:echo")).status is BreakerStatus.CLOSED
    assert len(await deck.take_all()) == 2
    assert deck.bus.breaker_kinds("capability:echo") == [
        "BreakerOpened",
        "BreakerHalfOpened",
        "BreakerClosed",
    ]


async def test_rate_limited_attempts_never_open_a_breaker(deck: Deck) -> None:
    """Rate limits are backpressure: as many as would open the breaker twice over leave it
    closed, its counts untouched."""
    await deck.submit(4)
    await deck.settle()
    for msg in await deck.take_all():
        report = Report(
            kind="failed",
            task_id=msg.task_id,
            attempt=msg.attempt,
            agent_id="agent-1",
            at=deck.clock.now(),
            error={"kind": "rate_limited", "message": "429", "retry_after": 5},  # type: ignore[arg-type]
        )
        await deck.bus.publish_report(encode(report), {})
    await deck.settle()
    state = await deck.breakers.get("capability:echo")
    assert (state.status, state.consecutive_failures, state.calls()) == (
        BreakerStatus.CLOSED,
        0,
        0,
    )


async def test_failed_trial_opens_it_again(deck: Deck) -> None:
    """A trial that fails opens the breaker for another cool-down; the others still wait."""
    await open_echo(deck)
    wf = await deck.submit(2)
    deck.clock.advance(30)
    await deck.settle()
    [trial] = await deck.take_all()
    await deck.report(trial, ok=False)
    await deck.settle()
    assert (await deck.breakers.get("capability:echo")).status is BreakerStatus.OPEN
    assert sorted(await deck.statuses(wf)) == [T.FAILED, T.READY]


async def test_a_trial_whose_publish_failed_is_given_back_at_once(deck: Deck) -> None:
    """The broker refuses the half-open trial's message: the claim is given back, so the next
    round sends a trial at once (not after trial_timeout), and only one."""
    await open_echo(deck)
    wf = await deck.submit(2)
    deck.clock.advance(30)
    deck.bus.refuse_tasks = 1
    await deck.settle()
    assert deck.bus.refuse_tasks == 0  # the trial was taken and its publish refused
    await deck.settle()
    [trial] = await deck.take_all()
    state = await deck.breakers.get("capability:echo")
    assert state.status is BreakerStatus.HALF_OPEN and state.trial_in_flight
    assert state.trial_at == deck.clock.now()
    assert sorted(await deck.statuses(wf)) == sorted([T.DISPATCHED, T.READY])
    await deck.report(trial, ok=True)
    await deck.settle()
    assert (await deck.breakers.get("capability:echo")).status is BreakerStatus.CLOSED
    assert len(await deck.take_all()) == 1


async def test_other_capabilities_flow_while_one_is_open(deck: Deck) -> None:
    """An open breaker holds only its own capability."""
    await open_echo(deck)
    await deck.submit(2, capability="sleep")
    await deck.settle()
    assert len(await deck.take_all("sleep")) == 2


async def test_open_agent_breaker_drains_that_agent_and_half_open_resumes_it(deck: Deck) -> None:
    """Failures of one agent open its breaker: it is told to drain; after the cool-down, resume."""
    await deck.submit(2, capability="a")
    await deck.submit(2, capability="b")
    await deck.settle()
    for msg in await deck.take_all("a") + await deck.take_all("b"):
        await deck.report(msg, ok=False, agent="bad-agent")
    await deck.settle()
    assert (await deck.breakers.get("agent:bad-agent")).status is BreakerStatus.OPEN
    assert [(c.action, c.target) for c in deck.bus.controls] == [("drain", "bad-agent")]
    deck.clock.advance(30)
    await deck.settle()
    assert deck.bus.controls[-1].action == "resume"
    assert deck.bus.controls[-1].target == "bad-agent"


async def test_operator_trips_and_resets_through_commands(deck: Deck) -> None:
    """trip and reset are commands the leader carries out; both land in the action log."""
    trip = await deck.client.command("trip", "echo", wait=None)
    assert trip.target == "capability:echo"
    await deck.settle()
    assert (await deck.store.get_command(trip.id)).result == "breaker capability:echo is open"
    wf = await deck.submit(1)
    deck.clock.advance(3600)  # a tripped breaker ignores the cool-down
    await deck.settle()
    assert await deck.statuses(wf) == [T.READY]
    reset = await deck.client.command("reset", "capability:echo", wait=None)
    await deck.settle()
    done = await deck.store.get_command(reset.id)
    assert done.status is CommandStatus.DONE and done.result.endswith("closed")
    assert len(await deck.take_all()) == 1
    assert deck.bus.breaker_kinds("capability:echo") == ["BreakerTripped", "BreakerReset"]
    assert [c.action for c in await deck.store.list_commands()] == ["reset", "trip"]


async def test_reset_of_unknown_breaker_fails_the_command(deck: Deck) -> None:
    """Resetting a breaker that has no state is a failed command saying so."""
    command = await deck.client.command("reset", "agent:nobody", wait=None)
    await deck.settle()
    done = await deck.store.get_command(command.id)
    assert done.status is CommandStatus.FAILED and "no state" in done.result


async def test_bad_breaker_name_is_refused_before_queueing(deck: Deck) -> None:
    """A breaker name that is neither capability:X nor agent:ID is refused, nothing queued."""
    with pytest.raises(AgentdeckError, match="'queue:x' is not capability"):
        await deck.client.command("trip", "queue:x", wait=None)
    assert await deck.store.list_commands() == []
    assert breaker_name("agent:a@h:1") == "agent:a@h:1"


async def test_two_nodes_see_one_breaker(clock: FakeClock) -> None:
    """A breaker opened through one node's service is open for another sharing the registry."""
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    bus = RecordingBus.from_url("memory://", clock=clock)
    one = Breakers(registry, bus, clock, default=POLICY, refresh=0)
    two = Breakers(registry, bus, clock, default=POLICY, refresh=5)
    await two.hold()  # two caches "nothing open" for five seconds of clock time
    failed = failed_task("echo", "a1")
    await one.record([failed, failed])
    assert await one.hold() == {"echo"}
    assert await two.hold() == set()  # still trusting its cache
    clock.advance(5)
    assert await two.hold() == {"echo"}


async def test_lost_compare_and_set_is_retried(clock: FakeClock) -> None:
    """When another node writes between our read and write, the change is redone on top."""
    registry = RacingRegistry.from_url("memory://", clock=clock)
    bus = RecordingBus.from_url("memory://", clock=clock)
    breakers = Breakers(registry, bus, clock, default=POLICY)
    await breakers.trip("capability:echo")
    state = await breakers.get("capability:echo")
    assert registry.raced == 1 and state.status is BreakerStatus.OPEN
    record = await registry.get_breaker("capability:echo")
    assert record is not None and record.version == 2


async def test_per_capability_policy_wins_over_default(clock: FakeClock) -> None:
    """A capability with its own policy opens by it; agents use the default."""
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    bus = RecordingBus.from_url("memory://", clock=clock)
    strict = BreakerPolicy(failure_threshold=1)
    breakers = Breakers(registry, bus, clock, default=POLICY, policies={"echo": strict})
    await breakers.record([failed_task("echo", "a1")])
    assert (await breakers.get("capability:echo")).status is BreakerStatus.OPEN
    assert (await breakers.get("agent:a1")).status is BreakerStatus.CLOSED


def failed_task(capability: str, agent: str, kind: str = "error") -> Task:
    return Task(
        id="w/t",
        workflow_id="w",
        key="t",
        capability=capability,
        status=T.FAILED,
        input=None,
        needs=(),
        pending=0,
        created_at=0,
        updated_at=0,
        attempt=1,
        error=ErrorInfo(kind, "boom"),
        agent_id=agent,
    )


def test_cancelled_permanent_and_lost_errors_are_not_counted() -> None:
    """Errors that say nothing about health do not count (an operator's cancel, a refused input,
    an attempt no report came for: an outage loses healthy agents' work too); others count for
    capability and agent."""
    assert (
        outcomes([failed_task("echo", "a1", "permanent"), failed_task("x", "", "cancelled")]) == []
    )
    assert outcomes([failed_task("echo", "a1", "lost")]) == []
    assert outcomes([failed_task("echo", "a1", "timeout")]) == [
        ("capability:echo", False),
        ("agent:a1", False),
    ]


async def test_reset_needs_existing_state(clock: FakeClock) -> None:
    """Resetting a breaker that was never used raises NotFound."""
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    breakers = Breakers(registry, RecordingBus.from_url("memory://", clock=clock), clock)
    with pytest.raises(NotFound, match="capability:echo"):
        await breakers.reset("echo")


def test_breaker_settings_out_of_range_are_refused_at_start(tmp_path: Path) -> None:
    """A bad breaker setting fails Settings.load naming the field and its range."""
    with pytest.raises(ConfigError, match=r"breakers.capabilities.echo: cool_down must be .* 0.1"):
        Settings.load(home=tmp_path, breakers={"capabilities": {"echo": {"cool_down": 0}}})
    with pytest.raises(ConfigError, match=r"breakers.default: failure_rate"):
        Settings.load(home=tmp_path, breakers={"default": {"failure_rate": 2}})
    settings = Settings.load(home=tmp_path, breakers={"default": {"failure_threshold": "9"}})
    assert settings.breakers.default.failure_threshold == 9


async def test_counts_are_written_lazily_but_transitions_at_once(clock: FakeClock) -> None:
    """A failure that opens nothing waits for the refresh to reach the registry; an opening
    is written at once."""
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    bus = RecordingBus.from_url("memory://", clock=clock)
    breakers = Breakers(registry, bus, clock, default=POLICY, refresh=5)
    await breakers.record([failed_task("echo", "")])
    assert await registry.get_breaker("capability:echo") is None
    clock.advance(5)
    await breakers.hold()
    assert (await breakers.get("capability:echo")).consecutive_failures == 1
    await breakers.record([failed_task("echo", "")])
    assert (await breakers.get("capability:echo")).status is BreakerStatus.OPEN


@st.composite
def breaker_states(draw: st.DrawFn) -> BreakerState:
    """A breaker in any status, its window's buckets before ``now`` (= 1000.0) or holding it."""
    starts = draw(st.lists(st.integers(800, 1000), max_size=4, unique=True).map(sorted))
    window = tuple((float(s), draw(st.integers(0, 50)), draw(st.integers(0, 50))) for s in starts)
    return BreakerState(
        "capability:x",
        status=draw(st.sampled_from(BreakerStatus)),
        consecutive_failures=draw(st.integers(0, 6)),
        window=window,
        opened_at=draw(st.none() | st.just(990.0)),
    )


POLICIES = st.builds(
    BreakerPolicy,
    failure_threshold=st.integers(1, 8),
    failure_rate=st.sampled_from([0.01, 0.3, 0.5, 1.0]),
    window_seconds=st.sampled_from([1.0, 30.0, 60.0, 600.0, 3600.0]),
    min_calls=st.integers(1, 30),
)


@settings(max_examples=500, deadline=None)
@given(breaker_states(), st.lists(st.booleans(), max_size=40), POLICIES, st.floats(1000, 1001))
def test_recording_a_round_is_recording_each_outcome_in_turn(
    state: BreakerState, oks: list[bool], policy: BreakerPolicy, now: float
) -> None:
    """Runs of successes are counted at once: the same state and events as one call of
    the machine's ``record`` per outcome."""
    expected_events: list[object] = []
    expected = state
    for ok in oks:
        expected, found = machine.record(expected, ok, now, policy)
        expected_events += found
    assert _recorder(oks, policy)(state, now) == (expected, expected_events)
