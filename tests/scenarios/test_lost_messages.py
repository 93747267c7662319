"""Nothing stalls when the bus loses a message: every dispatched attempt has a deadline.

A bus that drops chosen messages on purpose (after "publishing" them, as a broker that lost a
confirmed message would) runs a workflow with real agent workers and the real scheduler, on the
embedded default and on RabbitMQ. The task message of ``a``'s first attempt never reaches an
agent; the result report of ``b``'s first attempt never reaches the scheduler. Both attempts end
as ``lost`` and are retried; the workflow finishes with no operator action.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentdeck import backends
from agentdeck.backends.memory import MemoryBus
from agentdeck.backends.rabbitmq import RabbitBus
from agentdeck.core.clock import SystemClock
from agentdeck.core.messages import Report, TaskMessage, decode
from agentdeck.core.models import new_id
from agentdeck.core.ports import OutgoingTask
from agentdeck.core.settings import Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.tui.wiring import build_runtime
from tests.conftest import require_service

SPEC = {
    "name": "lossy",
    "tasks": [
        {"key": "a", "capability": "echo", "input": {"n": 1}},
        {"key": "b", "capability": "echo", "needs": ["a"], "timeout": 2},
    ],
}


class Dropper:
    """Drops the task message of ``a``'s attempt 1 and the result report of ``b``'s attempt 1,
    once each; remembers what it dropped."""

    dropped: list[str]

    def _keep_tasks(self, messages: Sequence[OutgoingTask]) -> list[OutgoingTask]:
        kept = []
        for m in messages:
            task = decode(m.body, TaskMessage)
            if (task.key, task.attempt) == ("a", 1) and "task a/1" not in self.dropped:
                self.dropped.append("task a/1")
                continue
            kept.append(m)
        return kept

    def _keep_report(self, body: bytes) -> bool:
        report = decode(body, Report)
        lost = report.kind == "succeeded" and report.task_id.endswith("/b") and report.attempt == 1
        if lost and "report b/1" not in self.dropped:
            self.dropped.append("report b/1")
            return False
        return True


class LossyMemoryBus(Dropper, MemoryBus):
    dropped: list[str] = []

    async def publish_tasks(self, messages: Sequence[OutgoingTask]) -> None:
        await super().publish_tasks(self._keep_tasks(messages))

    async def publish_report(self, body: bytes, headers: Any) -> None:
        if self._keep_report(body):
            await super().publish_report(body, headers)


class LossyRabbitBus(Dropper, RabbitBus):
    dropped: list[str] = []

    async def publish_tasks(self, messages: Sequence[OutgoingTask]) -> None:
        await super().publish_tasks(self._keep_tasks(messages))

    async def publish_report(self, body: bytes, headers: Any) -> None:
        if self._keep_report(body):
            await super().publish_report(body, headers)


@pytest.mark.parametrize("engine", ["memory", "rabbitmq"])
async def test_a_lost_task_message_and_a_lost_report_are_retried_and_the_workflow_finishes(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both lost attempts fail as ``lost`` at their deadline (``b``'s agent may have skipped
    its ``started`` report for so short a task, so either deadline may be the one), their
    second attempts succeed, and the workflow finishes."""
    if engine == "rabbitmq":
        require_service("RabbitMQ", "127.0.0.1", 5672)
        bus_class: type[Dropper] = LossyRabbitBus
        bus_url = f"amqp://guest:guest@127.0.0.1:5672/?prefix=lossy-{new_id()}"
        monkeypatch.setitem(backends.BUS, "amqp", f"{__name__}:LossyRabbitBus")  # type: ignore[index]
    else:
        bus_class = LossyMemoryBus
        bus_url = "memory://"
        monkeypatch.setitem(backends.BUS, "memory", f"{__name__}:LossyMemoryBus")  # type: ignore[index]
    monkeypatch.setattr(bus_class, "dropped", [])
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    settings = Settings.load(
        config_path=None,
        bus_url=bus_url,
        agents=[{"kind": "echo", "concurrency": 2}],
        scheduler={
            "poll_interval": 0.05,
            "lost_grace": 0.5,
            "heartbeat_interval": 0.2,
            "agent_ttl": 2.0,
            "lease_ttl": 2.0,
            "dispatch_timeout": 1.0,
        },
        retry={"echo": {"initial_delay": 0.1, "jitter": 0.0}},
    )
    async with build_runtime(settings, clock=SystemClock()) as rt:
        text = yaml.safe_dump(SPEC)
        workflow = await rt.client.submit(parse_spec(text, fmt="yaml", limits=SpecLimits()))
        done = await rt.client.wait(workflow.id, timeout=60)
        assert done.status == WorkflowStatus.SUCCEEDED
        assert bus_class.dropped == ["task a/1", "report b/1"]
        for key, because in (("a", "of dispatch"), ("b", "")):
            task = await rt.store.get_task(f"{workflow.id}/{key}")
            assert (task.status, task.attempt) == (TaskStatus.SUCCEEDED, 2)
            failures = [
                e for e in await rt.store.task_events(task.id) if e.kind == TaskStatus.RETRYING
            ]
            assert len(failures) == 1
            assert failures[0].detail["error"]["kind"] == "lost"
            assert because in failures[0].detail["error"]["message"]
        if engine == "rabbitmq":
            await rt.bus.delete_topology()  # type: ignore[attr-defined]
