"""The worker's log lines on an attempt: the task's ids on them, the logging setup followed
when it changes, and nothing a handler binds carried into the next job."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest
import structlog

from agentdeck.agents.context import TaskContext
from agentdeck.core.clock import FakeClock
from agentdeck.core.logs import configure_logging
from agentdeck.core.messages import TaskMessage, batch
from agentdeck.core.models import JSON
from tests.unit.test_worker import CAP, Env, eventually, message


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


async def test_lines_follow_a_logging_setup_changed_while_the_worker_runs(env: Env) -> None:
    """A task run under one logging setup, then one after configure_logging() replaced it:
    the second's lines, its handler's too, go where the new setup says, with the task's ids
    (the worker keeps no stale logger). conftest restores the setup after the test."""

    async def talk(ctx: TaskContext) -> JSON:
        ctx.log.warning("handler_said")
        return None

    worker = await env.start({CAP: talk})
    await env.publish(message("a"))
    await eventually(lambda: worker.succeeded == 1)
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    await env.publish(message("b"))
    await eventually(lambda: worker.succeeded == 2)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    said = [line for line in lines if line["event"] == "handler_said"]
    assert [(line["task_id"], line["attempt"], line["agent"]) for line in said] == [
        ("wf/b", 1, worker.id)
    ]
    done = [line for line in lines if line["event"] == "task_succeeded"]
    assert [(line["task_id"], line["workflow_id"]) for line in done] == [("wf/b", "wf")]


async def test_what_a_handler_binds_does_not_reach_the_next_job(env: Env) -> None:
    """One slot, three tasks in one message: a handler binds a context variable of its own;
    the job that takes the slot after it does not see it (each job starts from the worker's
    context, not its predecessor's)."""
    seen: dict[str, object] = {}

    async def binds(ctx: TaskContext) -> JSON:
        seen[ctx.key] = structlog.contextvars.get_contextvars().get("leak")
        structlog.contextvars.bind_contextvars(leak=ctx.key)
        await asyncio.sleep(0)
        return None

    worker = await env.start({CAP: binds}, concurrency=1)
    await env.publish(batch(TaskMessage, [message(key) for key in "abc"]))
    await eventually(lambda: worker.succeeded == 3)
    assert seen == {"a": None, "b": None, "c": None}
