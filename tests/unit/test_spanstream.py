"""Finished spans on the events stream: sampled by trace, rate-limited with drops counted, read
back as spans, and held once by the receiving buffer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentdeck.backends.memory import MemoryBus
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.messages import Event, decode
from agentdeck.core.models import Workflow
from agentdeck.core.spanstream import SpanEvents, sampled, span_data, span_from_data
from agentdeck.core.states import WorkflowStatus
from agentdeck.core.tracing import RecentSpans, Tracing, workflow_trace_id

START = 1_700_000_000.0


def _workflow(workflow_id: str, status: WorkflowStatus = WorkflowStatus.SUCCEEDED) -> Workflow:
    return Workflow(
        id=workflow_id,
        name="wf",
        status=status,
        created_at=START,
        updated_at=START + 2,
        finished_at=START + 2,
        task_count=3,
    )


def _tracing(*processors: Any) -> Tracing:
    return Tracing("agentdeck", "node-7", env={}, processors=processors)


def test_a_span_goes_to_data_and_back() -> None:
    """Ids, parent, name, times, status, kind, service, node and attributes survive the trip."""
    tracing = _tracing()
    tracing.workflow_finished(_workflow("abc123abc123", WorkflowStatus.FAILED), START + 2)
    [span] = tracing.recent.spans()
    data = span_data(span)
    assert data["trace_id"] == f"{workflow_trace_id('abc123abc123'):032x}"
    assert (data["status"], data["message"], data["service"], data["node"]) == (
        "error",
        "failed",
        "agentdeck",
        "node-7",
    )
    back = span_from_data(data)
    assert back.context is not None and span.context is not None
    assert (back.context.trace_id, back.context.span_id) == (
        span.context.trace_id,
        span.context.span_id,
    )
    assert (back.name, back.start_time, back.end_time) == (
        span.name,
        span.start_time,
        span.end_time,
    )
    assert back.status.status_code == span.status.status_code
    assert dict(back.attributes or {}) == dict(span.attributes or {})
    assert back.resource.attributes["host.name"] == "node-7"
    with pytest.raises(AgentdeckError, match="not a span event"):
        span_from_data({"trace_id": "zz"})


def test_sampling_keeps_or_drops_whole_traces_and_always_keeps_failures() -> None:
    """The decision depends on the trace id only; a failed span is kept whatever the rate."""
    assert sampled(12_345, 1.0) and not sampled(12_345, 0.0)
    assert [sampled(t, 0.5) for t in (4_999, 5_000, 14_999)] == [True, False, True]
    publisher = SpanEvents(MemoryBus(clock=FakeClock(START)), FakeClock(START), sample=0.0)
    tracing = _tracing(publisher)
    tracing.workflow_finished(_workflow("0000000000a1"), START + 2)
    tracing.workflow_finished(_workflow("0000000000a2", WorkflowStatus.FAILED), START + 2)
    assert publisher.dropped["sampled"] == 1
    assert repr(publisher).startswith("<SpanEvents queued=1 ")
    with pytest.raises(AgentdeckError, match="span sample 2 is not a fraction"):
        SpanEvents(MemoryBus(clock=FakeClock(START)), FakeClock(START), sample=2)


def test_over_the_rate_or_the_queue_spans_are_dropped_and_counted() -> None:
    """A burst beyond the bucket is dropped (``rate``); time refills it; a full queue drops."""
    clock = FakeClock(START)
    drops: list[str] = []
    publisher = SpanEvents(
        MemoryBus(clock=clock), clock, rate=1.0, burst=2, queue=3, on_drop=drops.append
    )
    tracing = _tracing(publisher)
    for n in range(4):
        tracing.workflow_finished(_workflow(f"00000000000{n}"), START + 2)
    assert drops == ["rate", "rate"]
    clock.advance(10)
    for n in range(4, 7):
        tracing.workflow_finished(_workflow(f"00000000000{n}"), START + 2)
    # (refilled to the burst of 2: one more fits the queue of 3, the next finds it full, the
    # last finds no token)
    assert drops == ["rate", "rate", "queue", "rate"]
    assert publisher.dropped == {"rate": 3, "queue": 1}
    assert publisher.drops_to_report() is None  # (at most one report a minute)
    clock.advance(60)
    assert publisher.drops_to_report() == {"rate": 3, "queue": 1}
    clock.advance(60)
    assert publisher.drops_to_report() is None  # nothing new


async def test_published_spans_reach_a_subscriber_and_stop_flushes() -> None:
    """Spans ended while running go out as ``span`` events; stop publishes the rest."""
    clock = FakeClock(START)
    bus = MemoryBus(clock=clock)
    await bus.start()
    publisher = SpanEvents(bus, clock)
    tracing = _tracing(publisher)
    subscription = bus.subscribe_events()
    received: list[Event] = []

    async def read() -> None:
        async for body in subscription:
            received.append(decode(body, Event))

    reader = asyncio.create_task(read())
    running = asyncio.create_task(publisher.run())
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        tracing.workflow_finished(_workflow("0000000000b1"), START + 2)
        tracing.workflow_finished(_workflow("0000000000b2"), START + 2)
        await publisher.stop(grace=1.0)
        await asyncio.wait_for(running, 5)
        for _ in range(20):
            if len(received) == 2:
                break
            await asyncio.sleep(0)
    finally:
        reader.cancel()
        await bus.close()
    assert [e.topic for e in received] == ["span", "span"]
    assert publisher.published == 2
    names = {span_from_data(e.data).attributes["agentdeck.workflow_id"] for e in received}  # type: ignore[index]
    assert names == {"0000000000b1", "0000000000b2"}


def test_the_buffer_holds_a_span_once() -> None:
    """A span heard back from the events stream replaces the copy held, not doubles it."""
    tracing = _tracing()
    tracing.workflow_finished(_workflow("0000000000c1"), START + 2)
    [span] = tracing.recent.spans()
    buffer = RecentSpans(size=2)
    buffer.on_end(span)
    buffer.on_end(span_from_data(span_data(span)))
    assert len(buffer.spans()) == 1
    for n in range(2, 4):
        tracing.workflow_finished(_workflow(f"0000000000c{n}"), START + 2)
    for other in tracing.recent.spans()[1:]:
        buffer.on_end(other)
    assert len(buffer.spans()) == 2  # the oldest went
