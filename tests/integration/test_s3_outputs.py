"""An agent keeps its large output in S3 (moto, from ``s3_endpoint``) and reports only the
reference; another store resolves it, and a dependent's agent reads it when its handler does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import boto3
import pytest

from agentdeck.agents.context import TaskContext
from agentdeck.agents.worker import Worker
from agentdeck.backends import open_blobs
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.messages import Report, TaskMessage, decode, encode
from agentdeck.core.models import JSON, new_id
from agentdeck.core.outputs import OutputStore, is_ref
from agentdeck.core.ports import OutgoingTask
from agentdeck.core.settings import Settings
from agentdeck.tui.wiring import agent_outputs

pytestmark = pytest.mark.integration

OUTPUT = {"rows": [{"id": i, "text": f"row {i} of a large result"} for i in range(60_000)]}
"""About 2 MB of JSON."""


async def test_an_agent_keeps_a_large_output_in_s3_and_reports_the_reference(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's blob store comes from its settings (blob_url); its report is a few hundred
    bytes; the object is under the scheduler's key scheme, and another store resolves it."""
    bucket = f"test-{new_id()}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    url = f"s3://{bucket}/deck?endpoint_url={s3_endpoint}&region=us-east-1"
    monkeypatch.chdir(tmp_path)
    clock = FakeClock()
    blobs, kept = agent_outputs(Settings(home=tmp_path, blob_url=url), clock)
    assert kept.limit == 65_536  # a configured, shared store: the agent keeps its outputs
    await blobs.start()
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await bus.start()
    reports: list[tuple[Report, int]] = []
    ended = asyncio.Event()

    async def publish_report(body: bytes, headers: Mapping[str, str]) -> None:
        report = decode(body, Report)
        reports.append((report, len(body)))
        if report.kind != "started":
            ended.set()

    bus.publish_report = publish_report  # type: ignore[method-assign]

    async def make(ctx: TaskContext) -> JSON:
        return OUTPUT

    outputs = OutputStore(blobs, limit=1_048_576)
    worker = Worker(bus, registry, {"make": make}, name="w", clock=clock, outputs=outputs)
    message = TaskMessage(
        task_id="wf/a",
        workflow_id="wf",
        key="a",
        capability="make",
        attempt=1,
        timeout=60,
        dispatched_at=0.0,
    )
    await bus.publish_tasks([OutgoingTask("make", encode(message), {})])
    running = asyncio.create_task(worker.run())
    scheduler_blobs = open_blobs(url, clock=clock)
    await scheduler_blobs.start()
    try:
        await asyncio.wait_for(ended.wait(), 30)  # real S3 calls: bounded real time
        ((report, size),) = [(r, n) for r, n in reports if r.kind != "started"]
        assert report.kind == "succeeded" and is_ref(report.output)
        assert report.output["$blob"] == "outputs/wf/a/attempt-1.json.gz"
        assert size < 1000 < report.output["size"] == len(json.dumps(OUTPUT, separators=(",", ":")))
        assert await OutputStore(scheduler_blobs, limit=0).resolve(report.output) == OUTPUT
    finally:
        await worker.stop(0)
        await running
        await bus.close()
        await scheduler_blobs.close()
        await blobs.close()


async def test_an_agent_reads_an_upstream_reference_from_s3_only_when_its_handler_does(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dependent's message carries the reference; the agent on the same S3 store fetches
    the object when its handler reads it (synchronously: on a loop of its own), once, and
    the next task reading it is served from the agent's cache."""
    bucket = f"test-{new_id()}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    url = f"s3://{bucket}/deck?endpoint_url={s3_endpoint}&region=us-east-1"
    monkeypatch.chdir(tmp_path)
    clock = FakeClock()
    writer_blobs = open_blobs(url, clock=clock)
    agent_store, _ = agent_outputs(Settings(home=tmp_path, blob_url=url), clock)
    await writer_blobs.start()
    await agent_store.start()
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await bus.start()
    results: list[Report] = []
    two_done = asyncio.Event()

    async def publish_report(body: bytes, headers: Mapping[str, str]) -> None:
        report = decode(body, Report)
        if report.kind != "started":
            results.append(report)
            if len(results) == 2:
                two_done.set()

    bus.publish_report = publish_report  # type: ignore[method-assign]

    async def count_rows(ctx: TaskContext) -> JSON:
        a = ctx.upstream["a"]
        assert isinstance(a, dict)
        return len(a["rows"])

    ref = await OutputStore(writer_blobs, limit=1_048_576).offload("wf/a", 1, OUTPUT)
    assert is_ref(ref)
    outputs = OutputStore(agent_store, limit=1_048_576)
    worker = Worker(bus, registry, {"count": count_rows}, name="w", clock=clock, outputs=outputs)
    messages = [
        TaskMessage(
            task_id=f"wf/{key}",
            workflow_id="wf",
            key=key,
            capability="count",
            attempt=1,
            upstream={"a": ref},
            timeout=60,
            dispatched_at=0.0,
        )
        for key in ("b", "c")
    ]
    await bus.publish_tasks([OutgoingTask("count", encode(m), {}) for m in messages])
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(two_done.wait(), 30)  # real S3 calls: bounded real time
        assert [(r.kind, r.output) for r in results] == [("succeeded", len(OUTPUT["rows"]))] * 2
        assert outputs.fetched == 1 and outputs.cache.hits == 1
    finally:
        await worker.stop(0)
        await running
        await bus.close()
        await agent_store.close()
        await writer_blobs.close()
