"""The scheduler's one observer interface: every moment announced, to every observer, in order."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.messages import Report, TaskMessage, decode, encode
from agentdeck.core.metrics import Metrics, MetricsObserver
from agentdeck.core.models import Command, Task, Workflow
from agentdeck.core.scheduler import EventsFeed, Observers, Scheduler, SchedulerObserver
from agentdeck.core.settings import Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.tracing import TRACE_HEADER, TracingObserver

ONE_TASK = "name: one\ntasks:\n  - {key: a, capability: echo}\n"


@dataclass
class Recorder(SchedulerObserver):
    """Writes down each moment as ``(hook, what)``; adds one header to every message."""

    moments: list[tuple[str, object]] = field(default_factory=list)

    async def lease_acquired(self, token: int) -> None:
        self.moments.append(("lease_acquired", token))

    async def lease_lost(self) -> None:
        self.moments.append(("lease_lost", None))

    def message_headers(self, task: Task, now: float) -> Mapping[str, str]:
        self.moments.append(("message_headers", task.attempt))
        return {"x-recorded": task.id}

    async def tasks_dispatched(self, ready: Sequence[Task], now: float) -> None:
        self.moments.append(("tasks_dispatched", [t.key for t in ready]))

    async def tasks_changed(
        self,
        tasks: Sequence[Task],
        released: Sequence[Task],
        kinds: Mapping[str, str | None],
        now: float,
    ) -> None:
        self.moments.append(("tasks_changed", [t.status.value for t in tasks]))

    async def workflow_changed(self, workflow: Workflow, now: float) -> None:
        self.moments.append(("workflow_changed", workflow.status.value))

    async def workflow_finished(self, workflow: Workflow, now: float) -> None:
        self.moments.append(("workflow_finished", workflow.status.value))

    async def command_finished(self, command: Command) -> None:
        self.moments.append(("command_finished", (command.action, command.status.value)))


@dataclass
class Node:
    store: SqliteStore
    bus: MemoryBus
    scheduler: Scheduler
    client: Client
    clock: FakeClock
    recorder: Recorder

    async def submit(self) -> str:
        spec = parse_spec(ONE_TASK, fmt="yaml", limits=SpecLimits())
        return (await self.client.submit(spec)).id

    async def run_one_task(self) -> tuple[str, dict[str, str]]:
        """Submit, dispatch, and play the agent to success; the workflow id and the headers
        its task message carried."""
        workflow_id = await self.submit()
        await self.scheduler.tick()
        consumer = self.bus.consume_tasks(["echo"], prefetch=1)
        delivery = await asyncio.wait_for(anext(consumer), 2)
        await delivery.ack()
        await consumer.aclose()  # type: ignore[attr-defined]
        message = decode(delivery.body, TaskMessage)
        for kind in ("started", "succeeded"):
            report = Report(
                kind=kind,
                task_id=message.task_id,
                attempt=message.attempt,
                agent_id="agent-1",
                at=self.clock.now(),
            )
            await self.bus.publish_report(encode(report), {})
        for _ in range(20):
            await asyncio.sleep(0)
            await self.scheduler.tick()
        return workflow_id, dict(delivery.headers)


@pytest.fixture
async def node(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Node]:
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    recorder = Recorder()
    scheduler = Scheduler(store, bus, registry, clock, node="node-1", observers=[recorder])
    yield Node(store, bus, scheduler, Client(store, clock, poll=0.001), clock, recorder)
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


def _hooks(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and name[0] != "_"}


def test_the_fan_out_passes_on_every_hook() -> None:
    """Observers overrides every hook of SchedulerObserver (a new hook cannot be dropped)."""
    hooks = _hooks(SchedulerObserver)
    assert hooks <= _hooks(Observers)
    assert {"lease_acquired", "tasks_changed", "workflow_finished"} <= hooks


def test_every_hook_is_a_coroutine_but_the_headers() -> None:
    """Hooks may do I/O (awaited), except message_headers, which runs per message."""
    sync = {
        h
        for h in _hooks(SchedulerObserver)
        if not inspect.iscoroutinefunction(getattr(SchedulerObserver, h))
    }
    assert sync == {"message_headers"}


async def test_an_observer_sees_a_workflows_life_in_order(node: Node) -> None:
    """Lease, dispatch, the result, the workflow's end, and stepping down, in that order."""
    await node.run_one_task()
    await node.scheduler.stop()
    moments = [m for m in node.recorder.moments if m[0] != "message_headers"]
    assert moments == [
        ("lease_acquired", 1),
        ("tasks_changed", ["dispatched"]),
        ("tasks_dispatched", ["a"]),
        ("tasks_changed", ["succeeded"]),  # started and succeeded came in one batch
        ("workflow_finished", "succeeded"),
        ("lease_lost", None),
    ]


async def test_observers_headers_ride_on_the_task_message(node: Node) -> None:
    """What an observer returns from message_headers is on the attempt's message."""
    workflow_id, headers = await node.run_one_task()
    assert headers == {"x-recorded": f"{workflow_id}/a"}
    assert ("message_headers", 1) in node.recorder.moments


async def test_commands_and_pauses_are_announced(node: Node) -> None:
    """A paused workflow is announced as changed, and each command's outcome as finished."""
    workflow_id = await node.submit()
    await node.client.command("pause", workflow_id, wait=None)
    await node.scheduler.tick()
    assert ("workflow_changed", "paused") in node.recorder.moments
    assert ("command_finished", ("pause", "done")) in node.recorder.moments


async def test_the_events_feed_is_first_and_observe_adds_after(node: Node) -> None:
    """The events feed is always told first; observe() appends after the ones given."""
    later = Recorder()
    node.scheduler.observe(later)
    assert [type(o) for o in node.scheduler.observers] == [EventsFeed, Recorder, Recorder]
    await node.run_one_task()
    assert later.moments == node.recorder.moments and later.moments


async def test_the_metrics_observer_counts_rounds_and_leadership(node: Node) -> None:
    """Rounds run while leading are counted; is_leader is 1 while leading and 0 after."""
    metrics = Metrics()
    node.scheduler.observe(MetricsObserver(metrics))

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    await node.scheduler.tick()
    await node.scheduler.tick()
    assert value("agentdeck_scheduler_rounds_total") == 2
    assert value("agentdeck_scheduler_is_leader") == 1
    assert value("agentdeck_scheduler_lease_renewals_total") == 1
    await node.scheduler.stop()
    assert value("agentdeck_scheduler_is_leader") == 0
    assert value("agentdeck_scheduler_leader_changes_total", change="lost") == 1


async def test_the_tracing_observer_puts_a_traceparent_on_each_message(node: Node) -> None:
    """With tracing observed, a task message carries the W3C traceparent of its attempt."""
    from agentdeck.core.tracing import Tracing, attempt_span_id, workflow_trace_id

    tracing = Tracing("test", "node-1", env={})
    node.scheduler.observe(TracingObserver(tracing))
    try:
        workflow_id, headers = await node.run_one_task()
    finally:
        tracing.shutdown()
    trace_id = workflow_trace_id(workflow_id)
    span_id = attempt_span_id(f"{workflow_id}/a", 1)
    assert headers[TRACE_HEADER] == f"00-{trace_id:032x}-{span_id:016x}-01"


async def test_instrument_runtime_registers_the_metrics_and_tracing_observers(
    tmp_path: Path,
) -> None:
    """The daemon's telemetry reaches the scheduler as observers, after the events feed."""
    from agentdeck.tui.telemetry import instrument_runtime
    from agentdeck.tui.wiring import build_runtime

    settings = Settings.load(home=tmp_path, metrics_port=9, tracing=True)
    runtime = build_runtime(settings, demo=False)
    telemetry = instrument_runtime(runtime, settings)
    try:
        kinds = [type(o) for o in runtime.scheduler.observers]
        assert kinds == [EventsFeed, MetricsObserver, TracingObserver]
    finally:
        telemetry.close()
