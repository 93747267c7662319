"""Metrics, traces and log fields of a scheduler and a worker in one process (fake clock)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry import trace

from agentdeck.agents.context import TaskContext
from agentdeck.agents.worker import Worker
from agentdeck.backends.files import FileBlobStore
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConfigError, TaskFailed
from agentdeck.core.logs import configure_logging
from agentdeck.core.metrics import (
    Metrics,
    MetricsObserver,
    MetricsSampler,
    MetricsServer,
    backend_reconnected,
)
from agentdeck.core.models import JSON
from agentdeck.core.ports import BreakerRecord
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import WorkflowStatus as W
from agentdeck.core.tracing import (
    Tracing,
    TracingObserver,
    attempt_span_id,
    enabled_by_env,
    workflow_span_id,
    workflow_trace_id,
)
from tests.conftest import IN_CI

SPEC = """
name: telemetry
tasks:
  - {key: a, capability: echo, input: {text: hi}}
  - {key: b, capability: echo, needs: [a]}
  - {key: c, capability: flaky}
  - {key: d, capability: echo, needs: [c]}
"""


async def echo(ctx: TaskContext) -> JSON:
    ctx.log.info("echoing")
    # The span current while the handler runs: the worker's run span.
    return {"echo": ctx.input, "span": trace.get_current_span().get_span_context().span_id}


async def flaky(ctx: TaskContext) -> JSON:
    if ctx.attempt == 1:
        raise TaskFailed("first time unlucky")
    raise TaskFailed("gave up", non_retryable=True)


@dataclass
class Node:
    """A scheduler and a worker sharing one Metrics and one Tracing."""

    store: SqliteStore
    bus: MemoryBus
    registry: MemoryRegistry
    scheduler: Scheduler
    worker: Worker
    client: Client
    clock: FakeClock
    metrics: Metrics
    tracing: Tracing

    async def run_workflow(self, spec: str = SPEC) -> str:
        """Submit ``spec`` and drive rounds (and the clock, for retry delays) until it ends."""
        workflow = await self.client.submit(parse_spec(spec, fmt="yaml", limits=SpecLimits()))
        for _ in range(300):
            await self.scheduler.tick()
            for _ in range(20):
                await asyncio.sleep(0)
            if (await self.store.get_workflow(workflow.id)).status is not W.RUNNING:
                return workflow.id
            self.clock.advance(0.5)
        raise AssertionError("the workflow did not finish")

    def value(self, name: str, **labels: str) -> float:
        """A sample's value (0 when absent)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def node(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Node]:
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    metrics, tracing = Metrics(), Tracing("test", "node-1", env={})
    policy = RetryPolicy(max_attempts=3, initial_delay=1.0, max_delay=1.0, jitter=0.0)
    scheduler = Scheduler(
        store,
        bus,
        registry,
        clock,
        node="node-1",
        config=SchedulerConfig(default_retry=policy),
        observers=[MetricsObserver(metrics), TracingObserver(tracing)],
    )
    worker = Worker(
        bus,
        registry,
        {"echo": echo, "flaky": flaky},
        name="w",
        concurrency=4,
        clock=clock,
        metrics=metrics,
        tracing=tracing,
    )
    running = asyncio.create_task(worker.run())
    client = Client(store, clock, poll=0.001)
    yield Node(store, bus, registry, scheduler, worker, client, clock, metrics, tracing)
    await worker.stop(0)
    await running
    await scheduler.stop()
    tracing.shutdown()
    await bus.close()
    await registry.close()
    await store.close()


# ------------------------------------------------------------------------------- metrics


async def test_tasks_are_counted_by_capability_and_outcome(node: Node) -> None:
    """Final states are counted per capability and outcome; retries and workflows too."""
    await node.run_workflow()
    assert node.value("agentdeck_tasks_total", capability="echo", outcome="succeeded") == 2
    assert node.value("agentdeck_tasks_total", capability="flaky", outcome="failed") == 1
    assert node.value("agentdeck_tasks_total", capability="echo", outcome="skipped") == 1
    assert node.value("agentdeck_task_retries_total", capability="flaky") == 1
    assert node.value("agentdeck_tasks_dispatched_total", capability="flaky") == 2
    assert node.value("agentdeck_workflows_total", outcome="failed") == 1


async def test_latencies_are_observed_per_capability(node: Node) -> None:
    """Dispatch latency, the scheduler's run time and the agent's run time are histograms."""
    await node.run_workflow()
    assert node.value("agentdeck_task_dispatch_latency_seconds_count", capability="echo") == 2
    assert node.value("agentdeck_task_dispatch_latency_seconds_count", capability="flaky") == 2
    assert (
        node.value("agentdeck_task_run_seconds_count", capability="echo", outcome="succeeded") == 2
    )
    assert node.value("agentdeck_agent_runs_total", capability="flaky", outcome="failed") == 2
    assert (
        node.value("agentdeck_agent_run_seconds_count", capability="echo", outcome="succeeded") == 2
    )
    assert node.value("agentdeck_agent_tasks_running", capability="echo") == 0
    assert node.value("agentdeck_agent_pickup_latency_seconds_count", capability="echo") == 2


async def test_leadership_and_lease_renewals_are_counted(node: Node) -> None:
    """The leader gauge is 1 while leading and the renewals count up; stepping down clears it."""
    await node.scheduler.tick()
    assert node.value("agentdeck_scheduler_is_leader") == 1
    assert node.value("agentdeck_scheduler_lease_renewals_total") >= 1
    await node.scheduler.stop()
    assert node.value("agentdeck_scheduler_is_leader") == 0
    assert node.value("agentdeck_scheduler_leader_changes_total", change="lost") == 1


async def test_sampled_gauges_read_the_ports(node: Node) -> None:
    """Queue depth, in-flight, agents, breakers, leader and dead letters come from the ports."""
    await node.client.submit(
        parse_spec(
            "name: q\ntasks:\n  - {key: x, capability: nobody}\n  - {key: y, capability: nobody}",
            fmt="yaml",
            limits=SpecLimits(),
        )
    )
    await node.scheduler.tick()  # dispatches both: no agent serves "nobody"
    await node.registry.put_breaker(BreakerRecord("capability:echo", "open", {}, 1), None)
    await node.metrics.sample(store=node.store, registry=node.registry, bus=node.bus)
    assert node.value("agentdeck_tasks_in_flight", capability="nobody") == 2
    assert node.value("agentdeck_agents", state="up") == 1
    assert node.value("agentdeck_agent_slots", capability="echo") == 4
    assert node.value("agentdeck_breaker_state", breaker="capability:echo", state="open") == 1
    assert node.value("agentdeck_breaker_state", breaker="capability:echo", state="closed") == 0
    assert node.value("agentdeck_scheduler_leader", node="node-1") == 1
    assert node.value("agentdeck_dead_letters") == 0


async def test_a_queue_that_empties_reads_zero(node: Node) -> None:
    """A capability whose ready tasks are gone shows 0, not its last value."""
    node.scheduler._hold = lambda: {"echo"}  # hold echo: its first task stays ready
    workflow = await node.client.submit(parse_spec(SPEC, fmt="yaml", limits=SpecLimits()))
    await node.scheduler.tick()
    await node.metrics.sample(store=node.store)
    assert node.value("agentdeck_tasks_ready", capability="echo") == 1
    await node.client.command("cancel", workflow.id, wait=None)
    await node.scheduler.tick()
    await node.metrics.sample(store=node.store)
    assert node.value("agentdeck_tasks_ready", capability="echo") == 0


async def test_snapshot_time_is_the_newest_manifest(tmp_path: Path) -> None:
    """The snapshot gauge is the newest complete snapshot's time, 0 while there is none."""
    blobs = FileBlobStore(tmp_path / "blobs")
    await blobs.start()
    metrics = Metrics()
    await blobs.put("snapshots/one/part-00000.jsonl.gz", b"x")  # interrupted: no manifest
    await metrics.sample(blobs=blobs)
    assert metrics.registry.get_sample_value("agentdeck_snapshot_last_timestamp_seconds") == 0
    await blobs.put("snapshots/one/manifest.json", b"{}")
    (info,) = [b for b in await blobs.list("snapshots/") if b.key.endswith("manifest.json")]
    await metrics.sample(blobs=blobs)
    sample = metrics.registry.get_sample_value("agentdeck_snapshot_last_timestamp_seconds")
    assert sample == info.modified > 0
    await blobs.close()


async def test_a_failing_port_counts_a_sample_error(node: Node) -> None:
    """A backend that fails a sample leaves the gauges as they were and counts the error."""

    class Broken:
        async def dead_letters(self, limit: int = 100) -> list[object]:
            raise RuntimeError("connection reset")

    node.metrics.dead_letters.set(3)
    await node.metrics.sample(bus=Broken())  # type: ignore[arg-type]
    assert node.value("agentdeck_dead_letters") == 3
    assert node.value("agentdeck_metrics_sample_errors_total") == 1


async def test_sampler_service_samples_until_stopped(node: Node) -> None:
    """The sampler samples at once and every interval, and run() returns after stop()."""
    sampler = MetricsSampler(node.metrics, node.clock, registry=node.registry, interval=5)
    task = asyncio.create_task(sampler.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert node.value("agentdeck_agents", state="up") == 1
    await sampler.stop()
    await asyncio.wait_for(task, 2)


def test_exposition_passes_promtool() -> None:
    """The exposition of every metric, with series in each, is valid for promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (apt-get install prometheus; make tools)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    metrics = Metrics()
    metrics.tasks.labels("echo", "succeeded").inc()
    metrics.dispatch_latency.labels("echo").observe(0.2)
    metrics.run_time.labels("echo", "failed").observe(3)
    metrics.breaker_state.labels("capability:echo", "open").set(1)
    metrics.leader.labels("node-1").set(1)
    metrics.run_started("echo", 0.01)
    metrics.run_finished("echo", "succeeded", 0.5)
    metrics.reconnected("rabbitmq")
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics.exposition(),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.decode() + done.stderr.decode() == ""  # no lint warnings either


def test_metrics_server_serves_and_frees_the_port() -> None:
    """/metrics answers over HTTP on loopback; closing frees the port."""
    metrics = Metrics()
    metrics.tasks.labels("echo", "succeeded").inc(3)
    server = MetricsServer(metrics, 0, "127.0.0.1")
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'agentdeck_tasks_total{capability="echo",outcome="succeeded"} 3.0' in text
    finally:
        server.close()
    again = MetricsServer(metrics, server.port, "127.0.0.1")
    again.start()
    again.close()


def test_a_port_in_use_is_one_clear_error() -> None:
    """A metrics port that cannot be bound is a ConfigError naming it."""
    first = MetricsServer(Metrics(), 0, "127.0.0.1")
    first.start()
    try:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{first.port}"):
            MetricsServer(Metrics(), first.port, "127.0.0.1").start()
    finally:
        first.close()


def test_backend_reconnects_reach_every_live_metrics() -> None:
    """A backend's reconnect hook counts in every Metrics the process holds."""
    one, two = Metrics(), Metrics()
    backend_reconnected("rabbitmq")
    for metrics in (one, two):
        sample = metrics.registry.get_sample_value(
            "agentdeck_backend_reconnects_total", {"backend": "rabbitmq"}
        )
        assert sample == 1


def test_two_metrics_objects_do_not_share_series() -> None:
    """Each Metrics has its own registry, so a process (or a test) can hold several."""
    one, two = Metrics(), Metrics()
    one.workflow_finished("succeeded")
    assert (
        two.registry.get_sample_value("agentdeck_workflows_total", {"outcome": "succeeded"}) is None
    )


# -------------------------------------------------------------------------------- traces


async def test_spans_form_workflow_attempt_run_tree(node: Node) -> None:
    """One trace per workflow: attempts are children of the workflow, runs of their attempt."""
    workflow_id = await node.run_workflow()
    trace_id = workflow_trace_id(workflow_id)
    spans = node.tracing.recent.spans(trace_id)
    (root,) = [s for s in spans if s.name == "workflow telemetry"]
    assert root.parent is None and root.context.span_id == workflow_span_id(workflow_id)
    attempts = [s for s in spans if s.name.startswith("attempt ")]
    runs = [s for s in spans if s.name.startswith("run ")]
    assert len(attempts) == len(runs) == 4  # a, b, and c twice; d was skipped
    for attempt in attempts:
        assert attempt.parent is not None and attempt.parent.span_id == root.context.span_id
        attributes = dict(attempt.attributes or {})
        task_id, number = str(attributes["agentdeck.task_id"]), attributes["agentdeck.attempt"]
        assert isinstance(number, int)
        assert attempt.context.span_id == attempt_span_id(task_id, number)
    attempt_ids = {a.context.span_id for a in attempts}
    assert {r.parent.span_id for r in runs if r.parent} == attempt_ids
    failed = [r for r in runs if (r.attributes or {}).get("agentdeck.outcome") == "failed"]
    succeeded = {r.context.span_id for r in runs if r not in failed}
    outputs = {
        t.output["span"]
        for t in await node.store.list_tasks(workflow_id=workflow_id)
        if isinstance(t.output, dict)
    }
    assert outputs == succeeded  # each handler ran inside its own run span
    assert len(failed) == 2 and all(not r.status.is_ok for r in failed)


def test_tracing_exports_only_when_configured() -> None:
    """OTLP export follows the OTEL_* variables; OTEL_SDK_DISABLED turns tracing off."""
    assert not Tracing("x", env={}).exporting
    assert not Tracing("x", env={"OTEL_TRACES_EXPORTER": "none"}).exporting
    configured = Tracing("x", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert configured.exporting
    configured.provider.shutdown()
    assert not enabled_by_env({"OTEL_SDK_DISABLED": "true"})
    assert enabled_by_env({})


# ---------------------------------------------------------------------------------- logs


async def test_a_tasks_log_lines_carry_its_trace_and_ids(node: Node) -> None:
    """The worker's lines for a task carry its trace id, span id, task, workflow and agent."""
    out = io.StringIO()
    configure_logging("info", "json", node="node-1", stream=out)
    try:
        workflow_id = await node.run_workflow()
    finally:
        configure_logging("warning", "json", stream=io.StringIO())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    handler_lines = [line for line in lines if line["event"] == "echoing"]
    assert len(handler_lines) == 2
    trace_hex = f"{workflow_trace_id(workflow_id):032x}"
    for line in handler_lines:
        assert line["trace_id"] == trace_hex
        assert len(line["span_id"]) == 16
        assert line["workflow_id"] == workflow_id
        assert line["task_id"].startswith(workflow_id)
        assert line["agent"] == node.worker.id
        assert line["node"] == "node-1"
    done = [line for line in lines if line["event"] == "task_succeeded"]
    assert done and all(line["trace_id"] == trace_hex for line in done)


async def test_a_failed_tasks_scheduler_line_carries_its_trace(node: Node) -> None:
    """The scheduler's line about a failed attempt names the task, workflow, trace and span."""
    out = io.StringIO()
    configure_logging("info", "json", node="node-1", stream=out)
    try:
        workflow_id = await node.run_workflow()
    finally:
        configure_logging("warning", "json", stream=io.StringIO())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = [
        line
        for line in lines
        if line["event"] == "task_attempt_failed"
        and line["logger"].startswith("agentdeck.core.scheduler.")
    ]
    assert [(line["attempt"], line["then"]) for line in failed] == [(1, "retrying"), (2, "failed")]
    task_id = failed[0]["task_id"]
    assert task_id.startswith(workflow_id)
    for line in failed:
        assert line["workflow_id"] == workflow_id
        assert line["trace_id"] == f"{workflow_trace_id(workflow_id):032x}"
        assert line["span_id"] == f"{attempt_span_id(task_id, line['attempt']):016x}"


def test_lines_inside_a_span_carry_its_ids() -> None:
    """Any line logged while a span is current carries that span's trace and span ids."""
    from agentdeck.core.logs import get_logger

    tracing = Tracing("x", env={})
    out = io.StringIO()
    configure_logging("info", "json", node="n", stream=out)
    try:
        with tracing.tracer.start_as_current_span("work") as span:
            get_logger("t").info("inside")
        get_logger("t").info("outside")
    finally:
        configure_logging("warning", "json", stream=io.StringIO())
        tracing.shutdown()
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside


def test_settings_switch_telemetry(tmp_path: Path) -> None:
    """metrics_port 0 keeps no metrics; a port makes them and /metrics; a bad port is refused."""
    from agentdeck.core.settings import Settings
    from agentdeck.tui.telemetry import Telemetry

    off = Telemetry.for_settings(Settings.load(home=tmp_path, tracing=False), "x")
    assert (off.metrics, off.server, off.tracing) == (None, None, None)
    on = Telemetry.for_settings(Settings.load(home=tmp_path, metrics_port=9999), "x")
    assert on.metrics is not None and on.server is not None and on.server.port == 9999
    assert on.tracing is not None
    on.close()
    assert Telemetry.for_settings(Settings.load(home=tmp_path), "x", metrics_port=0).metrics is None
    with pytest.raises(ConfigError, match="metrics_port"):
        Settings.load(home=tmp_path, metrics_port=70000)


async def test_the_control_centre_serves_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TUI's runtime is instrumented like the daemon's: its /metrics answers."""
    import socket

    from agentdeck.core.settings import Settings
    from agentdeck.tui.compose import runtime_sources

    with socket.socket() as probe:  # a free port (0 means "off" in the settings)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    settings = Settings.load(config_path=None, metrics_port=port, metrics_address="127.0.0.1")

    def scrape() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return str(r.read().decode())
        except urllib.error.URLError:
            return None  # not serving yet: the server starts as one of the runtime's services

    async with runtime_sources(settings, demo=False):
        for _ in range(500):
            if (text := await asyncio.to_thread(scrape)) is not None:
                break
    assert text is not None and "agentdeck_scheduler_is_leader" in text
