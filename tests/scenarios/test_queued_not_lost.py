"""Queued is not lost: a backlog that outlives ``dispatch_timeout`` drains with no attempt
failed as ``lost``, on RabbitMQ.

The backlog sits in the broker's queue while the registry shows an agent of the capability
with free slots that takes nothing (as a busy agent's heartbeat can: one running 0-second
tasks shows free slots while thousands of its messages wait). Before the scheduler asked the
bus how many messages wait, every one of these attempts was failed as lost and sent again.
Once the backlog has waited several dispatch timeouts, a real agent starts and runs it all,
each task at its first attempt.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentdeck.core.clock import SystemClock
from agentdeck.core.models import AgentRecord, AgentState, new_id
from agentdeck.core.settings import AgentSpec, Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.tui.wiring import build_runtime, build_worker
from tests.conftest import require_service

TASKS = 30
DISPATCH_TIMEOUT = 0.5
#: Bound on every wait: hitting it means a bug, not a slow machine.
LIMIT = 60.0


def wide(n: int) -> str:
    lines = [f"  - {{key: t{i}, capability: echo, input: {{n: {i}}}}}" for i in range(n)]
    return "name: backlog\ntasks:\n" + "\n".join(lines) + "\n"


async def test_a_backlog_longer_than_the_dispatch_timeout_drains_with_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    settings = Settings.load(
        config_path=None,
        bus_url=f"amqp://guest:guest@127.0.0.1:5672/?prefix=queued-{new_id()}",
        scheduler={
            "poll_interval": 0.05,
            "heartbeat_interval": 0.2,
            "agent_ttl": 2.0,
            "lease_ttl": 2.0,
            "dispatch_timeout": DISPATCH_TIMEOUT,
        },
    )
    clock = SystemClock()
    async with build_runtime(settings, clock=clock, with_agents=False) as rt:
        try:
            now = clock.now()
            behind = AgentRecord("behind-1", "behind", ("echo",), 4, AgentState.UP, now, now)
            await rt.registry.register(behind, ttl=LIMIT)
            spec = parse_spec(wide(TASKS), fmt="yaml", limits=SpecLimits())
            workflow = await rt.client.submit(spec)
            first = f"{workflow.id}/t0"

            async def waited_in_the_queue() -> list[str]:
                events = await rt.store.task_events(first)
                return [
                    e.detail["reason"]
                    for e in events
                    if e.kind == "waiting" and "wait in the queue" in e.detail["reason"]
                ]

            async with asyncio.timeout(LIMIT):  # until it has waited 1 + 2 + 4 timeouts
                while len(await waited_in_the_queue()) < 3:
                    task = await rt.store.get_task(first)
                    assert task.attempt <= 1 and task.error is None, task.error  # not lost
                    await asyncio.sleep(0.05)
            assert clock.now() - now > 3 * DISPATCH_TIMEOUT
            assert (await rt.store.get_task(first)).status == TaskStatus.DISPATCHED

            spec_echo = AgentSpec(kind="echo", concurrency=4)
            worker = build_worker(spec_echo, rt.bus, rt.registry, clock, settings)
            running = asyncio.create_task(worker.run())
            try:
                done = await rt.client.wait(workflow.id, timeout=LIMIT)
            finally:
                await worker.stop(grace=0)
                await running
            assert done.status == WorkflowStatus.SUCCEEDED
            tasks = await rt.store.list_tasks(workflow_id=workflow.id, limit=TASKS)
            assert len(tasks) == TASKS
            assert {(t.status, t.attempt) for t in tasks} == {(TaskStatus.SUCCEEDED, 1)}
            for task in tasks:
                kinds = {e.kind for e in await rt.store.task_events(task.id)}
                assert TaskStatus.RETRYING not in kinds and TaskStatus.FAILED not in kinds
        finally:
            await rt.registry.deregister("behind-1")
            await rt.bus.delete_topology()  # type: ignore[attr-defined]
