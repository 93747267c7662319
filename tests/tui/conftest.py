"""A fixed little world for the control centre: three workflows, two agents, one past command.

Everything is deterministic (fake clock, fixed ids, histories written straight into a SQLite
store) so screens can be snapshot-tested; a real scheduler on a memory bus carries out the
commands the tests queue through the UI.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.messages import Event, encode
from agentdeck.core.models import (
    AgentRecord,
    AgentState,
    Change,
    Command,
    CommandStatus,
    ErrorInfo,
)
from agentdeck.core.ports import BreakerRecord, OutgoingTask
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.spec import SpecLimits, build, parse_spec
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W
from agentdeck.core.tracing import Tracing
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.sources import Sources

START = 1_700_000_000.0
WF_FAILED = "a1b2c3d4e5f6"
WF_RUNNING = "0f1e2d3c4b5a"
WF_DONE = "99aa88bb77cc"
DEAD_LETTER = "dead1e77e001"
WF_LARGE = "1a2b3c4d5e6f"
LARGE_PARTS = 150

ETL = """
name: nightly-etl
tasks:
  - {key: extract, capability: echo, input: {source: s3://bucket/day}}
  - {key: transform, capability: chaos, needs: [extract], input: {rows: 1000}}
  - {key: load, capability: echo, needs: [transform]}
  - {key: report, capability: echo, needs: [load]}
"""
FAN = """
name: fan-out
tasks:
  - {key: split, capability: echo}
  - {key: p0, capability: echo, needs: [split]}
  - {key: p1, capability: echo, needs: [split]}
  - {key: p2, capability: sleep, needs: [split]}
  - {key: p3, capability: sleep, needs: [split]}
  - {key: p4, capability: chaos, needs: [split]}
  - {key: p5, capability: chaos, needs: [split]}
  - {key: join, capability: echo, needs: [p0, p1, p2, p3, p4, p5]}
"""
AB = """
name: a-to-b
tasks:
  - {key: a, capability: echo, input: {text: hi}}
  - {key: b, capability: echo, needs: [a]}
"""


@dataclass
class World:
    """The store, bus, registry and scheduler behind the app, and the clock they share."""

    store: SqliteStore
    bus: MemoryBus
    registry: MemoryRegistry
    scheduler: Scheduler
    clock: FakeClock
    sources: Sources
    tracing: Tracing

    async def close(self) -> None:
        """Stop everything."""
        self.tracing.shutdown()
        await self.scheduler.stop()
        await self.bus.close()
        await self.registry.close()
        await self.store.close()

    async def status(self, task_id: str) -> T:
        """A task's status in the Store."""
        return (await self.store.get_task(task_id)).status

    async def publish(self, topic: str, **data: Any) -> None:
        """Publish an event on the bus's events stream, as an agent or the scheduler would."""
        await self.bus.publish_event(encode(Event(topic=topic, at=self.clock.now(), data=data)))


async def _walk(
    store: SqliteStore, clock: FakeClock, task_id: str, steps: list[tuple[T, dict[str, Any]]]
) -> None:
    """Move a task through ``steps`` (status, values), one compare-and-set each, a second apart."""
    current = (await store.get_task(task_id)).status
    for to, values in steps:
        clock.advance(1)
        await store.apply([Change(task_id, to, frozenset({current}), values=values)], clock.now())
        current = to


def _attempt(n: int, agent: str) -> list[tuple[T, dict[str, Any]]]:
    return [(T.DISPATCHED, {"attempt": n}), (T.RUNNING, {"agent_id": agent})]


async def _dead_letter(bus: MemoryBus, capability: str, body: bytes, reason: str) -> None:
    """Publish a message and reject it, so it becomes a dead letter (with a fixed id)."""
    await bus.publish_tasks([OutgoingTask(capability, body, {})])
    deliveries = bus.consume_tasks([capability], prefetch=1)
    delivery = await anext(deliveries)
    with mock.patch("agentdeck.backends.memory.new_id", return_value=DEAD_LETTER):
        await delivery.reject(reason)
    await deliveries.aclose()  # type: ignore[attr-defined]


async def _traced(store: SqliteStore, clock: FakeClock) -> Tracing:
    """Spans for the failed ETL workflow, as the scheduler would record them (fixed times)."""
    tracing = Tracing("agentdeck", "node-1", env={})
    workflow = await store.get_workflow(WF_FAILED)
    for key, start, end in (("extract", 1, 3), ("transform", 4, 20)):
        task = await store.get_task(f"{WF_FAILED}/{key}")
        tracing.attempt_dispatched(task, workflow.created_at + start)
        tracing.tasks_changed([task], workflow.created_at + end)
    tracing.workflow_finished(workflow, workflow.created_at + 21)
    return tracing


async def build_world(path: Path, clock: FakeClock) -> World:
    """Open the backends and write the fixed world into them."""
    store = SqliteStore(path, clock=clock)
    bus = MemoryBus(clock=clock)
    registry = MemoryRegistry(clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    limits = SpecLimits()
    for wid, text in ((WF_DONE, AB), (WF_RUNNING, FAN), (WF_FAILED, ETL)):
        clock.advance(10)
        workflow, tasks = build(parse_spec(text, limits=limits), workflow_id=wid, now=clock.now())
        await store.create_workflow(workflow, tasks)

    ok = {"ok": True}
    # A success releases its dependents (the store does that): no explicit blocked -> ready.
    for key in ("a", "b"):
        await _walk(
            store,
            clock,
            f"{WF_DONE}/{key}",
            [*_attempt(1, "echo-1"), (T.SUCCEEDED, {"output": ok})],
        )
    await store.set_workflow_status(WF_DONE, {W.RUNNING}, W.SUCCEEDED, clock.now())

    fan = f"{WF_RUNNING}/"
    await _walk(store, clock, fan + "split", [*_attempt(1, "echo-1"), (T.SUCCEEDED, {})])
    await _walk(store, clock, fan + "p0", [*_attempt(1, "echo-1"), (T.SUCCEEDED, {})])
    await _walk(store, clock, fan + "p2", _attempt(1, "sleep-1"))
    await _walk(store, clock, fan + "p3", [(T.DISPATCHED, {"attempt": 1})])
    boom = ErrorInfo("ChaosError", "chaos struck", retryable=True)
    await _walk(
        store,
        clock,
        fan + "p4",
        [*_attempt(1, "chaos-1"), (T.RETRYING, {"error": boom, "not_before": START + 999})],
    )
    await _walk(
        store,
        clock,
        fan + "p5",
        [
            *_attempt(1, "chaos-1"),
            (T.FAILED, {"error": ErrorInfo("ChaosError", "chaos struck", retryable=False)}),
        ],
    )

    etl = f"{WF_FAILED}/"
    await _walk(
        store, clock, etl + "extract", [*_attempt(1, "echo-1"), (T.SUCCEEDED, {"output": ok})]
    )
    bad = ErrorInfo("ValueError", "bad row 7", retryable=True)
    for n in (1, 2):
        await _walk(
            store,
            clock,
            etl + "transform",
            [*_attempt(n, "chaos-1"), (T.RETRYING, {"error": bad}), (T.READY, {})],
        )
    await _walk(
        store, clock, etl + "transform", [*_attempt(3, "chaos-1"), (T.FAILED, {"error": bad})]
    )
    for key in ("load", "report"):
        await _walk(store, clock, etl + key, [(T.SKIPPED, {})])
    await store.set_workflow_status(WF_FAILED, {W.RUNNING}, W.FAILED, clock.now())

    for agent in (
        AgentRecord(
            "echo-1",
            "echo@node-1",
            ("echo",),
            8,
            AgentState.UP,
            START,
            clock.now(),
            2,
            "node-1",
            101,
            40,
            0,
        ),
        AgentRecord(
            "chaos-1",
            "chaos@node-2",
            ("chaos",),
            4,
            AgentState.DRAINING,
            START,
            clock.now(),
            1,
            "node-2",
            202,
            12,
            5,
        ),
    ):
        await registry.register(agent, ttl=3600)
    done = Command(
        "c0ffee000001",
        "pause",
        WF_RUNNING,
        START + 5,
        actor="cli@node-1",
        status=CommandStatus.DONE,
        result=f"paused workflow {WF_RUNNING}",
        finished_at=START + 6,
    )
    await store.add_command(done)
    await store.finish_command(done)

    for name, state, data in (
        ("capability:echo", "closed", {"consecutive_failures": 0}),
        (
            "capability:chaos",
            "open",
            {
                "consecutive_failures": 5,
                "opened_at": clock.now() - 30,
                "changed_at": clock.now() - 30,
                "reason": "5 failures in a row (threshold 5)",
            },
        ),
    ):
        await registry.put_breaker(BreakerRecord(name, state, data, 1), expected_version=None)

    await _dead_letter(bus, "echo", b'{"not": "a task"}', "malformed task message")
    scheduler = Scheduler(store, bus, registry, clock, node="node-1")
    client = Client(store, clock, actor="tui:test@node-1", poll=0.001)
    tracing = await _traced(store, clock)
    sources = Sources(client, registry, clock, bus=bus, recent=tracing.recent)
    return World(store, bus, registry, scheduler, clock, sources, tracing)


async def add_large_workflow(world: World) -> None:
    """A fan-out of LARGE_PARTS tasks in mixed states (for the DAG view of a big workflow).

    Kept out of :func:`build_world` so the other screens' pictures do not change with it.
    """
    store, clock = world.store, world.clock
    parts = [f"p{i:03}" for i in range(LARGE_PARTS)]
    lines = ["name: big-fan-out", "tasks:", "  - {key: split, capability: echo}"]
    lines += [f"  - {{key: {p}, capability: echo, needs: [split]}}" for p in parts]
    lines.append(f"  - {{key: join, capability: echo, needs: [{', '.join(parts)}]}}")
    limits = SpecLimits()
    clock.advance(10)
    workflow, tasks = build(
        parse_spec("\n".join(lines), limits=limits), workflow_id=WF_LARGE, now=clock.now()
    )
    await store.create_workflow(workflow, tasks)
    await _walk(store, clock, f"{WF_LARGE}/split", [*_attempt(1, "echo-1"), (T.SUCCEEDED, {})])

    async def move(keys: list[str], steps: list[tuple[T, dict[str, Any]]]) -> None:
        current = T.READY
        for to, values in steps:
            clock.advance(1)
            ids = [f"{WF_LARGE}/{k}" for k in keys]
            await store.apply(
                [Change(i, to, frozenset({current}), values=values) for i in ids], clock.now()
            )
            current = to

    bad = ErrorInfo("ChaosError", "chaos struck", retryable=False)
    await move(parts[:100], [*_attempt(1, "echo-1"), (T.SUCCEEDED, {})])
    await move(parts[100:104], [*_attempt(1, "echo-1"), (T.FAILED, {"error": bad})])
    await move(parts[104:110], [*_attempt(1, "echo-1"), (T.RETRYING, {"error": bad})])
    await move(parts[110:130], _attempt(1, "echo-1"))


def make_app(world: World, *, follow: bool = False, **kwargs: Any) -> AgentdeckApp:
    """An app over an already-built world (Pilot tests: same event loop as the test);
    ``follow``: it reads the world's events stream (what :meth:`World.publish` sends)."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        yield replace(world.sources, events=world.bus.subscribe_events) if follow else world.sources

    return AgentdeckApp(connect, refresh_interval=None, **kwargs)


def fresh_app(
    path: Path, *, extra: Callable[[World], Awaitable[None]] | None = None, **kwargs: Any
) -> AgentdeckApp:
    """An app that builds the world itself on start (snapshots run the app in their own loop);
    ``extra`` adds to the world before the app sees it."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        world = await build_world(path, FakeClock(START))
        try:
            if extra is not None:
                await extra(world)
            yield world.sources
        finally:
            await world.close()

    return AgentdeckApp(connect, refresh_interval=None, **kwargs)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """The fixed world on a fake clock."""
    w = await build_world(tmp_path / "agentdeck.db", FakeClock(START))
    yield w
    await w.close()


@pytest.fixture
def app_for(world: World) -> Callable[..., AgentdeckApp]:
    """Build an app over the world (``read_only=``, ``theme=``)."""
    return lambda **kwargs: make_app(world, **kwargs)
