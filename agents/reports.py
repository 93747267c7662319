"""How an agent tells the scheduler about an attempt: its reports, and where a large output
goes before its report is sent.

A result report always ends the attempt, one way or another (:meth:`Reporter.result`): what
cannot be encoded or is too large goes out as a failed report ``malformed`` saying why; a
publish the bus refuses is replaced by a small failed report; a bus that stays unavailable
is tried again for a few seconds, then the task message goes back to the broker. Nothing is
dropped without a log line at error level.

Reports ready in the same turn of the event loop leave together (:class:`ReportBatcher`): one
batch message of up to :data:`BATCH_REPORTS` small reports (:func:`core.messages.batch`), one
publish and one confirm for all of them, and each report's task message is acked only after
that confirm. Nothing waits for a batch to fill: what is there at the end of the turn goes,
so a lone report leaves as soon as it would alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from structlog.typing import FilteringBoundLogger

from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.jsoncheck import safe_text, size_text
from agentdeck.core.messages import (
    VERSION,
    ErrorModel,
    Report,
    TaskMessage,
    UsageModel,
    batch,
    encode,
)
from agentdeck.core.models import JSON, ErrorInfo, Usage
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import Bus

TRACE_HEADER = "traceparent"
"""The W3C trace context header, carried from the task message to its reports."""

REPORT_LIMIT = 16 * 1024 * 1024
"""The largest report an agent sends (bytes of JSON): RabbitMQ 4's default
``max_message_size`` (3.x allows 128 MiB). A larger one would be refused by the broker."""

INLINE_FALLBACK = REPORT_LIMIT
"""The largest output (bytes of JSON) sent inside its report when the blob store fails."""

PUBLISH_RETRY_DELAYS: tuple[float, ...] = (0.5, 2.0)
"""Seconds waited before each new try of a result report the bus could not take (it said
BackendUnavailable): an attempt ends within seconds whatever the bus does. The RabbitMQ bus
already retries within its own ``publish_timeout`` before it says so."""

ERROR_CHARS = 4000
"""The most characters of an error message a report carries (an exception may quote a whole
document); the rest is cut, with a note of how much."""

TRANSIENT = (BackendUnavailable, ConnectionError, TimeoutError)
"""What a bus raises when it may take the same report later; any other error is a refusal of
this report, which trying again cannot change."""

BATCH_REPORTS = 256
"""The most reports one batch message carries (the scheduler's report prefetch)."""

BATCH_BYTES = 256 * 1024
"""A report larger than this travels alone; a batch stops growing past it."""

Settle = Literal["ack", "requeue", "reject"]


class ReportBatcher:
    """Publishes the reports handed to :meth:`publish` in one turn of the event loop as one
    batch message (a lone one as itself), and tells each caller what became of its own.

    Nagle-free: the batch leaves at the end of the turn in which its first report came, never
    later; ``max_reports`` and ``max_bytes`` bound one message, and what is over goes in
    another, at the same time. A batch the bus refuses fails every report in it, each caller
    then deciding (as for a lone report) whether to try again.
    """

    def __init__(
        self, bus: Bus, *, max_reports: int = BATCH_REPORTS, max_bytes: int = BATCH_BYTES
    ) -> None:
        if max_reports < 1 or max_bytes < 1:
            raise ValueError(
                f"max_reports and max_bytes must be at least 1, got {max_reports!r} and "
                f"{max_bytes!r}"
            )
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.sent = 0
        """Messages published (batches and lone reports)."""
        self._bus = bus
        self._queue: list[tuple[bytes, Mapping[str, str], asyncio.Future[None]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<ReportBatcher queued={len(self._queue)} sent={self.sent}>"

    async def publish(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish ``body`` (one encoded report) with the next batch; returns once the bus
        confirmed it, or raises what the bus raised for its batch."""
        if len(body) > self.max_bytes:  # large: alone, and no batch waits for it
            await self._bus.publish_report(body, headers)
            self.sent += 1
            return
        loop = asyncio.get_running_loop()
        if not self._queue:
            loop.call_soon(self._flush)
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((body, headers, done))
        await done

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        chunk: list[tuple[bytes, Mapping[str, str], asyncio.Future[None]]] = []
        size = 0
        for entry in queue:
            if chunk and (len(chunk) >= self.max_reports or size + len(entry[0]) > self.max_bytes):
                self._send(chunk)
                chunk, size = [], 0
            chunk.append(entry)
            size += len(entry[0])
        if chunk:
            self._send(chunk)

    def _send(self, chunk: list[tuple[bytes, Mapping[str, str], asyncio.Future[None]]]) -> None:
        task = asyncio.ensure_future(self._publish(chunk))
        self._sending.add(task)  # held: the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)

    async def _publish(
        self, chunk: list[tuple[bytes, Mapping[str, str], asyncio.Future[None]]]
    ) -> None:
        waiting = [entry for entry in chunk if not entry[2].done()]  # a caller cancelled
        if not waiting:
            return
        try:
            if len(waiting) == 1:
                body, headers, _ = waiting[0]
                await self._bus.publish_report(body, headers)
            else:
                # The scheduler reads no report headers: each report's trace header stays
                # with its task message; a batch carries none.
                await self._bus.publish_report(batch(Report, [e[0] for e in waiting]), {})
            self.sent += 1
        except Exception as exc:  # any engine's error goes to every caller
            for _, _, done in waiting:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, _, done in waiting:
            if not done.done():
                done.set_result(None)


@dataclass(frozen=True, slots=True)
class Sent:
    """What became of an attempt's result report.

    ``error``: what the report that went out said (None: it succeeded); when nothing went out,
    the error that was to be sent. ``settle``: what to do with the task message: ``ack`` (a
    report is on the bus), ``requeue`` (the bus was unavailable throughout: another try
    later, by this agent or another) or ``reject`` (the bus refused even a small failed
    report: the message is kept aside for a person, and the scheduler's dispatch deadline
    ends the attempt).
    """

    error: ErrorInfo | None
    settle: Settle


@dataclass(eq=False)
class Started:
    """An attempt's ``started`` report, due at ``due`` unless its handler ends first (see
    :meth:`Reporter.start_report`)."""

    due: float
    order: int
    headers: Mapping[str, str]
    message: TaskMessage
    dropped: bool = False
    """Sent, or no longer wanted: the timer skips it."""
    task: asyncio.Task[bool] | None = None
    """Its publish, once due."""

    def __lt__(self, other: Started) -> bool:
        return (self.due, self.order) < (other.due, other.order)


class Reporter:
    """Publishes one agent's reports on the bus, each with its task message's trace header.

    ``limit``: the largest report body in bytes; ``retry_delays``: the waits between tries of
    a result report while the bus is unavailable (on ``clock``).
    """

    def __init__(
        self,
        bus: Bus,
        clock: Clock,
        agent_id: str,
        log: FilteringBoundLogger,
        *,
        limit: int = REPORT_LIMIT,
        retry_delays: Sequence[float] = PUBLISH_RETRY_DELAYS,
    ) -> None:
        self.agent_id = agent_id
        self.limit = limit
        self.retry_delays = tuple(retry_delays)
        self._bus = bus
        self._clock = clock
        self._log = log
        self.batcher = ReportBatcher(bus)
        """Where the reports go: in batches of those ready at once."""
        # The `started` reports not due yet (see start_report), earliest first; how many of
        # them are still to be sent; the one timer that sends them, and when it wakes.
        self._waiting: list[Started] = []
        self._pending = 0
        self._order = itertools.count()
        self._timer: asyncio.Future[None] | None = None
        self._timer_due = 0.0

    def __repr__(self) -> str:
        return f"<Reporter agent={self.agent_id} limit={self.limit}>"

    def make(
        self,
        message: TaskMessage,
        kind: Literal["started", "succeeded", "failed"],
        *,
        output: JSON = None,
        error: ErrorInfo | None = None,
        started_at: float | None = None,
        usage: Usage | None = None,
    ) -> Report:
        """A report on ``message``'s attempt, its error made safe to send (see
        :func:`wire_error`)."""
        return Report(
            kind=kind,
            task_id=message.task_id,
            attempt=message.attempt,
            agent_id=self.agent_id,
            at=self._clock.now(),
            output=output,
            error=wire_error(error) if error else None,
            started_at=started_at,
            usage=UsageModel.of(usage) if usage is not None else None,
        )

    async def report(
        self,
        headers: Mapping[str, str],
        message: TaskMessage,
        kind: Literal["started", "succeeded", "failed"],
        *,
        output: JSON = None,
        error: ErrorInfo | None = None,
        started_at: float | None = None,
        usage: Usage | None = None,
    ) -> bool:
        """Publish a report on ``message``'s attempt, one try; False (logged) when it could
        not be. For a result, :meth:`result` is the one that never gives up silently."""
        report = self.make(
            message, kind, output=output, error=error, started_at=started_at, usage=usage
        )
        return await self.publish(report, headers)

    async def publish(self, report: Report, headers: Mapping[str, str]) -> bool:
        """Publish ``report`` (``headers``: its task message's), one try; False (logged)
        when it did not encode or the bus refused it."""
        body, problem = self.encode(report)
        if problem is not None:
            self._log.error(
                "report_publish_failed", task_id=report.task_id, kind=report.kind, error=problem
            )
            return False
        return await self._send(body, headers, report.kind, report.task_id) is None

    async def refusal(self, ids: tuple[str, int], reason: str, headers: Mapping[str, str]) -> bool:
        """Fail attempt ``ids`` (task id, attempt) ``malformed`` for a task message that could
        not be run (it did not decode, or names a capability this agent does not serve), one
        try; False (logged) when it could not be published."""
        report = Report(
            kind="failed",
            task_id=ids[0],
            attempt=ids[1],
            agent_id=self.agent_id,
            at=self._clock.now(),
            error=wire_error(ErrorInfo("malformed", reason, retryable=False)),
        )
        return await self.publish(report, headers)

    async def result(
        self,
        headers: Mapping[str, str],
        message: TaskMessage,
        *,
        output: JSON,
        error: ErrorInfo | None,
        started_at: float | None,
        usage: Usage | None,
        encoded: bytes | None = None,
    ) -> Sent:
        """Publish the attempt's result (``succeeded`` with ``output``, or ``failed`` with
        ``error``), and say what became of it. Never raises; returns within seconds (the
        bus's own timeout, times one plus ``retry_delays``, plus their sum).

        - A report that does not encode or is over ``limit`` is replaced by a failed one,
          ``malformed``, not retryable, saying why.
        - While the bus raises BackendUnavailable, the same report is tried again after each
          of ``retry_delays``; should it still fail, a small failed report
          ``report_not_sent`` (retryable: the retry policy runs the task again) is tried once,
          and if the bus does not take that either, the task message is requeued.
        - Any other error is the bus refusing this report: a succeeded one is replaced by a
          failed ``malformed`` (not retryable) naming the bus's reason; if even that is
          refused, the task message is rejected (dead-lettered).

        ``encoded``: ``output`` as compact JSON, when the caller has it from checking it
        (:func:`agents.attempt.check_output`): a succeeded report without usage is then
        written around it (:func:`succeeded_body`) instead of through the model, which
        would check and write the output again.
        """
        kind: Literal["succeeded", "failed"] = "failed" if error else "succeeded"
        if kind == "succeeded" and usage is None and encoded is not None:
            body = succeeded_body(self.agent_id, message, self._clock.now(), started_at, encoded)
            problem = self._oversize(body)
        else:
            report = self.make(
                message,
                kind,
                output=None if error else output,
                error=error,
                started_at=started_at,
                usage=usage,
            )
            body, problem = self.encode(report)
        if problem is not None:
            error = ErrorInfo("malformed", f"the {kind} report cannot be sent: {problem}", False)
            kind, body = "failed", self._failed(message, error, started_at, usage)
        failure = await self._send(body, headers, kind, message.task_id, self.retry_delays)
        if failure is None:
            return Sent(error, "ack")
        transient = isinstance(failure, TRANSIENT)
        if kind == "succeeded":
            # The output made it large or odd; a failed report is small and plain.
            size = size_text(len(body))
            reason = safe_text(failure, 500)
            error = (
                ErrorInfo(
                    "report_not_sent",
                    f"the succeeded report ({size}) could not be published "
                    f"({1 + len(self.retry_delays)} tries): {reason}",
                )
                if transient
                else ErrorInfo(
                    "malformed", f"the bus refused the succeeded report ({size}): {reason}", False
                )
            )
            body = self._failed(message, error, started_at, usage)
            failure = await self._send(body, headers, "failed", message.task_id)
            if failure is None:
                return Sent(error, "ack")
            transient = isinstance(failure, TRANSIENT)
        settle: Settle = "requeue" if transient else "reject"
        self._log.error(
            "task_report_undeliverable",
            task_id=message.task_id,
            attempt=message.attempt,
            error_kind=error.kind if error else None,
            error=safe_text(failure, 500),
            settle=settle,
        )
        return Sent(error, settle)

    def encode(self, report: Report) -> tuple[bytes, str | None]:
        """``report``'s body, with None when it can be sent; else why not (it does not encode,
        or it is over ``limit``)."""
        try:
            body = encode(report)
        except Exception as exc:  # pydantic's serializer: depth, types, text it cannot write
            return b"", f"it does not encode ({safe_text(exc, 500)})"
        return body, self._oversize(body)

    def _oversize(self, body: bytes) -> str | None:
        if len(body) > self.limit:
            return (
                f"it is {size_text(len(body))}, over the {size_text(self.limit)} a report may carry"
            )
        return None

    def _failed(
        self,
        message: TaskMessage,
        error: ErrorInfo,
        started_at: float | None,
        usage: Usage | None,
    ) -> bytes:
        """The body of a failed report with ``error``: ids, numbers and safe text, so it
        encodes (the usage is dropped if it is what did not)."""
        report = self.make(message, "failed", error=error, started_at=started_at, usage=usage)
        body, problem = self.encode(report)
        if problem is not None:
            report = self.make(message, "failed", error=error, started_at=started_at)
            body, _ = self.encode(report)
        return body

    async def _send(
        self,
        body: bytes,
        headers: Mapping[str, str],
        kind: str,
        task_id: str,
        retry_delays: Sequence[float] = (),
    ) -> Exception | None:
        """Publish ``body``, trying again after each of ``retry_delays`` while the bus is
        unavailable; None once published, else the last error (each one logged)."""
        carried = {TRACE_HEADER: headers[TRACE_HEADER]} if TRACE_HEADER in headers else {}
        waits = list(retry_delays)
        while True:
            try:
                await self.batcher.publish(body, carried)
                return None
            except Exception as exc:  # any engine's error: the caller decides what follows
                again = isinstance(exc, TRANSIENT) and bool(waits)
                self._log.warning(
                    "report_publish_failed",
                    task_id=task_id,
                    kind=kind,
                    size=len(body),
                    error=safe_text(exc, 500),
                    retry_in=waits[0] if again else None,
                )
                if not again:
                    return exc
            await self._clock.sleep(waits.pop(0))

    async def start_report(
        self, headers: Mapping[str, str], message: TaskMessage, after: float
    ) -> Started | None:
        """Report ``started`` now (``after`` <= 0), or have it reported after ``after``
        seconds; pass what this returns to :meth:`end_start_report`.

        The reports not yet due wait on one timer of this reporter (:meth:`_due`), not on a
        timer task each: a task that ends before ``after`` (most, under load) costs no
        asyncio task of its own."""
        if after <= 0:
            await self.report(headers, message, "started")
            return None
        started = Started(self._clock.now() + after, next(self._order), headers, message)
        heapq.heappush(self._waiting, started)
        self._pending += 1
        if self._timer is None or self._timer.done() or started.due < self._timer_due:
            if self._timer is not None:  # due later than this one (or ended): sleep less
                self._timer.cancel()
            self._timer_due = started.due
            self._timer = asyncio.ensure_future(self._due())
        return started

    async def end_start_report(self, started: Started | None) -> None:
        """The handler is done: drop the ``started`` report (not yet due, or still being
        published: a late ``started`` matches nothing at the scheduler once the result is in)."""
        if started is None:
            return
        if started.task is None:  # not due yet: never sent
            if not started.dropped:
                started.dropped = True
                self._pending -= 1
                if not self._pending:  # nothing left to wait for: no timer left behind
                    self._waiting.clear()
                    if self._timer is not None:
                        self._timer.cancel()
                        self._timer = None
            return
        started.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await started.task

    async def _due(self) -> None:
        """Send each ``started`` report when it is due, the earliest first, until none waits."""
        while self._waiting:
            first = self._waiting[0]
            if first.dropped:
                heapq.heappop(self._waiting)
                continue
            wait = first.due - self._clock.now()
            if wait > 0:
                self._timer_due = first.due
                await self._clock.sleep(wait)
                continue
            heapq.heappop(self._waiting)
            first.dropped = True  # sent: no longer waiting
            self._pending -= 1
            first.task = asyncio.ensure_future(self.report(first.headers, first.message, "started"))
        self._timer = None


def succeeded_body(
    agent_id: str,
    message: TaskMessage,
    at: float,
    started_at: float | None,
    output: bytes,
) -> bytes:
    """The body of a ``succeeded`` report without usage on ``message``'s attempt, written
    around ``output``, its output already as compact JSON: the bytes ``encode(Report(...))``
    writes for the same report (finite times as Python writes them, which pydantic reads
    back exactly), without building the model or writing the output a second time."""
    ids = _json_text(message.task_id), message.attempt, _json_text(agent_id)
    started = "null" if started_at is None else repr(float(started_at))
    return (
        b'{"v":%d,"type":"report","kind":"succeeded","task_id":%s,"attempt":%d,'
        b'"agent_id":%s,"at":%s,"output":%s,"error":null,"started_at":%s,"usage":null}'
        % (VERSION, ids[0], ids[1], ids[2], repr(float(at)).encode(), output, started.encode())
    )


_TEXT = json.JSONEncoder(ensure_ascii=False)
"""Writes a string as JSON (built once: ``json.dumps`` with options builds one per call)."""


def _json_text(text: str) -> bytes:
    return _TEXT.encode(text).encode()


def wire_error(error: ErrorInfo) -> ErrorModel:
    """``error`` as a report carries it: text that encodes, the message cut to
    :data:`ERROR_CHARS`, a ``retry_after`` that is not a finite number >= 0 left out."""
    after = error.retry_after
    finite = isinstance(after, int | float) and math.isfinite(after) and after >= 0
    return ErrorModel(
        kind=safe_text(error.kind, 200),
        message=safe_text(error.message, ERROR_CHARS),
        retryable=bool(error.retryable),
        retry_after=float(after) if finite and after is not None else None,
    )


async def offload(
    outputs: OutputStore,
    message: TaskMessage,
    output: JSON,
    encoded: bytes,
    inline_fallback: int,
    log: FilteringBoundLogger,
) -> tuple[JSON, ErrorInfo | None]:
    """What the report carries: ``output``, or the reference to it in the blob store.

    Should the store fail, the output itself if the bus takes it (the scheduler then tries
    the store in its turn), else an error: a retryable failure reruns the handler, as a lost
    result would, but counted against the task's attempts rather than forever.
    """
    try:
        ref = await outputs.offload(message.task_id, message.attempt, output, encoded=encoded)
    except Exception as exc:  # any engine's error: the job must still report
        size = len(encoded)
        if size <= inline_fallback:
            log.warning("output_offload_failed", size=size, fallback="inline", error=str(exc))
            return output, None
        log.error("output_offload_failed", size=size, fallback="none", error=str(exc))
        return None, ErrorInfo(
            "output_not_stored",
            f"the output ({size} bytes of JSON) could not be stored in the blob store "
            f"({exc}) and is too large to send inside the report "
            f"(over {inline_fallback} bytes)",
        )
    if ref is not output:
        log.info("output_offloaded", size=len(encoded))
    return ref, None
