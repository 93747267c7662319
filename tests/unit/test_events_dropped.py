"""Every event a process drops on its way to the events stream is counted in
``agentdeck_events_dropped_total{stream, reason}``: log lines, handlers' progress and output
(``feed``), and spans; a span left out by the sample rate is not a loss and is not counted."""

from __future__ import annotations

from agentdeck.agents.logstream import BURST, MAX_CHARS
from agentdeck.agents.worker import Worker
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.metrics import Metrics
from agentdeck.core.models import JSON, Workflow
from agentdeck.core.spanstream import BURST as SPAN_BURST
from agentdeck.core.states import WorkflowStatus
from agentdeck.core.tracing import Tracing
from agentdeck.tui.telemetry import Telemetry

START = 1_700_000_000.0
METRIC = "agentdeck_events_dropped_total"


def _dropped(metrics: Metrics, stream: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(METRIC, {"stream": stream, "reason": reason})
    return value or 0.0


def _workflow(n: int, status: WorkflowStatus = WorkflowStatus.SUCCEEDED) -> Workflow:
    return Workflow(
        id=f"{n:012d}",
        name="wf",
        status=status,
        created_at=START,
        updated_at=START + 2,
        finished_at=START + 2,
        task_count=1,
    )


async def _echo(ctx: object) -> JSON:
    return None


def test_spans_over_the_rate_are_counted_by_the_telemetrys_publisher() -> None:
    """The span publisher a node's Telemetry builds feeds the counter: a burst beyond the
    bucket's size is counted as ``rate``, one per span dropped."""
    clock = FakeClock(START)
    metrics = Metrics()
    tracing = Tracing("agentdeck", "node-1", env={})
    telemetry = Telemetry(metrics, tracing, None)
    try:
        publisher = telemetry.span_events(MemoryBus(clock=clock), clock)
        assert publisher is not None
        for n in range(SPAN_BURST + 7):
            tracing.workflow_finished(_workflow(n), START + 2)
    finally:
        tracing.shutdown()
    assert _dropped(metrics, "span", "rate") == 7 == publisher.dropped["rate"]


def test_spans_left_out_by_the_sample_rate_are_not_counted() -> None:
    """With ``sample`` 0 succeeded workflows' spans are left out (``sampled`` in the
    publisher's own tally) and the counter stays at zero; a failed one is still published."""
    clock = FakeClock(START)
    metrics = Metrics()
    tracing = Tracing("agentdeck", "node-1", env={})
    telemetry = Telemetry(metrics, tracing, None)
    try:
        publisher = telemetry.span_events(MemoryBus(clock=clock), clock)
        assert publisher is not None
        publisher.sample = 0.0
        for n in range(5):
            tracing.workflow_finished(_workflow(n), START + 2)
        tracing.workflow_finished(_workflow(9, WorkflowStatus.FAILED), START + 2)
    finally:
        tracing.shutdown()
    assert publisher.dropped["sampled"] == 5
    assert (
        metrics.registry.get_sample_value(METRIC, {"stream": "span", "reason": "sampled"}) is None
    )
    assert repr(publisher).startswith("<SpanEvents queued=1 ")


def test_a_workers_streamed_output_over_its_budget_is_counted_as_feed() -> None:
    """Output beyond the feed's burst is dropped as ``rate`` and counted under ``feed``,
    apart from log lines."""
    clock = FakeClock(START)
    metrics = Metrics()
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    worker = Worker(
        MemoryBus(clock=clock), registry, {"echo": _echo}, name="w", clock=clock, metrics=metrics
    )
    ids: dict[str, JSON] = {"task_id": "t-1", "attempt": 1, "agent_id": worker.id}
    # One event per MAX_CHARS characters: BURST + 3 events, the last 3 over the bucket.
    worker.feed_stream.output(ids, "x" * (MAX_CHARS * (BURST + 3)))
    assert _dropped(metrics, "feed", "rate") == 3 == worker.feed_stream.dropped["rate"]
    assert _dropped(metrics, "log", "rate") == 0


def test_a_dropped_log_line_counts_under_both_names() -> None:
    """``agentdeck_agent_log_lines_dropped_total`` stays, and the same drop is counted under
    ``stream="log"``."""
    metrics = Metrics()
    metrics.log_line_dropped("queue")
    metrics.log_line_dropped("queue")
    assert _dropped(metrics, "log", "queue") == 2
    assert (
        metrics.registry.get_sample_value(
            "agentdeck_agent_log_lines_dropped_total", {"reason": "queue"}
        )
        == 2
    )
