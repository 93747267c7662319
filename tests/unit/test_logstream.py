"""Agents' log lines on the events stream: with the task's ids, rate-limited, drops counted."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from agentdeck.agents.context import TaskContext
from agentdeck.agents.feed import AttemptFeed, FeedStream
from agentdeck.agents.logstream import MAX_CHARS, LogStream
from agentdeck.agents.worker import Worker
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import TaskFailed
from agentdeck.core.logs import configure_logging, get_logger, tee_logs
from agentdeck.core.messages import Event, TaskMessage, decode, encode
from agentdeck.core.metrics import Metrics
from agentdeck.core.models import JSON
from agentdeck.core.ports import OutgoingTask
from agentdeck.core.tracing import Tracing


@pytest.fixture(autouse=True)
def json_logging() -> Iterator[None]:
    """Lines pass through agentdeck's pipeline (where the tee sits), written nowhere visible."""
    configure_logging("info", "json", node="n1", stream=io.StringIO())
    yield
    structlog.reset_defaults()


@pytest.fixture
async def bus(clock: FakeClock) -> AsyncIterator[MemoryBus]:
    bus = MemoryBus.from_url("memory://", clock=clock)
    await bus.start()
    yield bus
    await bus.close()


async def chatty(ctx: TaskContext) -> JSON:
    ctx.log.info("thinking", step=1)
    ctx.log.warning("hmm", detail={"not": "a scalar"})
    return None


async def flood(ctx: TaskContext) -> JSON:
    for i in range(500):
        ctx.log.info("spam", i=i)
    return None


async def run_one(bus: MemoryBus, clock: FakeClock, handler_name: str, **worker: object) -> Worker:
    """Run one task of capability ``handler_name`` on a worker and return it once reported."""
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await registry.start()
    handlers = {"chatty": chatty, "flood": flood}
    agent = Worker(bus, registry, {handler_name: handlers[handler_name]}, name="w", clock=clock)
    for name, value in worker.items():
        setattr(agent, name, value)
    reports = bus.consume_reports()
    running = asyncio.create_task(agent.run())
    message = TaskMessage(
        task_id="t-1",
        workflow_id="wf-1",
        key="k",
        capability=handler_name,
        attempt=1,
        input=None,
        timeout=30.0,
        dispatched_at=clock.now(),
    )
    await bus.publish_tasks([OutgoingTask(handler_name, encode(message), {})])
    async for delivery in reports:
        await delivery.ack()
        if b'"succeeded"' in delivery.body:
            break
    for _ in range(50):  # let the shipper publish what is queued
        await asyncio.sleep(0)
    await agent.stop(0)
    await running
    await registry.close()
    return agent


async def collected(events: AsyncIterator[bytes]) -> list[Event]:
    """The log events buffered so far on a subscription."""
    found: list[Event] = []
    while True:
        try:
            body = await asyncio.wait_for(anext(events), 0.01)
        except TimeoutError:
            return found
        event = decode(body, Event)
        if event.topic == "log":
            found.append(event)


async def test_a_handlers_log_lines_arrive_as_events_with_the_tasks_ids(
    bus: MemoryBus, clock: FakeClock
) -> None:
    """ctx.log lines become ``log`` events naming the agent, the task, the workflow, the trace."""
    events = bus.subscribe_events()
    tracing = Tracing("test", "n1", env={})
    try:
        agent = await run_one(bus, clock, "chatty", tracing=tracing)
    finally:
        tracing.shutdown()
    lines = {e.data["event"]: e for e in await collected(events)}
    thinking, hmm = lines["thinking"], lines["hmm"]
    assert thinking.data["level"] == "info" and thinking.data["step"] == 1
    assert hmm.data["level"] == "warning" and hmm.data["detail"] == "{'not': 'a scalar'}"
    for line in (thinking, hmm):
        assert line.data["agent_id"] == agent.id
        assert line.data["task_id"] == "t-1"
        assert line.data["workflow_id"] == "wf-1"
        assert isinstance(line.data["trace_id"], str) and len(line.data["trace_id"]) == 32
    assert "task_succeeded" in lines  # the worker's own lines about the task too
    assert sum(agent.log_stream.dropped.values()) == 0


async def test_a_flood_is_capped_and_the_drops_are_counted(
    bus: MemoryBus, clock: FakeClock
) -> None:
    """500 lines at one instant: ``burst`` get through, the rest are dropped and counted."""
    events = bus.subscribe_events()
    metrics = Metrics()
    agent = await run_one(bus, clock, "flood", metrics=metrics)
    spam = [e for e in await collected(events) if e.data["event"] == "spam"]
    assert len(spam) == agent.log_stream.burst
    dropped = metrics.registry.get_sample_value(
        "agentdeck_agent_log_lines_dropped_total", {"reason": "rate"}
    )
    assert dropped is not None and dropped >= 500 - agent.log_stream.burst
    assert agent.log_stream.dropped["rate"] == dropped


async def test_the_bucket_refills_with_time(bus: MemoryBus, clock: FakeClock) -> None:
    """After an empty bucket, ``rate`` lines per second get through again."""
    stream = LogStream(bus, clock, "a-1", rate=2.0, burst=3)
    log = get_logger("t")
    with tee_logs(stream.offer):
        for _ in range(5):
            log.info("x")
        clock.advance(1.0)
        for _ in range(5):
            log.info("y")
    assert len(stream._lines) == 3 + 2
    assert stream.dropped["rate"] == 5


async def test_a_full_queue_drops_instead_of_blocking(bus: MemoryBus, clock: FakeClock) -> None:
    """With nobody draining, lines beyond the queue's size are dropped as ``queue``."""
    stream = LogStream(bus, clock, "a-1", queue=4)
    with tee_logs(stream.offer):
        for i in range(10):
            get_logger("t").info("line", i=i)
    assert len(stream._lines) == 4
    assert stream.dropped == {"queue": 6}


async def test_lines_outside_the_tee_and_below_the_level_are_not_offered(
    bus: MemoryBus, clock: FakeClock
) -> None:
    """Only lines logged inside tee_logs that pass the level filter reach the stream."""
    stream = LogStream(bus, clock, "a-1")
    get_logger("t").info("before")
    with tee_logs(stream.offer):
        get_logger("t").debug("quiet")
        get_logger("t").info("kept")
    assert [e.data["event"] for e in stream._lines] == ["kept"]


def feed_of(stream: FeedStream, attempt: int = 1) -> AttemptFeed:
    """The feed of attempt ``attempt`` of task wf/a, going to ``stream``."""
    ids = {"task_id": "wf/a", "workflow_id": "wf", "attempt": attempt, "agent_id": "a-1"}
    return AttemptFeed(ids, stream)


async def test_a_newer_progress_replaces_the_waiting_one(bus: MemoryBus, clock: FakeClock) -> None:
    """Progress not yet published is replaced by the next of the same attempt: newest wins."""
    stream = FeedStream(bus, clock, "a-1")
    feed = feed_of(stream)
    for step in range(10):
        feed.progress(step / 10, f"step {step}")
    assert [(e.data["fraction"], e.data["message"]) for e in stream._lines] == [(0.9, "step 9")]
    assert stream.dropped == {}


async def test_streamed_text_is_joined_then_split_at_the_cap(
    bus: MemoryBus, clock: FakeClock
) -> None:
    """Small pieces join into one waiting event; text past MAX_CHARS goes on in the next."""
    stream = FeedStream(bus, clock, "a-1")
    feed = feed_of(stream)
    for _ in range(3):
        feed.emit("x" * 1500)
    texts = [e.data["text"] for e in stream._lines]
    assert [len(t) for t in texts] == [MAX_CHARS, MAX_CHARS, 4500 - 2 * MAX_CHARS]
    assert "".join(texts) == "x" * 4500  # nothing lost, in order


async def test_output_of_another_attempt_is_not_merged(bus: MemoryBus, clock: FakeClock) -> None:
    """Only the same task attempt's waiting output absorbs new text."""
    stream = FeedStream(bus, clock, "a-1")
    feed_of(stream, 1).emit("first")
    feed_of(stream, 2).emit("second")
    assert [(e.data["attempt"], e.data["text"]) for e in stream._lines] == [
        (1, "first"),
        (2, "second"),
    ]


async def test_a_flood_of_separate_events_is_capped_and_counted(
    bus: MemoryBus, clock: FakeClock
) -> None:
    """Events that cannot merge spend the bucket; the rest are dropped as ``rate``."""
    stream = FeedStream(bus, clock, "a-1", rate=1.0, burst=3)
    for attempt in range(1, 11):
        feed_of(stream, attempt).emit("t")
    assert len(stream._lines) == 3
    assert stream.dropped == {"rate": 7}


async def test_bad_progress_values_are_refused_clearly() -> None:
    """A fraction outside [0, 1] is one clear, non-retryable error naming the value."""
    with pytest.raises(TaskFailed) as caught:
        AttemptFeed().progress(fraction=1.5)
    assert caught.value.kind == "bad_progress" and caught.value.non_retryable
    assert "1.5" in str(caught.value) and "from 0 to 1" in str(caught.value)
