"""One attempt inside the worker: the delivery it holds, running its handler under the task's
timeout, and what its outcome is.

Pure pieces the :class:`~agents.worker.Worker` puts together: :func:`call_handler` runs a
handler on the worker's clock, :func:`error_of` turns what a handler raised into the
:class:`~core.models.ErrorInfo` its report carries, :func:`check_output` checks the output is
JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

from structlog.typing import FilteringBoundLogger

from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.upstream import Upstream, named_in
from agentdeck.core.clock import Clock
from agentdeck.core.errors import TaskFailed
from agentdeck.core.messages import TaskMessage
from agentdeck.core.models import JSON, ErrorInfo
from agentdeck.core.ports import Delivery

OUTCOMES = ("timeout", "cancelled", "rate_limited")
"""Error kinds that are metrics outcomes of their own; every other error is ``failed``."""


class Cancelled(Exception):
    """The handler was cancelled while the worker itself goes on (an operator's cancel)."""

    def __init__(self, by_operator: bool) -> None:
        super().__init__("cancelled by an operator" if by_operator else "the handler cancelled")
        self.by_operator = by_operator


class TimedOut(Exception):
    """The task's timeout passed on the worker's clock (a handler's own TimeoutError is not
    this: it is reported like any other exception)."""


@dataclass(eq=False, slots=True)
class Job:
    """One delivery a worker holds, from receipt until it is settled."""

    delivery: Delivery
    task: asyncio.Task[None] | None = None
    message: TaskMessage | None = None
    handler_task: asyncio.Task[JSON] | None = None
    cancel_requested: bool = False
    error: ErrorInfo | None = None
    """Why the attempt failed (None: it succeeded, or has not ended)."""

    @property
    def task_id(self) -> str | None:
        """The task's id once the body has been decoded."""
        return self.message.task_id if self.message else None


async def call_handler(
    job: Job, handler: Handler, context: TaskContext, seconds: float, clock: Clock
) -> JSON:
    """The handler's output, or TimedOut after ``seconds`` of ``clock``, or Cancelled.

    A timed-out or cancelled handler is cancelled and waited for, so its clean-up (a shell
    agent ending its processes) is done when this returns.
    """
    if job.cancel_requested:
        raise Cancelled(by_operator=True)
    handler_task = asyncio.ensure_future(_prefetched(handler, context))
    job.handler_task = handler_task
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({handler_task, timer}, return_when=asyncio.FIRST_COMPLETED)
        timed_out = not handler_task.done()
    finally:
        timer.cancel()
        if not handler_task.done():
            handler_task.cancel()
            # Let it clean up, even when we are being cancelled ourselves (shutdown).
            await asyncio.wait([handler_task])
    if timed_out:
        if not handler_task.cancelled():
            handler_task.exception()  # what it did after the deadline no longer counts
        raise TimedOut
    if handler_task.cancelled():
        raise Cancelled(by_operator=job.cancel_requested)
    return handler_task.result()


async def _prefetched(handler: Handler, context: TaskContext) -> JSON:
    """``handler(context)``, once the large upstream outputs its input names in a template
    (``{a.result}``) are fetched, so filling the template does not hold the event loop while
    they are read. Only named ones: an output nobody reads is never fetched. Inside the
    handler's time: a slow blob store counts against the task's timeout."""
    upstream = context.upstream
    if isinstance(upstream, Upstream) and (named := named_in(context.input, upstream.refs)):
        # Should one fail, the handler's own read fails the attempt with the reason: the
        # string may only have looked like a template, so this alone fails nothing.
        with contextlib.suppress(TaskFailed):
            await upstream.load(*named)
    return await handler(context)


def error_of(exc: Exception, timeout: float, log: FilteringBoundLogger) -> ErrorInfo:
    """What a report says about an attempt that raised ``exc`` (``timeout``: the task's)."""
    if isinstance(exc, TimedOut):
        return ErrorInfo("timeout", f"no result within {timeout:g}s")
    if isinstance(exc, Cancelled):
        return ErrorInfo("cancelled", str(exc), retryable=not exc.by_operator)
    if isinstance(exc, TaskFailed):
        return ErrorInfo(exc.kind, exc.message, not exc.non_retryable, exc.retry_after)
    log.warning("task_handler_raised", exc_info=exc)
    return ErrorInfo(type(exc).__name__, str(exc) or repr(exc))


def outcome_of(error: ErrorInfo | None) -> str:
    """The metrics outcome of an attempt: succeeded, timeout, cancelled, rate_limited or
    failed."""
    if error is None:
        return "succeeded"
    return error.kind if error.kind in OUTCOMES else "failed"


def check_output(output: JSON) -> tuple[ErrorInfo | None, bytes]:
    """``output``'s compact JSON, with None when it can travel as JSON; else the
    ``bad_output`` error saying why."""
    try:
        return None, json.dumps(output, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        # The same handler returns the same kind of value next time: retrying cannot help.
        error = ErrorInfo("bad_output", f"the handler's output is not JSON: {exc}", retryable=False)
        return error, b""


async def settle(action: Awaitable[None], log: FilteringBoundLogger) -> None:
    """Ack, reject or requeue; a failure is logged, since the broker redelivers what was not
    settled and nothing here can do better."""
    try:
        await action
    except Exception as exc:
        log.warning("settle_failed", error=str(exc))


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator that may or may not have ``aclose``."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
