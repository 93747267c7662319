"""The worker on the memory bus and registry: reports, acks, timeouts, control, heartbeats, stop."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from agentdeck.agents.builtin import echo
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.decorator import to_async
from agentdeck.agents.main import run_worker
from agentdeck.agents.worker import Worker
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.collector import YOUNG_THRESHOLD
from agentdeck.core.errors import ConfigError, RateLimited, TaskFailed
from agentdeck.core.messages import (
    Control,
    Event,
    Report,
    TaskMessage,
    decode,
    decode_batch,
    encode,
)
from agentdeck.core.models import AgentState
from agentdeck.core.ports import Delivery, OutgoingTask

CAP = "work"


# ------------------------------------------------------------------------------- helpers


async def eventually(check: Callable[[], Any], what: str = "condition") -> None:
    """Let the event loop run until ``check()`` (or its awaited result) is true.

    Everything here is in-process and driven by a fake clock, so yielding is enough: no real
    time passes, and a condition that never holds fails after a bounded number of turns.
    """
    for _ in range(500):
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} never became true")


async def settle() -> None:
    """Let every ready callback run (to show that something does *not* happen)."""
    for _ in range(50):
        await asyncio.sleep(0)


def message(
    key: str = "a",
    *,
    attempt: int = 1,
    input: Any = None,
    upstream: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
    capability: str = CAP,
) -> bytes:
    """The body of a task message for task ``wf/<key>``."""
    return encode(
        TaskMessage(
            task_id=f"wf/{key}",
            workflow_id="wf",
            key=key,
            capability=capability,
            attempt=attempt,
            input=input,
            upstream=dict(upstream or {}),
            timeout=timeout,
            dispatched_at=0.0,
        )
    )


class Reports:
    """Collects every report the worker publishes (acking each, as the scheduler would)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Report, Mapping[str, str]]] = []

    async def collect(self, bus: MemoryBus) -> None:
        async for delivery in bus.consume_reports():
            # Reports ready at once travel as one batch message (agents.reports).
            for item in decode_batch(delivery.body, Report):
                assert item.message is not None, item.error
                self.seen.append((item.message, item.headers or delivery.headers))
            await delivery.ack()

    def of(self, task_id: str) -> list[Report]:
        return [r for r, _ in self.seen if r.task_id == task_id]

    def kinds(self, task_id: str) -> list[str]:
        return [r.kind for r in self.of(task_id)]

    def final(self, task_id: str) -> Report:
        (last,) = [r for r in self.of(task_id) if r.kind != "started"]
        return last


async def take_waiting(bus: MemoryBus, capability: str = CAP) -> Delivery | None:
    """The next message waiting in ``capability``'s queue (settled by the caller), or None."""
    consumer = bus.consume_tasks([capability], prefetch=1)
    pending = asyncio.ensure_future(anext(consumer))
    await settle()
    if not pending.done():
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        return None
    delivery = pending.result()
    await delivery.ack()  # hand-inspected: taken out of the queue for good
    await consumer.aclose()  # type: ignore[attr-defined]
    return delivery


class Gate:
    """A handler that blocks until opened, recording which tasks it started."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, ctx: TaskContext) -> Any:
        self.started.append(ctx.task_id)
        await self.opened.wait()
        return {"done": ctx.task_id}


class Env:
    """A bus, a registry, a report collector and the workers started on them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.bus = MemoryBus.from_url("memory://", clock=clock)
        self.registry = MemoryRegistry.from_url("memory://", clock=clock)
        self.reports = Reports()
        self.runs: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, handlers: Mapping[str, Handler], **options: Any) -> Worker:
        """Run a worker and return once it is registered (and so listening for control)."""
        options.setdefault("name", "w")
        options.setdefault("clock", self.clock)
        worker = Worker(self.bus, self.registry, handlers, **options)
        self.runs.append((worker, asyncio.create_task(worker.run())))
        await eventually(self.registry.agents, "registration")
        await settle()  # its loops are now waiting on the clock
        return worker

    async def publish(self, *bodies: bytes, headers: Mapping[str, str] | None = None) -> None:
        await self.bus.publish_tasks([OutgoingTask(CAP, b, headers or {}) for b in bodies])

    async def control(self, action: str, target: str) -> None:
        body = encode(Control(action=action, target=target, at=self.clock.now()))  # type: ignore[arg-type]
        await self.bus.publish_control(body)


@pytest.fixture
async def env(clock: FakeClock) -> AsyncIterator[Env]:
    """The memory backends with a report collector; workers are stopped afterwards."""
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


# ------------------------------------------------------------------------------ running


async def test_runs_the_handler_and_reports_started_then_succeeded(env: Env) -> None:
    """A task gets a started report, then a succeeded one carrying the output and upstream."""
    await env.start({CAP: echo.make()}, agent_id="agent-1")
    await env.publish(message("b", input={"n": 2}, upstream={"a": {"x": 1}}))
    await eventually(lambda: "succeeded" in env.reports.kinds("wf/b"))
    assert env.reports.kinds("wf/b") == ["started", "succeeded"]
    done = env.reports.final("wf/b")
    assert done.output == {"input": {"n": 2}, "upstream": {"a": {"x": 1}}}
    assert (done.agent_id, done.attempt) == ("agent-1", 1)
    assert await take_waiting(env.bus) is None  # acked


async def test_the_result_is_published_before_the_ack(env: Env) -> None:
    """The final report is on the bus before the message is acked (at-least-once)."""
    order: list[str] = []
    publish_report = env.bus.publish_report

    async def recording_publish(body: bytes, headers: Mapping[str, str]) -> None:
        order.append("report:" + decode(body, Report).kind)
        await publish_report(body, headers)

    consume_tasks = env.bus.consume_tasks

    async def recording_consume(caps: Any, prefetch: int) -> AsyncIterator[Delivery]:
        async for delivery in consume_tasks(caps, prefetch):
            ack = delivery.ack

            async def recording_ack(ack: Callable[[], Awaitable[None]] = ack) -> None:
                order.append("ack")
                await ack()

            delivery.ack = recording_ack  # type: ignore[method-assign]
            yield delivery

    env.bus.publish_report = recording_publish  # type: ignore[method-assign]
    env.bus.consume_tasks = recording_consume  # type: ignore[assignment,method-assign]
    await env.start({CAP: echo.make()})
    await env.publish(message())
    await eventually(lambda: "ack" in order)
    assert order == ["report:started", "report:succeeded", "ack"]


async def test_trace_header_travels_to_the_reports(env: Env) -> None:
    """The task message's traceparent is carried on its reports."""
    await env.start({CAP: echo.make()})
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await env.publish(message(), headers={"traceparent": trace})
    await eventually(lambda: len(env.reports.seen) == 2)
    assert [h.get("traceparent") for _, h in env.reports.seen] == [trace, trace]


async def test_prefetch_is_the_concurrency(env: Env) -> None:
    """With concurrency 2, two of five tasks run at once; the rest wait in the queue."""
    gate = Gate()
    worker = await env.start({CAP: gate}, concurrency=2)
    await env.publish(*(message(str(n)) for n in range(5)))
    await eventually(lambda: len(gate.started) == 2)
    await settle()
    assert len(gate.started) == 2
    assert worker.in_flight == 2
    gate.opened.set()
    await eventually(lambda: worker.succeeded == 5)
    assert sorted(gate.started) == [f"wf/{n}" for n in range(5)]


async def test_timeout_fails_the_attempt_as_retryable(env: Env, clock: FakeClock) -> None:
    """A handler still running at the task's timeout is cancelled and reported ``timeout``."""
    gate = Gate()
    await env.start({CAP: gate})
    await env.publish(message(timeout=5))
    await eventually(lambda: gate.started)
    clock.advance(4.9)
    await settle()
    assert env.reports.kinds("wf/a") == ["started"]
    clock.advance(0.1)
    await eventually(lambda: len(env.reports.kinds("wf/a")) == 2)
    error = env.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.retryable) == ("timeout", True)
    assert await take_waiting(env.bus) is None


async def test_a_handlers_own_timeout_error_is_not_the_task_timeout(env: Env) -> None:
    """A TimeoutError raised inside the handler is reported as that exception, not ``timeout``."""

    async def slow_upstream(ctx: TaskContext) -> None:
        raise TimeoutError("upstream took too long")

    await env.start({CAP: slow_upstream})
    await env.publish(message())
    await eventually(lambda: len(env.reports.kinds("wf/a")) == 2)
    error = env.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.message) == ("TimeoutError", "upstream took too long")


async def test_task_failed_fields_are_carried(env: Env) -> None:
    """TaskFailed's kind, non_retryable and retry_after reach the failed report."""

    async def refuse(ctx: TaskContext) -> None:
        raise TaskFailed("quota spent", non_retryable=True, retry_after=30, kind="quota")

    await env.start({CAP: refuse})
    await env.publish(message())
    await eventually(lambda: len(env.reports.kinds("wf/a")) == 2)
    error = env.reports.final("wf/a").error
    assert error is not None
    assert error.model_dump() == {
        "kind": "quota",
        "message": "quota spent",
        "retryable": False,
        "retry_after": 30.0,
    }


async def test_rate_limited_is_a_retryable_failure_with_its_delay(env: Env) -> None:
    """RateLimited reaches the report as kind ``rate_limited``, retryable, with retry_after."""

    async def throttled(ctx: TaskContext) -> None:
        raise RateLimited("provider answered 429", retry_after=12.5)

    await env.start({CAP: throttled})
    await env.publish(message())
    await eventually(lambda: len(env.reports.kinds("wf/a")) == 2)
    error = env.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.retryable, error.retry_after) == ("rate_limited", True, 12.5)


async def test_usage_is_summed_and_sent_on_the_result(env: Env) -> None:
    """Two ctx.usage calls reach the succeeded report as one sum, costs and models joined."""

    async def two_calls(ctx: TaskContext) -> str:
        ctx.usage(input_tokens=10, output_tokens=5, cost_usd=0.25, model="m-1")
        ctx.usage(
            input_tokens=1,
            output_tokens=2,
            cache_creation_input_tokens=3,
            cache_read_input_tokens=4,
            cost_usd=0.5,
            model="m-2",
        )
        return "ok"

    await env.start({CAP: two_calls})
    await env.publish(message())
    await eventually(lambda: "succeeded" in env.reports.kinds("wf/a"))
    usage = env.reports.final("wf/a").usage
    assert usage is not None
    assert usage.model_dump() == {
        "input_tokens": 11,
        "output_tokens": 7,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 4,
        "cost_usd": 0.75,
        "model": "m-1+m-2",
    }


async def test_usage_is_sent_on_a_failed_result_too(env: Env) -> None:
    """Tokens spent before a failure are still reported; an unknown cost stays unknown."""

    async def spend_then_fail(ctx: TaskContext) -> None:
        ctx.usage(input_tokens=100, output_tokens=1, model="unpriced")
        raise TaskFailed("the model said no")

    await env.start({CAP: spend_then_fail})
    await env.publish(message())
    await eventually(lambda: "failed" in env.reports.kinds("wf/a"))
    usage = env.reports.final("wf/a").usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.cost_usd) == (100, 1, None)


async def test_a_result_without_usage_carries_none(env: Env) -> None:
    """A handler that reports no usage sends ``usage: null``."""
    await env.start({CAP: echo.make()})
    await env.publish(message())
    await eventually(lambda: "succeeded" in env.reports.kinds("wf/a"))
    assert env.reports.final("wf/a").usage is None


async def test_bad_usage_fails_the_attempt_permanently(env: Env) -> None:
    """A negative token count is a handler bug: ``bad_usage``, not retried, naming the value."""

    async def wrong(ctx: TaskContext) -> None:
        ctx.usage(input_tokens=-3)

    await env.start({CAP: wrong})
    await env.publish(message())
    await eventually(lambda: "failed" in env.reports.kinds("wf/a"))
    error = env.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.retryable) == ("bad_usage", False)
    assert "input_tokens" in error.message and "-3" in error.message


async def test_progress_and_output_travel_on_the_events_stream(env: Env) -> None:
    """ctx.progress and ctx.emit become ``progress`` and ``output`` events with the ids."""
    events = env.bus.subscribe_events()

    async def chatty(ctx: TaskContext) -> str:
        ctx.progress(0.5, "halfway")
        ctx.emit("Hello, ")
        ctx.emit("world")
        return "done"

    worker = await env.start({CAP: chatty}, agent_id="agent-1")
    await env.publish(message(attempt=2))
    await eventually(lambda: "succeeded" in env.reports.kinds("wf/a"))
    await settle()
    seen = []
    while True:
        try:
            body = await asyncio.wait_for(anext(events), 0.01)
        except TimeoutError:
            break
        event = decode(body, Event)
        if event.topic in ("progress", "output"):
            seen.append((event.topic, event.data))
    ids = {"task_id": "wf/a", "workflow_id": "wf", "attempt": 2, "agent_id": "agent-1"}
    assert seen == [
        ("progress", {**ids, "fraction": 0.5, "message": "halfway"}),
        ("output", {**ids, "text": "Hello, world"}),  # merged while it waited
    ]
    assert sum(worker.feed_stream.dropped.values()) == 0


async def test_a_sync_handler_in_a_thread_can_emit_and_count_usage(env: Env) -> None:
    """ctx.emit and ctx.usage from a plain function (run in a worker thread) still arrive."""
    events = env.bus.subscribe_events()

    def in_thread(ctx: TaskContext) -> str:
        ctx.emit("from a thread")
        ctx.usage(output_tokens=3)
        return "ok"

    await env.start({CAP: to_async(in_thread)})
    await env.publish(message())
    for _ in range(1000):  # a real thread: real time passes, so poll with real sleeps
        if "succeeded" in env.reports.kinds("wf/a"):
            break
        await asyncio.sleep(0.005)
    usage = env.reports.final("wf/a").usage
    assert usage is not None and usage.output_tokens == 3
    texts = []
    for _ in range(100):
        try:
            event = decode(await asyncio.wait_for(anext(events), 0.01), Event)
        except TimeoutError:
            if texts:
                break
            continue
        if event.topic == "output":
            texts.append(event.data["text"])
    assert texts == ["from a thread"]


async def test_other_exceptions_are_retryable_failures_named_by_class(env: Env) -> None:
    """Any other exception fails the attempt, retryable, with its class name and message."""

    async def crash(ctx: TaskContext) -> None:
        raise KeyError("missing")

    await env.start({CAP: crash})
    await env.publish(message())
    await eventually(lambda: len(env.reports.kinds("wf/a")) == 2)
    error = env.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.message, error.retryable) == ("KeyError", "'missing'", True)


async def test_output_that_is_not_json_fails_permanently(env: Env) -> None:
    """A handler returning something JSON cannot carry fails ``malformed``, not retryable,
    naming where the bad value is."""

    async def odd(ctx: TaskContext) -> Any:
        return {"when": {1, 2}}

    await env.start({CAP: odd})
    await env.publish(message())
    await eventually(lambda: len(env.reports.kinds("wf/a")) == 2)
    error = env.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.retryable) == ("malformed", False)
    assert error.message.startswith("output.when: set is not JSON")


async def test_malformed_message_is_failed_and_dead_lettered(env: Env) -> None:
    """A message that does not decode gets a ``malformed`` failed report (when its ids can be
    read) and goes to the dead letters, never back to the queue."""
    await env.start({CAP: echo.make()})
    await env.publish(b'{"task_id": "wf/bad", "attempt": 3}', b"not json at all")

    async def both_dead_lettered() -> bool:
        return len(await env.bus.dead_letters()) == 2

    await eventually(both_dead_lettered)
    letters = await env.bus.dead_letters()
    assert {letter.body for letter in letters} == {
        b'{"task_id": "wf/bad", "attempt": 3}',
        b"not json at all",
    }
    (report,) = env.reports.of("wf/bad")
    assert report.kind == "failed"
    assert report.attempt == 3
    assert report.error is not None
    assert (report.error.kind, report.error.retryable) == ("malformed", False)
    assert len(env.reports.seen) == 1  # nothing to report for the body without ids
    assert await take_waiting(env.bus) is None


async def test_message_for_another_capability_is_dead_lettered(env: Env) -> None:
    """A message whose capability this worker has no handler for is failed and kept aside."""
    await env.start({CAP: echo.make()})
    await env.publish(message(capability="other"))
    await eventually(lambda: env.reports.of("wf/a"))
    error = env.reports.final("wf/a").error
    assert error is not None
    assert "no handler for capability 'other'" in error.message
    assert len(await env.bus.dead_letters()) == 1


# ------------------------------------------------------------------------------ control


async def test_drain_finishes_running_work_and_takes_no_more(env: Env) -> None:
    """After ``drain`` the worker finishes what runs, starts nothing new, and shows draining;
    the messages it did not start stay in the queue."""
    gate = Gate()
    worker = await env.start({CAP: gate}, concurrency=2, agent_id="ag")
    await env.publish(message("a"))
    await eventually(lambda: gate.started == ["wf/a"])
    await env.control("drain", "ag")
    await eventually(lambda: worker.state is AgentState.DRAINING)
    (record,) = await env.registry.agents()
    assert record.state is AgentState.DRAINING
    await env.publish(message("b"), message("c"))
    await settle()
    assert gate.started == ["wf/a"]
    gate.opened.set()
    await eventually(lambda: worker.succeeded == 1)
    await settle()
    waiting = [await take_waiting(env.bus), await take_waiting(env.bus)]
    assert [decode(d.body, TaskMessage).key for d in waiting if d] == ["b", "c"]


async def test_resume_takes_work_again(env: Env) -> None:
    """``resume`` after ``drain`` (for ``*``, every agent) makes the worker consume again."""
    worker = await env.start({CAP: echo.make()})
    await env.control("drain", "*")
    await eventually(lambda: worker.state is AgentState.DRAINING)
    await env.publish(message())
    await settle()
    assert worker.succeeded == 0
    await env.control("resume", "*")
    await eventually(lambda: worker.succeeded == 1)
    assert worker.state is AgentState.UP


async def test_drain_for_another_agent_is_ignored(env: Env) -> None:
    """A drain aimed at another agent id changes nothing here."""
    worker = await env.start({CAP: echo.make()}, agent_id="me")
    await env.control("drain", "someone-else")
    await env.publish(message())
    await eventually(lambda: worker.succeeded == 1)
    assert worker.state is AgentState.UP


async def test_cancel_fails_the_running_task_permanently(env: Env) -> None:
    """``cancel`` for a running task stops its handler and reports ``cancelled``, not
    retryable; the message is acked."""
    gate = Gate()
    await env.start({CAP: gate})
    await env.publish(message("slow"))
    await eventually(lambda: gate.started)
    await env.control("cancel", "wf/slow")
    await eventually(lambda: len(env.reports.kinds("wf/slow")) == 2)
    error = env.reports.final("wf/slow").error
    assert error is not None
    assert (error.kind, error.retryable) == ("cancelled", False)
    assert await take_waiting(env.bus) is None


async def test_a_cancel_up_to_an_older_attempt_leaves_the_newer_one_running(env: Env) -> None:
    """The scheduler gave attempt 1 up as lost and cancels it, but attempt 2 runs here by the
    time the order arrives: it goes on and succeeds; a cancel up to attempt 2 would stop it."""
    gate = Gate()
    worker = await env.start({CAP: gate})
    await env.publish(message("slow", attempt=2))
    await eventually(lambda: gate.started)
    order = Control(action="cancel", target="wf/slow", at=env.clock.now(), attempt=1)
    await env.bus.publish_control(encode(order))
    await settle()
    assert worker.cancel("wf/slow", up_to=1) is False  # what the order found: nothing to stop
    gate.opened.set()
    await eventually(lambda: env.reports.kinds("wf/slow") == ["started", "succeeded"])


# ----------------------------------------------------------------------------- stopping


async def test_stop_lets_work_finish_within_the_grace(env: Env) -> None:
    """stop(grace) waits for a handler that finishes in time, and reports its result."""
    gate = Gate()
    worker = await env.start({CAP: gate})
    await env.publish(message())
    await eventually(lambda: gate.started)
    stopping = asyncio.create_task(worker.stop(10))
    await settle()
    assert not stopping.done()
    gate.opened.set()
    await stopping
    assert env.reports.kinds("wf/a") == ["started", "succeeded"]
    assert await env.registry.agents() == []


async def test_stop_gives_unfinished_work_back_to_the_queue(env: Env, clock: FakeClock) -> None:
    """After the grace, running handlers are cancelled without a report and their messages go
    back to the queue (redelivered); the agent leaves the registry."""
    gate = Gate()
    worker = await env.start({CAP: gate})
    await env.publish(message())
    await eventually(lambda: gate.started)
    stopping = asyncio.create_task(worker.stop(5))
    await settle()
    assert not stopping.done()
    clock.advance(5)
    await stopping
    assert env.reports.kinds("wf/a") == ["started"]
    back = await take_waiting(env.bus)
    assert back is not None
    assert back.redelivered
    assert await env.registry.agents() == []
    assert worker.failed == 0


async def test_a_second_stop_hurries_the_first(env: Env) -> None:
    """stop(0) during a graceful stop cancels the remaining work at once (a second Ctrl-C)."""
    gate = Gate()
    worker = await env.start({CAP: gate})
    await env.publish(message())
    await eventually(lambda: gate.started)
    graceful = asyncio.create_task(worker.stop(3600))
    await settle()
    await worker.stop(0)
    await graceful
    assert (await take_waiting(env.bus)) is not None


async def test_run_worker_stops_on_sigterm(env: Env) -> None:
    """The entry point stops the worker when the process gets SIGTERM."""
    worker = Worker(env.bus, env.registry, {CAP: echo.make()}, name="w", clock=env.clock)
    running = asyncio.create_task(run_worker(worker, grace=0))
    await eventually(env.registry.agents, "registration")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, 5)
    assert await env.registry.agents() == []


async def test_run_worker_collects_young_garbage_less_often_while_it_runs(env: Env) -> None:
    """While the entry point runs, the young generation waits for YOUNG_THRESHOLD
    allocations and the start-up heap is frozen; both are as they were once it returns."""
    gc.unfreeze()  # as in a fresh process (a test of the control centre may have frozen it)
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    worker = Worker(env.bus, env.registry, {CAP: echo.make()}, name="w", clock=env.clock)
    running = asyncio.create_task(run_worker(worker, grace=0))
    await eventually(env.registry.agents, "registration")
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
    assert gc.get_freeze_count() > frozen
    await worker.stop(0)
    await asyncio.wait_for(running, 5)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)


# ---------------------------------------------------------------------------- heartbeats


async def test_heartbeats_keep_the_record_alive_with_counts(env: Env, clock: FakeClock) -> None:
    """The record outlives its ttl while heartbeats refresh it, and carries the counters."""
    gate = Gate()
    await env.start({CAP: gate}, heartbeat_interval=2, ttl=5, concurrency=3)
    await env.publish(message())
    await eventually(lambda: gate.started)
    for _ in range(10):  # 20 s, four times the ttl
        clock.advance(2)
        await settle()
    (record,) = await env.registry.agents()
    assert (record.last_seen, record.in_flight, record.concurrency) == (clock.now(), 1, 3)
    assert record.capabilities == (CAP,)
    assert record.pid == os.getpid()


async def test_a_lapsed_record_is_registered_again(env: Env, clock: FakeClock) -> None:
    """When the registry has forgotten the agent, the next heartbeat registers it again."""
    worker = await env.start({CAP: echo.make()}, heartbeat_interval=2, ttl=5)
    await env.registry.deregister(worker.id)
    clock.advance(2)
    await eventually(env.registry.agents, "re-registration")


async def test_repr_shows_the_counters(env: Env) -> None:
    """repr names the worker and shows in-flight, succeeded and failed counts."""
    worker = await env.start({CAP: echo.make()}, name="edge", agent_id="edge-1")
    await env.publish(message())
    await eventually(lambda: worker.succeeded == 1)
    assert repr(worker) == (
        "<Worker name=edge id=edge-1 state=up in_flight=0 succeeded=1 failed=0>"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"handlers": {}}, "has no handlers"),
        ({"handlers": {"Bad Cap": echo.make()}}, "capability 'Bad Cap' is not allowed"),
        ({"concurrency": 0}, "concurrency must be a whole number >= 1, got 0"),
        ({"heartbeat_interval": 5, "ttl": 5}, r"ttl \(5\) must be longer than heartbeat_interval"),
    ],
)
def test_bad_settings_are_refused(clock: FakeClock, options: dict[str, Any], message: str) -> None:
    """Each bad worker setting is a ConfigError naming it."""
    handlers = options.pop("handlers", {CAP: echo.make()})
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    with pytest.raises(ConfigError, match=message):
        Worker(bus, registry, handlers, name="w", **options)
