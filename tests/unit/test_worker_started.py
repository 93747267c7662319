"""The worker's deferred ``started`` report (``started_after``): short tasks skip it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentdeck.agents.builtin import echo
from agentdeck.agents.reports import Reporter
from agentdeck.backends.memory import MemoryBus
from agentdeck.core.clock import FakeClock
from agentdeck.core.logs import get_logger
from agentdeck.core.messages import TaskMessage, decode
from tests.unit.test_worker import CAP, Env, Gate, Reports, eventually, message, settle


@pytest.fixture
async def env(clock: FakeClock) -> AsyncIterator[Env]:
    environment = Env(clock)
    await environment.bus.start()
    collector = asyncio.create_task(environment.reports.collect(environment.bus))
    yield environment
    for worker, run in environment.runs:
        await worker.stop(0)
        await run
    collector.cancel()
    await asyncio.gather(collector, return_exceptions=True)
    await environment.bus.close()


async def test_a_task_done_before_started_after_reports_only_its_result(env: Env) -> None:
    """A task that finishes within ``started_after`` goes straight to succeeded: no started."""
    await env.start({CAP: echo.make()}, started_after=0.05)
    await env.publish(message("a"))
    await eventually(lambda: "succeeded" in env.reports.kinds("wf/a"))
    env.clock.advance(1.0)  # the timer, had it survived, would fire now
    await settle()
    assert env.reports.kinds("wf/a") == ["succeeded"]


async def test_a_task_still_running_after_started_after_reports_started_then_its_result(
    env: Env,
) -> None:
    """A task running longer than ``started_after`` reports started when that time is up."""
    gate = Gate()
    await env.start({CAP: gate}, started_after=0.05)
    await env.publish(message("a"))
    await eventually(lambda: gate.started == ["wf/a"])
    await settle()
    assert env.reports.kinds("wf/a") == []
    env.clock.advance(0.05)
    await eventually(lambda: env.reports.kinds("wf/a") == ["started"])
    gate.opened.set()
    await eventually(lambda: env.reports.kinds("wf/a") == ["started", "succeeded"])


async def test_started_reports_not_yet_due_share_one_timer_sent_in_order_of_due(
    clock: FakeClock,
) -> None:
    """The Reporter keeps one timer for every ``started`` report not yet due: each is sent
    when its own time comes (an earlier one added later included), one whose handler ended
    first never is, and once none waits no timer is left behind."""
    bus = MemoryBus.from_url("memory://", clock=clock)
    await bus.start()
    reports = Reports()
    collector = asyncio.create_task(reports.collect(bus))
    reporter = Reporter(bus, clock, "agent-1", get_logger(__name__))
    a, b, c = (decode(message(k), TaskMessage) for k in "abc")
    started_a = await reporter.start_report({}, a, 0.2)
    started_b = await reporter.start_report({}, b, 0.2)
    started_c = await reporter.start_report({}, c, 0.1)  # due first, though added last
    await reporter.end_start_report(started_b)  # b's handler ended in time
    clock.advance(0.15)
    await eventually(lambda: reports.kinds("wf/c") == ["started"])
    assert reports.kinds("wf/a") == []
    clock.advance(0.1)
    await eventually(lambda: reports.kinds("wf/a") == ["started"])
    clock.advance(1.0)
    await settle()
    assert reports.kinds("wf/b") == []
    for started in (started_a, started_c):
        await reporter.end_start_report(started)
    started_d = await reporter.start_report({}, decode(message("d"), TaskMessage), 0.1)
    await reporter.end_start_report(started_d)
    await settle()
    assert [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "Reporter._due"] == []
    collector.cancel()
    await asyncio.gather(collector, return_exceptions=True)
    await bus.close()
