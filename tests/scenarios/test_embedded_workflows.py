"""Whole workflows on the embedded default: scheduler, real agent workers, SQLite, memory bus."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentdeck.core.clock import SystemClock
from agentdeck.core.models import Workflow
from agentdeck.core.runtime import Runtime
from agentdeck.core.settings import Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.tui.wiring import build_runtime

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    settings = Settings.load(
        config_path=None,
        agents=[
            {"kind": "echo", "concurrency": 16},
            {"kind": "sleep", "concurrency": 4},
            {"kind": "chaos", "concurrency": 4},
        ],
        scheduler={"poll_interval": 0.05, "lost_grace": 1.0},
    )
    async with build_runtime(settings, clock=SystemClock()) as rt:
        yield rt


async def run(rt: Runtime, spec: dict[str, Any] | str, timeout: float = 60) -> Workflow:
    """Submit a spec (dict or example file name) and wait for the workflow to finish."""
    text = (ROOT / "examples" / spec).read_text() if isinstance(spec, str) else yaml.safe_dump(spec)
    workflow = await rt.client.submit(parse_spec(text, fmt="yaml", limits=SpecLimits()))
    return await rt.client.wait(workflow.id, timeout)


async def statuses(rt: Runtime, workflow_id: str) -> dict[str, TaskStatus]:
    return {
        t.key: t.status for t in await rt.store.list_tasks(workflow_id=workflow_id, limit=100_000)
    }


async def test_a_to_b_hands_a_output_to_b(runtime: Runtime) -> None:
    """The A→B example: B's input carries A's output, no person in the loop."""
    wf = await run(runtime, "a_to_b.yaml")
    assert wf.status == WorkflowStatus.SUCCEEDED
    a = await runtime.store.get_task(f"{wf.id}/a")
    b = await runtime.store.get_task(f"{wf.id}/b")
    assert a.output["input"] == {"text": "hello from A"}
    assert b.output["upstream"]["a"] == a.output


async def test_diamond_joins_both_branches(runtime: Runtime) -> None:
    """The join of a diamond runs once, after both branches, and sees both outputs."""
    wf = await run(runtime, "diamond.yaml")
    assert wf.status == WorkflowStatus.SUCCEEDED
    join = await runtime.store.get_task(f"{wf.id}/join")
    assert set(join.output["upstream"]) == {"left", "right"}
    events = await runtime.store.task_events(join.id)
    assert [e.kind for e in events].count("dispatched") == 1


async def test_fan_out_of_1000_with_a_join(runtime: Runtime) -> None:
    """1,000 parallel tasks and a join that waits for all of them."""
    tasks: list[dict[str, Any]] = [{"key": "split", "capability": "echo"}]
    tasks += [
        {"key": f"p{i}", "capability": "echo", "needs": ["split"], "input": {"i": i}}
        for i in range(1000)
    ]
    tasks.append({"key": "join", "capability": "echo", "needs": [f"p{i}" for i in range(1000)]})
    wf = await run(runtime, {"name": "fan-out-1000", "tasks": tasks}, timeout=120)
    assert wf.status == WorkflowStatus.SUCCEEDED
    join = await runtime.store.get_task(f"{wf.id}/join")
    outputs = runtime.scheduler.outputs
    assert outputs is not None
    output = await outputs.resolve(join.output)  # ~100 kB: kept by reference
    assert len(output["upstream"]) == 1000
    assert output["upstream"]["p999"]["input"] == {"i": 999}


async def test_chain_of_100_runs_in_order(runtime: Runtime) -> None:
    """A chain of 100: each task starts only after the one before it succeeded."""
    tasks = [
        {
            "key": f"c{i:03d}",
            "capability": "echo",
            "input": {"i": i},
            **({"needs": [f"c{i - 1:03d}"]} if i else {}),
        }
        for i in range(100)
    ]
    wf = await run(runtime, {"name": "chain-100", "tasks": tasks})
    assert wf.status == WorkflowStatus.SUCCEEDED
    done = [await runtime.store.get_task(f"{wf.id}/c{i:03d}") for i in range(100)]
    for prev, cur in itertools.pairwise(done):
        assert prev.finished_at is not None and cur.started_at is not None
        assert prev.finished_at <= cur.started_at
        assert cur.output["upstream"][prev.key] == prev.output


async def test_failure_skips_dependents_and_fails_the_workflow(runtime: Runtime) -> None:
    """A permanent failure: the task fails, everything downstream is skipped, the workflow fails."""
    wf = await run(
        runtime,
        {
            "name": "doomed",
            "tasks": [
                {
                    "key": "bad",
                    "capability": "chaos",
                    "input": {"fail_rate": 1.0, "permanent": True},
                },
                {"key": "next", "capability": "echo", "needs": ["bad"]},
                {"key": "last", "capability": "echo", "needs": ["next"]},
                {"key": "free", "capability": "echo"},
            ],
        },
    )
    assert wf.status == WorkflowStatus.FAILED
    assert await statuses(runtime, wf.id) == {
        "bad": TaskStatus.FAILED,
        "next": TaskStatus.SKIPPED,
        "last": TaskStatus.SKIPPED,
        "free": TaskStatus.SUCCEEDED,
    }
    bad = await runtime.store.get_task(f"{wf.id}/bad")
    assert bad.attempt == 1 and bad.error is not None and not bad.error.retryable


async def test_retry_after_chaos_failures(runtime: Runtime) -> None:
    """The retries example: two transient failures, then success on the third attempt."""
    wf = await run(runtime, "retries.yaml")
    assert wf.status == WorkflowStatus.SUCCEEDED
    flaky = await runtime.store.get_task(f"{wf.id}/flaky")
    assert flaky.attempt == 3
    kinds = [e.kind for e in await runtime.store.task_events(flaky.id)]
    assert kinds.count("retrying") == 2


async def test_task_outliving_its_timeout_fails_that_attempt(runtime: Runtime) -> None:
    """A handler still running at its timeout fails that attempt as a timeout."""
    wf = await run(
        runtime,
        {
            "name": "slow",
            "tasks": [
                {
                    "key": "slow",
                    "capability": "sleep",
                    "input": {"seconds": 30},
                    "timeout": 0.2,
                    "retry": {"max_attempts": 2, "initial_delay": 0.05, "jitter": 0},
                },
            ],
        },
    )
    assert wf.status == WorkflowStatus.FAILED
    slow = await runtime.store.get_task(f"{wf.id}/slow")
    assert slow.attempt == 2
    assert slow.error is not None and slow.error.kind == "timeout"


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Poll until true; real agents run here, so real time passes."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


async def submit(rt: Runtime, spec: dict[str, Any]) -> Workflow:
    return await rt.client.submit(parse_spec(yaml.safe_dump(spec), fmt="yaml", limits=SpecLimits()))


async def test_cancel_mid_flight_stops_the_workflow(runtime: Runtime) -> None:
    """Cancelling a running workflow cancels what has not finished, including running tasks."""
    workflow = await submit(
        runtime,
        {
            "name": "long",
            "tasks": [
                {"key": "long", "capability": "sleep", "input": {"seconds": 30}},
                {"key": "after", "capability": "echo", "needs": ["long"]},
            ],
        },
    )

    async def running() -> bool:
        return (await runtime.store.get_task(f"{workflow.id}/long")).status == TaskStatus.RUNNING

    await wait_until(running)
    command = await runtime.client.command("cancel", workflow.id, wait=10)
    assert command.result.startswith("cancelled"), command.result
    wf = await runtime.client.wait(workflow.id, 10)
    assert wf.status == WorkflowStatus.CANCELLED
    assert set((await statuses(runtime, wf.id)).values()) == {TaskStatus.CANCELLED}


async def test_pause_then_resume(runtime: Runtime) -> None:
    """A paused workflow lets running work finish but dispatches nothing new until resumed."""
    workflow = await submit(
        runtime,
        {
            "name": "pausable",
            "tasks": [
                {"key": "one", "capability": "sleep", "input": {"seconds": 0.3}},
                {"key": "two", "capability": "echo", "needs": ["one"]},
            ],
        },
    )

    async def one_is(status: TaskStatus) -> bool:
        return (await runtime.store.get_task(f"{workflow.id}/one")).status == status

    await wait_until(lambda: one_is(TaskStatus.RUNNING))
    await runtime.client.command("pause", workflow.id, wait=10)
    await wait_until(lambda: one_is(TaskStatus.SUCCEEDED))
    seen = runtime.scheduler.rounds

    async def rounds_passed() -> bool:  # several scheduler rounds: nothing dispatched meanwhile
        return runtime.scheduler.rounds >= seen + 3

    await wait_until(rounds_passed)
    two = await runtime.store.get_task(f"{workflow.id}/two")
    assert two.status == TaskStatus.READY
    assert (await runtime.store.get_workflow(workflow.id)).status == WorkflowStatus.PAUSED
    await runtime.client.command("resume", workflow.id, wait=10)
    wf = await runtime.client.wait(workflow.id, 30)
    assert wf.status == WorkflowStatus.SUCCEEDED
