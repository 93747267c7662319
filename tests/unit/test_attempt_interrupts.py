"""A handler runs inline in its job's task: the timeout and an operator's cancel interrupt it
through the clock's timer, a shutdown's cancel goes on up (:func:`agents.attempt.call_handler`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from agentdeck.agents.attempt import Cancelled, Job, TimedOut, call_handler
from agentdeck.agents.context import TaskContext
from agentdeck.core.clock import FakeClock
from agentdeck.core.logs import get_logger
from agentdeck.core.messages import TaskMessage
from agentdeck.core.models import JSON


class _Delivery:
    body = b""
    headers: dict[str, str] = {}
    redelivered = False

    async def ack(self) -> None: ...

    async def reject(self, reason: str) -> None: ...

    async def requeue(self) -> None: ...


def _context(clock: FakeClock) -> TaskContext:
    message = TaskMessage(
        task_id="wf/a",
        workflow_id="wf",
        key="a",
        capability="cap",
        attempt=1,
        timeout=5,
        dispatched_at=clock.now(),
    )
    return TaskContext.for_message(
        message, agent_id="ag", now=clock.now(), log=get_logger(__name__)
    )


async def _start(
    clock: FakeClock, handler: Callable[[TaskContext], Awaitable[JSON]]
) -> tuple[Job, asyncio.Task[JSON]]:
    """``handler`` under call_handler (timeout 5 s) in a task of its own, as a job runs it."""
    job = Job(_Delivery())

    async def run() -> JSON:
        return await call_handler(job, handler, _context(clock), 5.0, clock)

    task = asyncio.ensure_future(run())
    for _ in range(3):
        await asyncio.sleep(0)
    return job, task


class _Gate:
    """A handler that waits for ``opened``; ``unwound`` once its clean-up ran."""

    def __init__(self, swallow: bool = False, then: JSON | Exception = None) -> None:
        self.opened = asyncio.Event()
        self.unwound = False
        self.swallow = swallow
        self.then = then

    async def __call__(self, ctx: TaskContext) -> JSON:
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            if not self.swallow:
                raise
        finally:
            self.unwound = True
        if isinstance(self.then, Exception):
            raise self.then
        return self.then


async def test_a_handler_that_returns_gives_its_output_and_leaves_no_timer(
    clock: FakeClock,
) -> None:
    """The output comes back; its timer is gone, so a later advance interrupts nothing."""

    async def quick(ctx: TaskContext) -> JSON:
        await asyncio.sleep(0)
        return {"ok": True}

    job, task = await _start(clock, quick)
    assert await task == {"ok": True}
    assert job.handler_task is None
    clock.advance(10)
    assert job.interrupted is None


async def test_the_timeout_interrupts_the_handler_and_is_timed_out(clock: FakeClock) -> None:
    """At the timeout (not before) the handler is cancelled, has unwound, and TimedOut comes
    out; the job's task is not left cancelling."""
    gate = _Gate()
    job, task = await _start(clock, gate)
    clock.advance(4.9)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(0.1)
    with pytest.raises(TimedOut):
        await task
    assert gate.unwound
    assert task.cancelling() == 0
    assert job.interrupted == "timeout"


async def test_an_operators_cancel_is_cancelled_by_operator(clock: FakeClock) -> None:
    """interrupt("operator") while the handler runs gives Cancelled(by_operator=True)."""
    gate = _Gate()
    job, task = await _start(clock, gate)
    job.interrupt("operator")
    with pytest.raises(Cancelled) as caught:
        await task
    assert caught.value.by_operator
    assert gate.unwound


async def test_a_shutdown_cancel_goes_on_up(clock: FakeClock) -> None:
    """A cancel of the task from elsewhere (the worker stopping) is not the attempt's outcome:
    CancelledError comes out, the handler unwound."""
    gate = _Gate()
    _, task = await _start(clock, gate)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.unwound


async def test_a_shutdown_at_the_timeout_wins(clock: FakeClock) -> None:
    """The timeout and a shutdown in the same turn: CancelledError, not TimedOut."""
    gate = _Gate()
    _, task = await _start(clock, gate)
    clock.advance(5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_handler_that_cancels_itself_is_cancelled_not_by_operator(
    clock: FakeClock,
) -> None:
    """A handler raising CancelledError on its own (nobody cancelled) is Cancelled, retryable."""

    async def gives_up(ctx: TaskContext) -> JSON:
        raise asyncio.CancelledError

    _, task = await _start(clock, gives_up)
    with pytest.raises(Cancelled) as caught:
        await task
    assert not caught.value.by_operator


async def test_a_handler_that_swallows_the_timeout_is_still_timed_out(clock: FakeClock) -> None:
    """What a handler does after its deadline no longer counts: it returned, TimedOut all the
    same, and the task's cancel request is taken back."""
    gate = _Gate(swallow=True, then={"late": True})
    _, task = await _start(clock, gate)
    clock.advance(5)
    with pytest.raises(TimedOut):
        await task
    assert task.cancelling() == 0


async def test_a_handler_that_swallows_an_operators_cancel_keeps_its_outcome(
    clock: FakeClock,
) -> None:
    """An operator's cancel the handler catches: what it raised next is its outcome."""
    gate = _Gate(swallow=True, then=ValueError("after the cancel"))
    job, task = await _start(clock, gate)
    job.interrupt("operator")
    with pytest.raises(ValueError, match="after the cancel"):
        await task
    assert task.cancelling() == 0


async def test_a_cancel_requested_before_the_handler_starts_never_runs_it(
    clock: FakeClock,
) -> None:
    """A job cancelled before its handler starts is Cancelled at once; interrupt() on a job
    whose handler is not running does nothing."""
    ran: list[bool] = []

    async def handler(ctx: TaskContext) -> JSON:
        ran.append(True)
        return None

    job = Job(_Delivery())
    job.interrupt("operator")  # nothing runs: nothing to cancel
    assert job.interrupted is None
    job.cancel_requested = True
    with pytest.raises(Cancelled):
        await call_handler(job, handler, _context(clock), 5.0, clock)
    assert ran == []


async def test_fake_clock_call_later_fires_on_the_advance_that_passes_it_in_order(
    clock: FakeClock,
) -> None:
    """call_later callbacks run once, in order of their times, when advance passes them;
    a cancelled one never; 0 seconds runs on the loop's next turn."""
    calls: list[str] = []
    clock.call_later(2, lambda: calls.append("b"))
    clock.call_later(1, lambda: calls.append("a"))
    clock.call_later(1.5, lambda: calls.append("x")).cancel()
    clock.call_later(0, lambda: calls.append("now"))
    await asyncio.sleep(0)
    assert calls == ["now"]
    clock.advance(0.9)
    assert calls == ["now"]
    clock.advance(1.1)
    assert calls == ["now", "a", "b"]
    clock.advance(5)
    assert calls == ["now", "a", "b"]
