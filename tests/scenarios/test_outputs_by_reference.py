"""A pipeline with large outputs on the embedded default (memory bus, SQLite, blob store in a
local folder): each output is kept in the blob store by the agent that made it, and no
message on the bus carries one, neither a report nor a dependent's task message."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentdeck.core.clock import SystemClock
from agentdeck.core.messages import Report, TaskMessage, decode
from agentdeck.core.models import Workflow
from agentdeck.core.outputs import is_ref
from agentdeck.core.ports import Bus, OutgoingTask
from agentdeck.core.runtime import Runtime
from agentdeck.core.settings import Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import WorkflowStatus
from agentdeck.tui.wiring import build_runtime

LIMIT = 1000
"""output_inline_limit here: bytes of JSON above which an output goes to the blob store."""
STEPS = 12
PAYLOAD = "x" * 3000
"""The first step's input, which every echo step's output carries on (about 3 kB)."""


class BusMeter:
    """Counts the messages and bytes published on ``bus`` by kind, and keeps the task
    messages and reports (wrapping its publish methods)."""

    def __init__(self, bus: Bus) -> None:
        self.bytes: collections.Counter[str] = collections.Counter()
        self.count: collections.Counter[str] = collections.Counter()
        self.tasks: list[TaskMessage] = []
        self.reports: list[Report] = []
        publish_tasks, publish_report = bus.publish_tasks, bus.publish_report

        async def tasks(messages: Sequence[OutgoingTask]) -> None:
            for m in messages:
                self._count("task", m.body)
                self.tasks.append(decode(m.body, TaskMessage))
            await publish_tasks(messages)

        async def report(body: bytes, headers: Mapping[str, str]) -> None:
            self._count("report", body)
            self.reports.append(decode(body, Report))
            await publish_report(body, headers)

        bus.publish_tasks = tasks  # type: ignore[method-assign]
        bus.publish_report = report  # type: ignore[method-assign]

    def _count(self, kind: str, body: bytes) -> None:
        self.count[kind] += 1
        self.bytes[kind] += len(body)


async def run(rt: Runtime, spec: dict[str, Any]) -> Workflow:
    """Submit ``spec`` and wait for the workflow to finish."""
    parsed = parse_spec(yaml.safe_dump(spec), fmt="yaml", limits=SpecLimits())
    return await rt.client.wait((await rt.client.submit(parsed)).id, 60)


@pytest.fixture
async def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.delenv("AGENTDECK_BLOB_URL", raising=False)
    settings = Settings.load(
        config_path=None,
        agents=[{"kind": "echo", "concurrency": 4}],
        scheduler={"poll_interval": 0.05},
        output_inline_limit=LIMIT,
    )
    rt = build_runtime(settings, clock=SystemClock())
    rt.meter = BusMeter(rt.bus)  # type: ignore[attr-defined]
    async with rt:
        yield rt


async def test_a_pipeline_hands_on_references_and_no_message_carries_an_output(
    runtime: Runtime,
) -> None:
    """Twelve echo steps, each output about 3 kB: every output is a reference in the Store,
    every report and task message is small, and the last output, resolved, still holds the
    first step's input twelve levels down."""
    meter: BusMeter = runtime.meter  # type: ignore[attr-defined]
    tasks = [
        {
            "key": f"s{i:02d}",
            "capability": "echo",
            "input": {"payload": PAYLOAD} if i == 0 else {"step": i},
            **({"needs": [f"s{i - 1:02d}"]} if i else {}),
        }
        for i in range(STEPS)
    ]
    wf = await run(runtime, {"name": "refs", "tasks": tasks})
    assert wf.status == WorkflowStatus.SUCCEEDED
    stored = [await runtime.store.get_task(f"{wf.id}/s{i:02d}") for i in range(STEPS)]
    assert all(is_ref(t.output) for t in stored)

    assert meter.count["task"] == STEPS
    first = len(PAYLOAD) + 500  # the first message carries its own input
    assert meter.bytes["task"] < first + LIMIT * (STEPS - 1)
    assert [m.upstream for m in meter.tasks[1:]] == [{p.key: p.output} for p in stored[:-1]]
    assert all(r.output is None or is_ref(r.output) for r in meter.reports)
    assert meter.bytes["report"] < LIMIT * len(meter.reports)

    assert runtime.scheduler.outputs is not None
    value = await runtime.scheduler.outputs.resolve(stored[-1].output)
    for i in reversed(range(1, STEPS)):
        assert isinstance(value, dict) and value["input"] == {"step": i}
        value = value["upstream"][f"s{i - 1:02d}"]
    assert isinstance(value, dict) and value["input"] == {"payload": PAYLOAD}


async def test_small_outputs_still_travel_inline(runtime: Runtime) -> None:
    """Under the limit nothing goes to the blob store: the dependent's message carries the
    output itself."""
    meter: BusMeter = runtime.meter  # type: ignore[attr-defined]
    tasks = [
        {"key": "a", "capability": "echo", "input": {"n": 1}},
        {"key": "b", "capability": "echo", "needs": ["a"]},
    ]
    wf = await run(runtime, {"name": "small", "tasks": tasks})
    assert wf.status == WorkflowStatus.SUCCEEDED
    b_message = next(m for m in meter.tasks if m.key == "b")
    assert b_message.upstream == {"a": {"input": {"n": 1}, "upstream": {}}}
