"""How an agent tells the scheduler about an attempt: its reports, and where a large output
goes before its report is sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Literal

from structlog.typing import FilteringBoundLogger

from agentdeck.core.clock import Clock
from agentdeck.core.messages import ErrorModel, Report, TaskMessage, UsageModel, encode
from agentdeck.core.models import JSON, ErrorInfo, Usage
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import Bus

TRACE_HEADER = "traceparent"
"""The W3C trace context header, carried from the task message to its reports."""

INLINE_FALLBACK = 16 * 1024 * 1024
"""The largest output (bytes of JSON) sent inside its report when the blob store fails:
RabbitMQ 4's default ``max_message_size`` (3.x allows 128 MiB)."""


class Reporter:
    """Publishes one agent's reports on the bus, each with its task message's trace header."""

    def __init__(self, bus: Bus, clock: Clock, agent_id: str, log: FilteringBoundLogger) -> None:
        self.agent_id = agent_id
        self._bus = bus
        self._clock = clock
        self._log = log

    def __repr__(self) -> str:
        return f"<Reporter agent={self.agent_id}>"

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
        """Publish a report on ``message``'s attempt; False (logged) when the bus refused it."""
        report = Report(
            kind=kind,
            task_id=message.task_id,
            attempt=message.attempt,
            agent_id=self.agent_id,
            at=self._clock.now(),
            output=output,
            error=ErrorModel.of(error) if error else None,
            started_at=started_at,
            usage=UsageModel.of(usage) if usage is not None else None,
        )
        return await self.publish(report, headers)

    async def publish(self, report: Report, headers: Mapping[str, str]) -> bool:
        """Publish ``report`` (``headers``: its task message's); False (logged) when the bus
        refused it."""
        carried = {TRACE_HEADER: headers[TRACE_HEADER]} if TRACE_HEADER in headers else {}
        try:
            await self._bus.publish_report(encode(report), carried)
        except Exception as exc:
            self._log.error(
                "report_publish_failed", task_id=report.task_id, kind=report.kind, error=str(exc)
            )
            return False
        return True

    async def start_report(
        self, headers: Mapping[str, str], message: TaskMessage, after: float
    ) -> asyncio.Task[bool] | None:
        """Report ``started`` now (``after`` <= 0), or start a timer that reports it after
        ``after`` seconds; pass what this returns to :meth:`end_start_report`."""
        if after <= 0:
            await self.report(headers, message, "started")
            return None

        async def later() -> bool:
            await self._clock.sleep(after)
            return await self.report(headers, message, "started")

        return asyncio.ensure_future(later())

    @staticmethod
    async def end_start_report(started: asyncio.Task[bool] | None) -> None:
        """The handler is done: drop the ``started`` report (not yet due, or still being
        published: a late ``started`` matches nothing at the scheduler once the result is in)."""
        if started is None:
            return
        started.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await started


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
