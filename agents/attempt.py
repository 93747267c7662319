"""One attempt inside the worker: the delivery it holds, running its handler under the task's
timeout, and what its outcome is.

Pure pieces the :class:`~agents.worker.Worker` puts together: :func:`call_handler` runs a
handler on the worker's clock, :func:`error_of` turns what a handler raised into the
:class:`~core.models.ErrorInfo` its report carries, :func:`check_output` checks the output can
travel as JSON and :func:`oversize` that it fits in its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import traceback
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from structlog.typing import FilteringBoundLogger

from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.reports import Settle, offload
from agentdeck.agents.upstream import Upstream, named_in
from agentdeck.core.clock import Clock
from agentdeck.core.errors import MessageError, TaskFailed
from agentdeck.core.jsoncheck import find_problem, largest_text, safe_text, size_text
from agentdeck.core.messages import TaskMessage
from agentdeck.core.models import JSON, ErrorInfo
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import Delivery

LOGGED_CHARS = 1000
"""The most characters of a handler's exception text written to the log (the report carries
more: see :data:`agents.reports.ERROR_CHARS`)."""

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
    handler_task: asyncio.Task[Any] | None = None
    """The task its handler runs in (the job's own, see :func:`call_handler`) while it runs;
    None before and after."""
    cancel_requested: bool = False
    interrupted: Literal["timeout", "operator"] | None = None
    """Why :meth:`interrupt` cancelled the running handler (None: it did not)."""
    error: ErrorInfo | None = None
    """Why the attempt failed (None: it succeeded, or has not ended)."""
    undecodable: MessageError | None = None
    """Why its message (or its item of a batch) did not decode (None: it did, or not yet)."""
    ids: tuple[str, int] | None = None
    """(task id, attempt) read from a batch item that did not decode, when they could be."""

    @property
    def task_id(self) -> str | None:
        """The task's id once the body has been decoded."""
        return self.message.task_id if self.message else None

    def interrupt(self, why: Literal["timeout", "operator"]) -> None:
        """Cancel the handler if it runs now (once: the first reason stands); a handler that
        has not started or has ended is left alone."""
        if self.handler_task is not None and self.interrupted is None:
            self.interrupted = why
            self.handler_task.cancel()


async def call_handler(
    job: Job, handler: Handler, context: TaskContext, seconds: float, clock: Clock
) -> JSON:
    """The handler's output, or TimedOut after ``seconds`` of ``clock``, or Cancelled.

    The handler runs in the calling task, not in one of its own, under a timer of ``clock``
    (no task either): the timeout and an operator's cancel (:meth:`Job.interrupt`) cancel
    this task while the handler runs, and the CancelledError is turned into TimedOut or
    Cancelled here, as :func:`asyncio.timeout` does; a cancel from elsewhere (a shutdown)
    goes on up. A timed-out or cancelled handler has unwound (its clean-up done, a shell
    agent's processes ended) when this returns; what it does after its deadline no longer
    counts.
    """
    if job.cancel_requested:
        raise Cancelled(by_operator=True)
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("call_handler runs in a task")
    before = task.cancelling()
    job.interrupted = None
    job.handler_task = task
    timer = clock.call_later(seconds, partial(job.interrupt, "timeout"))
    try:
        try:
            output = await _prefetched(handler, context)
        finally:
            timer.cancel()
            job.handler_task = None  # from here on nothing interrupts this task
    except asyncio.CancelledError:
        if job.interrupted is None:
            if task.cancelling() > before:
                raise  # the worker is stopping: not this attempt's outcome
            raise Cancelled(by_operator=False) from None  # the handler cancelled itself
        if task.uncancel() > before:
            raise  # the worker is stopping as well: that wins
        if job.interrupted == "timeout":
            raise TimedOut from None
        raise Cancelled(by_operator=True) from None
    except Exception:
        if job.interrupted is not None:  # it caught the cancel and failed otherwise
            task.uncancel()
            if job.interrupted == "timeout":
                raise TimedOut from None
        raise
    if job.interrupted is not None:  # it caught the cancel and returned all the same
        task.uncancel()
        if job.interrupted == "timeout":
            raise TimedOut
    return output


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
    text = str(exc)
    if len(text) <= LOGGED_CHARS:
        log.warning("task_handler_raised", exc_info=exc)
    else:
        # The console renderer highlights an exception's text in time that grows faster than
        # its length (a second for 5,000 characters): the event loop would stall on it.
        log.warning(
            "task_handler_raised",
            error_type=type(exc).__name__,
            error=safe_text(text, LOGGED_CHARS),
            traceback="".join(traceback.format_tb(exc.__traceback__)),
        )
    return ErrorInfo(type(exc).__name__, text or repr(exc))


def outcome_of(error: ErrorInfo | None) -> str:
    """The metrics outcome of an attempt: succeeded, timeout, cancelled, rate_limited or
    failed."""
    if error is None:
        return "succeeded"
    return error.kind if error.kind in OUTCOMES else "failed"


def check_output(output: JSON, limit: int | None = None) -> tuple[ErrorInfo | None, bytes]:
    """``output``'s compact JSON (UTF-8), with None when it can travel as JSON; else the
    ``malformed`` error (not retryable) naming what and where, as
    ``output.items[3].when: datetime is not JSON (use .isoformat())``.

    ``limit``: the most bytes it may take, or None (it may go to the blob store, whatever its
    size). Never raises.
    """
    # The same handler returns the same kind of value next time: retrying cannot help.
    problem = find_problem(output, max_values=None if limit is None else limit // 2)
    if problem is not None:
        return ErrorInfo("malformed", str(problem), retryable=False), b""
    try:
        encoded = json.dumps(output, ensure_ascii=False, separators=(",", ":")).encode()
    except Exception as exc:  # find_problem's rules are stricter than json's: not expected
        return ErrorInfo("malformed", f"output does not encode: {exc}", retryable=False), b""
    return None, encoded


def oversize(output: JSON, size: int, limit: int, outputs: OutputStore | None) -> ErrorInfo | None:
    """The ``malformed`` error (not retryable) for an output of ``size`` bytes of JSON that is
    to go inside its report, when that is over ``limit``; it says where most of it is and
    how the blob store (``outputs``, the agent's; None: it has none) would keep it."""
    if size <= limit:
        return None
    message = f"output is {size_text(size)} of JSON, over the {size_text(limit)} a report may carry"
    largest = largest_text(output)
    if largest is not None and largest[1] * 2 >= size:
        message += f"; most of it is {largest[0]} ({largest[1]} characters)"
    if outputs is None:
        message += (
            "; give this agent a blob_url (the daemon's) and outputs over output_inline_limit "
            "go to the blob store, the report carrying a reference"
        )
    else:
        message += (
            f"; output_inline_limit is {size_text(outputs.limit)}: under {size_text(limit)}, "
            "the blob store keeps such outputs and the report carries a reference"
        )
    return ErrorInfo("malformed", message, retryable=False)


async def sendable(
    message: TaskMessage,
    output: JSON,
    *,
    limit: int,
    outputs: OutputStore | None,
    inline_fallback: int,
    log: FilteringBoundLogger,
) -> tuple[JSON, ErrorInfo | None, bytes | None]:
    """What the succeeded report of ``message``'s attempt carries (``output``, or its
    reference in the blob store ``outputs``), or the error that fails the attempt instead:
    ``malformed`` when it is not JSON or too large for a report of ``limit`` bytes,
    ``output_not_stored`` when the blob store failed and it is over ``inline_fallback``.
    Third: what it carries as compact JSON, when that is the output itself (None: a
    reference, or an error)."""
    error, encoded = check_output(output, None if outputs else limit)
    if error is not None:
        return None, error, None
    inline = True
    if outputs is not None:
        kept, error = await offload(
            outputs, message, output, encoded, min(inline_fallback, limit), log
        )
        if error is not None:
            return None, error, None
        inline = kept is output
        output = kept
    if inline and (error := oversize(output, len(encoded), limit, outputs)):
        return None, error, None
    return output, None, encoded if inline else None


def settling(delivery: Delivery, how: Settle) -> Awaitable[None]:
    """The ack, requeue or reject of ``delivery`` that :class:`~agents.reports.Sent` asks
    for: a requeued attempt must run again somewhere, since its result is not on the bus."""
    if how == "ack":
        return delivery.ack()
    if how == "requeue":
        return delivery.requeue()
    return delivery.reject("its result report was refused by the bus")


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
