"""The agent runtime: takes task messages for its capabilities, runs their handlers, reports.

One :class:`Worker` serves a set of capabilities with ``concurrency`` slots::

    async with Worker(bus, registry, {"echo": echo}, name="edge-1", concurrency=4) as worker:
        await worker.run()          # until stop() (see agents.main for signals)

For each task it publishes a ``started`` report, runs the handler under the task's timeout,
publishes ``succeeded`` or ``failed``, and only then acks its message (a message carrying
several tasks, :mod:`agents.shared`, once all of their results are published): a crash at
any point leaves the message unacked, so the broker hands it to another agent
(at-least-once). It keeps an :class:`~core.models.AgentRecord` alive in the registry with
heartbeats, and obeys control messages: ``drain`` (stop taking work, finish what runs),
``resume`` and ``cancel``.
A result report carries the usage its handler counted with ``ctx.usage``; what the handler
says while it runs (``ctx.progress``, ``ctx.emit``) goes to the events stream.

The worker does not start or close the bus and registry: whoever made them owns them. The
pieces it puts together live beside it: :mod:`agents.attempt` (one attempt under its timeout),
:mod:`agents.reports` (reports and large outputs), :mod:`agents.presence` (heartbeats),
:mod:`agents.feed` (usage, progress, output) and :mod:`agents.logstream` (log lines).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import os
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import structlog
from opentelemetry.trace import Status, StatusCode, use_span
from structlog.typing import FilteringBoundLogger

from agentdeck.agents.attempt import (
    Job,
    aclose,
    call_handler,
    error_of,
    outcome_of,
    sendable,
    settle,
    settling,
)
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.feed import AttemptFeed, FeedStream
from agentdeck.agents.logstream import LogStream
from agentdeck.agents.presence import check_sending, check_settings, deregister, heartbeat
from agentdeck.agents.reports import (
    INLINE_FALLBACK,
    PUBLISH_RETRY_DELAYS,
    REPORT_LIMIT,
    TRACE_HEADER,
    Reporter,
)
from agentdeck.agents.shared import Shared
from agentdeck.core.clock import Clock, SystemClock
from agentdeck.core.errors import BackendUnavailable, MessageError
from agentdeck.core.logs import get_logger, tee_logs
from agentdeck.core.messages import Control, TaskMessage, decode, decode_batch, peek_ids
from agentdeck.core.models import JSON, AgentRecord, AgentState, ErrorInfo, new_id
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import Bus, Delivery, Registry
from agentdeck.core.tracing import span_ids

if TYPE_CHECKING:
    from agentdeck.core.metrics import Metrics
    from agentdeck.core.tracing import Tracing

__all__ = ["INLINE_FALLBACK", "REPORT_LIMIT", "TRACE_HEADER", "Worker"]


class Worker:
    """Runs the handlers of its capabilities for task messages taken from the bus.

    ``handlers`` maps each capability to its handler. ``concurrency`` is how many tasks run at
    once; it is also the prefetch, so the broker never hands this worker more than it can
    start. ``heartbeat_interval`` and ``ttl`` (seconds) keep its registry record alive: the
    record lapses ``ttl`` seconds after the last heartbeat. ``started_after`` (seconds): report
    ``started`` only once a task has run that long (0: at once); a task that finishes sooner
    goes straight from dispatched to its result, which saves a report per short task (a third
    of the broker's messages for no-op tasks), like Celery's ``task_track_started=False``.

    ``outputs`` (the BlobStore of ``blob_url``) keeps an output over its limit in the blob store
    and reports only the reference (:mod:`core.outputs`), so a large output does not cross the
    bus in its report; None: every output goes inside its report (the scheduler then stores
    large ones). Handlers read large upstream outputs through it too (None: they cannot).
    Should the blob store fail, an output of at most ``inline_fallback`` bytes of JSON goes
    inside its report instead; a larger one fails the attempt as ``output_not_stored``
    (retryable).

    What cannot be sent fails its attempt at once (:mod:`agents.reports`): an output that is
    not JSON or over ``report_limit`` bytes is ``malformed``, naming what and where; a bus
    that cannot take a report is tried again after each of ``publish_retry_delays``
    seconds. Raises ConfigError for bad values.
    """

    def __init__(
        self,
        bus: Bus,
        registry: Registry,
        handlers: Mapping[str, Handler],
        *,
        name: str,
        concurrency: int = 1,
        clock: Clock | None = None,
        heartbeat_interval: float = 2.0,
        ttl: float = 10.0,
        agent_id: str | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        started_after: float = 0.0,
        outputs: OutputStore | None = None,
        inline_fallback: int = INLINE_FALLBACK,
        report_limit: int = REPORT_LIMIT,
        publish_retry_delays: Sequence[float] = PUBLISH_RETRY_DELAYS,
    ) -> None:
        check_settings(name, handlers, concurrency, heartbeat_interval, ttl)
        check_sending(name, report_limit, publish_retry_delays)
        self.report_limit = report_limit
        self.started_after = max(0.0, started_after)
        self.outputs = outputs
        self.inline_fallback = inline_fallback
        self.name = name
        self.id = agent_id or f"{name}-{new_id()}"
        self.concurrency = concurrency
        self.capabilities = tuple(sorted(handlers))
        self._bus = bus
        self._registry = registry
        self._handlers = dict(handlers)
        self._clock: Clock = clock or SystemClock()
        self._interval = heartbeat_interval
        self._ttl = ttl
        self._log = get_logger(__name__, agent=self.id)
        self._assembled: tuple[tuple[object, ...], FilteringBoundLogger] | None = None
        self._started_at = self._clock.now()
        self.metrics = metrics
        """Prometheus metrics to feed (None: none kept)."""
        self.tracing = tracing
        """Where run spans go (None: no spans)."""
        self.log_stream = LogStream(bus, self._clock, self.id, on_drop=self._log_line_dropped)
        """Copies this agent's log lines to the events stream while :meth:`run` runs."""
        self.feed_stream = FeedStream(bus, self._clock, self.id, on_drop=self._feed_event_dropped)
        """Carries its handlers' progress and streamed output to the events stream (a budget
        of its own, apart from the log lines'; drops are counted in its ``dropped`` and in
        ``agentdeck_events_dropped_total{stream="feed"}``)."""
        self._reporter = Reporter(
            bus,
            self._clock,
            self.id,
            self._log,
            limit=report_limit,
            retry_delays=publish_retry_delays,
        )

        self.state = AgentState.UP
        self.succeeded = 0
        self.failed = 0
        self._running: dict[int, Job] = {}
        """Every task held, by a sequence number (one task may be delivered twice)."""
        self._busy = 0
        """Jobs with a task message that have a task: at most ``concurrency``."""
        self._queued: collections.deque[tuple[int, Job]] = collections.deque()
        """Jobs waiting for a slot, in order of arrival (a batch may bring more tasks than
        there are slots): they get their task when one ends, not before, so a waiting job
        costs no task."""
        self._seq = 0
        self._idle = asyncio.Event()
        self._idle.set()

        self._tg: asyncio.TaskGroup | None = None
        self._context = contextvars.Context()
        """What each job's context is copied from (set when run() starts)."""
        self._consumer: asyncio.Task[None] | None = None
        self._consumer_closing = False
        self._closer: asyncio.Task[None] | None = None
        self._held: list[Delivery] = []
        """Deliveries that arrived while draining: not started, given back when draining ends."""

        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()
        self._deadline = float("inf")
        self._running_run = False
        self._finished = asyncio.Event()

    # ------------------------------------------------------------------------ public surface

    @property
    def in_flight(self) -> int:
        """Tasks held and not yet settled."""
        return len(self._running)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(grace=0)

    async def run(self) -> None:
        """Serve until :meth:`stop`: register, heartbeat, obey control messages, run tasks.

        The control subscription is open once the agent is in the registry, so a control
        message published after that reaches it. Raises BackendUnavailable if the bus ends
        the task consumer on its own (the process should exit and be restarted).
        """
        if self._running_run or self._finished.is_set():
            raise RuntimeError(f"{self!r} has already run; make a new Worker")
        self._running_run = True
        control = self._bus.subscribe_control()  # before registering: see the docstring
        try:
            await self._registry.register(self._record(), self._ttl)
            self._log.info(
                "agent_started",
                name=self.name,
                capabilities=list(self.capabilities),
                concurrency=self.concurrency,
            )
            # Tasks made in the group inherit the tee: handlers' lines reach the stream too.
            async with asyncio.TaskGroup() as tg, _teeing(self.log_stream):
                self._tg = tg
                self._context = contextvars.copy_context()
                shipper = tg.create_task(self.log_stream.run(), name=f"{self.id}:logs")
                feeder = tg.create_task(self.feed_stream.run(), name=f"{self.id}:feed")
                beats = tg.create_task(self._heartbeat_loop(), name=f"{self.id}:heartbeat")
                orders = tg.create_task(self._control_loop(control), name=f"{self.id}:control")
                if self.state is AgentState.UP:  # else drain() came first: wait for resume()
                    self._start_consumer()
                await self._stop_requested.wait()
                await self._shut_down()
                beats.cancel()
                orders.cancel()
                shipper.cancel()
                feeder.cancel()
        except BaseExceptionGroup as group:
            # The caller wants the one error that ended the worker, not a group of one.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                raise group.exceptions[0] from None
            raise
        finally:
            self._tg = None
            with contextlib.suppress(Exception):
                await aclose(control)
            await self._deregister()
            self._finished.set()
            self._log.info("agent_stopped", succeeded=self.succeeded, failed=self.failed)

    async def stop(self, grace: float) -> None:
        """Stop taking tasks, give running ones up to ``grace`` seconds, then cancel the rest.

        Cancelled tasks are not reported: their messages go back to the queue for another
        agent. Returns once :meth:`run` has ended. Calling again with a shorter grace hurries
        a stop already under way (a second Ctrl-C).
        """
        self._deadline = min(self._deadline, self._clock.now() + max(0.0, grace))
        self._stop_requested.set()
        self._hurry.set()
        if self._running_run:
            await self._finished.wait()

    async def drain(self) -> None:
        """Stop taking new tasks and let the running ones finish; :meth:`resume` undoes it."""
        if self.state is AgentState.DRAINING:
            return
        self.state = AgentState.DRAINING
        self._log.info("agent_draining", in_flight=self.in_flight)
        if self._tg is not None and not self._stop_requested.is_set():
            self._closer = self._tg.create_task(self._close_when_idle())
        await self._beat()

    async def resume(self) -> None:
        """Take tasks again after :meth:`drain` (not after :meth:`stop`)."""
        if self.state is not AgentState.DRAINING or self._stop_requested.is_set():
            return
        self.state = AgentState.UP
        self._log.info("agent_resumed")
        if self._tg is None:  # not running yet: run() starts consuming
            return
        if self._closer is not None:
            self._closer.cancel()
            await asyncio.wait([self._closer])
            self._closer = None
        if self._consumer is not None and not self._consumer.done() and not self._consumer_closing:
            # Still subscribed: start what arrived while draining, in order.
            held, self._held = self._held, []
            for delivery in held:
                self._start(delivery)
        else:
            await self._stop_consumer()
            self._start_consumer()
        await self._beat()

    def cancel(self, task_id: str, up_to: int | None = None) -> bool:
        """Cancel the running handler(s) of ``task_id`` (only its attempts up to ``up_to``, if
        given); each is reported failed ``cancelled`` (not retryable). False if this worker is
        not running such an attempt."""
        found = False
        for job in self._running.values():
            if job.message is None or job.message.task_id != task_id:
                continue
            if up_to is None or job.message.attempt <= up_to:
                found = True
                job.cancel_requested = True
                job.interrupt("operator")
        return found

    def __repr__(self) -> str:
        return (
            f"<Worker name={self.name} id={self.id} state={self.state.value}"
            f" in_flight={self.in_flight} succeeded={self.succeeded} failed={self.failed}>"
        )

    # ------------------------------------------------------------------------- consuming

    def _start_consumer(self) -> None:
        assert self._tg is not None
        self._consumer_closing = False
        self._consumer = self._tg.create_task(self._consume(), name=f"{self.id}:consumer")

    async def _stop_consumer(self) -> None:
        """Close the task consumer; deliveries it holds that no handler took go back."""
        consumer = self._consumer
        if consumer is None:
            return
        self._consumer_closing = True
        consumer.cancel()
        await asyncio.wait([consumer])
        self._consumer = None

    async def _consume(self) -> None:
        deliveries = self._bus.consume_tasks(self.capabilities, prefetch=self.concurrency)
        try:
            async for delivery in deliveries:
                if self.state is AgentState.DRAINING:
                    # The consumer stays open until the running handlers finish, because
                    # some buses (the memory bus) give back every unacked message when a
                    # consumer closes, running ones included. What arrives meanwhile waits
                    # here unstarted, holding a prefetch slot, and goes back at the close.
                    self._held.append(delivery)
                else:
                    self._start(delivery)
        finally:
            held, self._held = self._held, []
            for delivery in held:
                with contextlib.suppress(Exception):
                    await delivery.requeue()
            with contextlib.suppress(Exception):
                await aclose(deliveries)
        if not self._consumer_closing:
            raise BackendUnavailable("the bus ended the task consumer")

    async def _close_when_idle(self) -> None:
        """Finish a drain: once no handler runs, close the consumer."""
        await self._idle.wait()
        await self._stop_consumer()
        self._log.info("agent_drained")

    def _start(self, delivery: Delivery) -> None:
        """Start a job for each task ``delivery`` carries (one, or a batch's: each then holds
        a part of the delivery, :mod:`agents.shared`)."""
        try:
            items = decode_batch(delivery.body, TaskMessage)
        except MessageError as exc:
            self._spawn(Job(delivery, undecodable=exc))
            return
        if len(items) == 1 and items[0].headers is None:  # a lone task message
            self._spawn(Job(delivery, message=items[0].message))
            return
        shared = Shared(delivery, len(items))
        for item in items:
            part = shared.part(item.headers, b"")  # ids of a bad item: Job.ids
            self._spawn(Job(part, message=item.message, undecodable=item.error, ids=item.ids))

    def _spawn(self, job: Job) -> None:
        """Hold ``job``, and run it now if a slot is free (one without a task message, to be
        dead-lettered, needs none), else once one is."""
        self._seq += 1
        self._running[self._seq] = job
        self._idle.clear()
        if job.message is not None and self._busy >= self.concurrency:
            self._queued.append((self._seq, job))
        else:
            self._launch(self._seq, job)

    def _launch(self, seq: int, job: Job) -> None:
        assert self._tg is not None
        if job.message is not None:
            self._busy += 1
        # Each job in a copy of the context the worker's tasks start with (the log tee): not
        # in the context of the job that freed its slot, which its handler may have changed.
        job.task = self._tg.create_task(
            self._work(seq, job), name=f"{self.id}:job", context=self._context.copy()
        )

    async def _give_back_queued(self) -> None:
        """Requeue the deliveries of the jobs still waiting for a slot (a shutdown)."""
        queued, self._queued = self._queued, collections.deque()
        for seq, job in queued:
            del self._running[seq]
            with contextlib.suppress(Exception):
                await job.delivery.requeue()
        if not self._running:
            self._idle.set()

    # ----------------------------------------------------------------------------- a task

    async def _work(self, seq: int, job: Job) -> None:
        slot = job.message is not None  # it holds one of the `concurrency` slots
        try:
            if job.message is None:
                error = job.undecodable or MessageError("no task message")
                await self._dead_letter(job.delivery, str(error), job.ids)
                return
            await self._observed_attempt(job, job.message)
        except Exception as exc:
            # The agent's own machinery failed (a handler's errors are reported): the worker
            # and its other tasks go on; the message goes aside for a person, and the
            # scheduler's dispatch deadline ends the attempt.
            self._log.error("task_attempt_crashed", task_id=job.task_id, exc_info=exc)
            await settle(job.delivery.reject(f"the agent failed on it: {exc!r}"), self._log)
        except asyncio.CancelledError:
            # A shutdown, not the task's fault: no report, so the attempt is not spent and the
            # message is given back for another agent to run. Should the requeue fail (the
            # bus is gone), the broker still redelivers it: it was never acked. The jobs still
            # waiting for a slot go back too: nothing starts once the worker is cancelled.
            if slot:
                slot = False
                self._busy -= 1
            with contextlib.suppress(Exception):
                await job.delivery.requeue()
            await self._give_back_queued()
            raise
        finally:
            del self._running[seq]
            if slot:  # its slot goes to the job waiting longest, if any
                self._busy -= 1
                if self._queued:
                    self._launch(*self._queued.popleft())
            if not self._running:
                self._idle.set()

    async def _observed_attempt(self, job: Job, message: TaskMessage) -> None:
        """:meth:`_attempt` in a run span, with the task's ids on every log line, measured."""
        # Bound for good, not for the attempt only: the job's task has a context of its own
        # (see _launch), which ends with it.
        if self.metrics is None and self.tracing is None:
            structlog.contextvars.bind_contextvars(
                workflow_id=message.workflow_id, task_id=message.task_id
            )
            await self._attempt(job, message)
            return
        start = self._clock.now()
        span = None
        ids: dict[str, str] = {}
        if self.tracing is not None:
            span = self.tracing.start_run(
                job.delivery.headers,
                f"run {message.capability}",
                {
                    "agentdeck.task_id": message.task_id,
                    "agentdeck.workflow_id": message.workflow_id,
                    "agentdeck.capability": message.capability,
                    "agentdeck.attempt": message.attempt,
                    "agentdeck.agent": self.id,
                },
                start,
            )
            ids = dict(span_ids(span))
        if self.metrics is not None:
            self.metrics.run_started(message.capability, start - message.dispatched_at)
        outcome = "cancelled"  # unless _attempt ends: a shutdown cancels it
        try:
            # The run span is current while the handler runs: spans it makes are its children.
            current = use_span(span, end_on_exit=False) if span else contextlib.nullcontext()
            structlog.contextvars.bind_contextvars(
                workflow_id=message.workflow_id, task_id=message.task_id, **ids
            )
            with current:
                await self._attempt(job, message)
            ran = message.capability in self._handlers  # else it was dead-lettered
            outcome = outcome_of(job.error) if ran else "rejected"
        finally:
            if self.metrics is not None:
                self.metrics.run_finished(message.capability, outcome, self._clock.now() - start)
            if span is not None:
                if outcome != "succeeded":
                    reason = job.error.message if job.error else outcome
                    span.set_status(Status(StatusCode.ERROR, reason))
                span.set_attribute("agentdeck.outcome", outcome)
                span.end()

    async def _attempt(self, job: Job, message: TaskMessage) -> None:
        handler = self._handlers.get(message.capability)
        if handler is None:
            # Routed to a queue we consume but not ours to run: a wiring bug, kept for a human.
            await self._dead_letter(
                job.delivery,
                f"no handler for capability {message.capability!r} on agent {self.id} "
                f"(it serves {', '.join(self.capabilities)})",
                (message.task_id, message.attempt),
            )
            return
        headers = job.delivery.headers
        began = self._clock.now()
        started = await self._reporter.start_report(headers, message, self.started_after)
        feed = AttemptFeed(
            {
                "task_id": message.task_id,
                "workflow_id": message.workflow_id,
                "attempt": message.attempt,
                "agent_id": self.id,
            },
            self.feed_stream,
        )
        context = TaskContext.for_message(
            message,
            agent_id=self.id,
            now=self._clock.now(),
            log=self._assembled_log(),
            feed=feed,
            outputs=self.outputs,
        )
        log = context.log  # the worker's lines on this attempt too: one bind, not two
        output: JSON = None
        error: ErrorInfo | None = None
        encoded: bytes | None = None
        try:
            try:
                output = await call_handler(job, handler, context, message.timeout, self._clock)
            finally:
                await self._reporter.end_start_report(started)
        except Exception as exc:
            error = error_of(exc, message.timeout, log)
        else:
            output, error, encoded = await sendable(
                message,
                output,
                limit=self.report_limit,
                outputs=self.outputs,
                inline_fallback=self.inline_fallback,
                log=log,
            )
        # Usage goes on failed results too: a call that failed may still have been billed.
        sent = await self._reporter.result(
            headers,
            message,
            output=output,
            error=error,
            started_at=began,
            usage=feed.usage,
            encoded=encoded,
        )
        error = job.error = sent.error
        if error is None:
            self.succeeded += 1
            log.info("task_succeeded")
        else:
            self.failed += 1
            # What cannot be sent is a bug to fix (or a bus to mend): said at error level.
            loud = error.kind in ("malformed", "report_not_sent")
            (log.error if loud else log.info)(
                "task_failed", kind=error.kind, retryable=error.retryable, message=error.message
            )
        await settle(settling(job.delivery, sent.settle), log)

    def _assembled_log(self) -> FilteringBoundLogger:
        """The worker's logger, assembled from structlog's configuration once, and again when
        that changes (``configure_logging``, ``structlog.testing.capture_logs``): binding the
        lazy proxy itself would assemble one for every attempt."""
        config = structlog.get_config()
        key = (config["processors"], config["wrapper_class"], config["logger_factory"])
        cached = self._assembled
        if cached is None or any(a is not b for a, b in zip(cached[0], key, strict=True)):
            cached = self._assembled = (key, self._log.bind())
        return cached[1]

    async def _dead_letter(
        self, delivery: Delivery, reason: str, ids: tuple[str, int] | None = None
    ) -> None:
        """Fail the attempt (when its ids can be read) and dead-letter the message."""
        ids = ids or peek_ids(delivery.body)
        self.failed += 1
        if self.metrics is not None:
            self.metrics.message_rejected()
        self._log.warning("task_message_rejected", reason=reason, ids=ids)
        if ids is not None:
            await self._reporter.refusal(ids, reason, delivery.headers)
        await settle(delivery.reject(reason), self._log)

    def _log_line_dropped(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.log_line_dropped(reason)

    def _feed_event_dropped(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.event_dropped("feed", reason)

    # ------------------------------------------------------------------ control, heartbeat

    async def _control_loop(self, control: AsyncIterator[bytes]) -> None:
        async for body in control:
            try:
                order = decode(body, Control)
            except MessageError as exc:
                self._log.warning("control_message_ignored", reason=str(exc))
                continue
            if order.action == "cancel":
                if self.cancel(order.target, order.attempt):
                    self._log.info(
                        "task_cancel_requested", task_id=order.target, up_to=order.attempt
                    )
            elif order.target in (self.id, "*"):
                await (self.drain() if order.action == "drain" else self.resume())
        if not self._stop_requested.is_set():
            self._log.warning("control_subscription_ended")

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            await self._beat()

    async def _beat(self) -> None:
        """Refresh the registry record, registering again if it lapsed."""
        await heartbeat(self._registry, self._record(), self._ttl, self._log)

    def _record(self) -> AgentRecord:
        now = self._clock.now()
        return AgentRecord(
            id=self.id,
            name=self.name,
            capabilities=self.capabilities,
            concurrency=self.concurrency,
            state=self.state,
            started_at=self._started_at,
            last_seen=now,
            in_flight=self.in_flight,
            host=socket.gethostname(),
            pid=os.getpid(),
            succeeded=self.succeeded,
            failed=self.failed,
        )

    async def _deregister(self) -> None:
        await deregister(self._registry, self.id, self._log)

    # ---------------------------------------------------------------------------- shutdown

    async def _shut_down(self) -> None:
        self.state = AgentState.DRAINING
        if self._closer is not None:
            self._closer.cancel()
        self._log.info("agent_stopping", in_flight=self.in_flight)
        await self._beat()
        while self._running:
            remaining = self._deadline - self._clock.now()
            if remaining <= 0:
                break
            self._hurry.clear()
            waits = [
                asyncio.ensure_future(self._idle.wait()),
                asyncio.ensure_future(self._clock.sleep(remaining)),
                asyncio.ensure_future(self._hurry.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
        # Close the consumer first, so a message given back below cannot come straight back
        # to this worker; then cancel what still runs.
        await self._stop_consumer()
        count = len(self._queued)
        await self._give_back_queued()  # first: the cancels below would start them
        jobs = [job.task for job in self._running.values() if job.task is not None]
        for task in jobs:
            task.cancel()
        if jobs or count:
            self._log.warning("tasks_given_back", count=len(jobs) + count)
            await asyncio.wait(jobs)


@contextlib.asynccontextmanager
async def _teeing(stream: LogStream) -> AsyncIterator[None]:
    """Log lines of this task and the tasks it starts go to ``stream`` too."""
    with tee_logs(stream.offer):
        yield
