"""The worker's deferred ``started`` report (``started_after``): short tasks skip it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentdeck.agents.builtin import echo
from agentdeck.core.clock import FakeClock
from tests.unit.test_worker import CAP, Env, Gate, eventually, message, settle


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
