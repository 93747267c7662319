"""Agents' reports applied: an attempt started, succeeded or failed.

Each report is a compare-and-set on (task, attempt): a duplicate, or a late report of an old
attempt, changes nothing. A report is acked only once its change is written. One delivery
may carry several reports (an agent's batch, :func:`core.messages.decode_batch`): it is acked
once the changes of all of them are written; should this process die first, the broker
delivers the whole batch again and the compare-and-set makes the reports already applied
harmless. An item of a batch that does not decode is logged and left out (its attempt ends by
its deadline), the others are applied. A result's usage
goes with the change that ends its attempt (one write), and the budgets of the workflows that
spent are checked after it.
"""

from __future__ import annotations

import asyncio

import structlog

from agentdeck.core.errors import MessageError, NotFound
from agentdeck.core.messages import ErrorModel, Report, decode_batch
from agentdeck.core.models import Change, ErrorInfo
from agentdeck.core.ports import Delivery
from agentdeck.core.scheduler.budgets import Budgets
from agentdeck.core.scheduler.config import IN_FLIGHT
from agentdeck.core.scheduler.followups import RATE_LIMITED
from agentdeck.core.states import TaskStatus

log = structlog.get_logger(__name__)

T = TaskStatus


class Reports(Budgets):
    """Applying the reports the consumer put in the inbox."""

    async def _apply_reports(self) -> bool:
        if not self._inbox:
            return False
        # The batch stays in the inbox until its changes are written: a round that fails (the
        # Store is restarting) leaves it for the next round, or for _step_down to requeue.
        # Dropped, the reports would stay unacked on our channel and their tasks in flight.
        # Up to batch_size reports, in whole deliveries (at least one).
        batch: list[Delivery] = []
        reports: list[tuple[Report, Delivery]] = []
        for delivery in list(self._inbox):
            if batch and len(reports) >= self.config.batch_size:
                break
            try:
                items = decode_batch(delivery.body, Report)
            except MessageError as exc:
                log.error("bad_report", error=str(exc))
                self._inbox.remove(delivery)
                await delivery.reject(str(exc))
                continue
            batch.append(delivery)
            for item in items:
                if item.message is None:
                    log.error("bad_report", error=str(item.error), ids=item.ids, batched=True)
                else:
                    reports.append((item.message, delivery))
        if not batch:
            return True
        self._sent_at = None  # what was sent has reported, or reports with these
        now = self.clock.now()
        changes: list[Change] = []
        failures: list[Report] = []
        for report, delivery in reports:
            if report.kind == "started":
                timeout = self._timeouts.get(report.task_id)
                if timeout is None:
                    timeout = await self._timeout_of(report.task_id)
                changes.append(
                    Change(
                        report.task_id,
                        T.RUNNING,
                        frozenset({T.DISPATCHED}),
                        attempt=report.attempt,
                        values={
                            "agent_id": report.agent_id,
                            "started_at": report.at,
                            "deadline": now + timeout + self.config.lost_grace,
                        },
                    )
                )
            elif report.kind == "succeeded" and (
                lost := await self.outputs.unreadable(report.output) if self.outputs else None
            ):  # an agent's reference to an object we cannot read: as if the agent failed
                update = {"kind": "failed", "output": None, "error": ErrorModel.of(lost)}
                failures.append(report.model_copy(update=update))
            elif report.kind == "succeeded":
                self._timeouts.pop(report.task_id, None)
                changes.append(
                    Change(
                        report.task_id,
                        T.SUCCEEDED,
                        frozenset(IN_FLIGHT),
                        attempt=report.attempt,
                        values={
                            "output": report.output
                            if self.outputs is None
                            else await self.outputs.keep(
                                report.task_id,
                                report.attempt,
                                report.output,
                                size_hint=len(delivery.body),
                            ),
                            "agent_id": report.agent_id,
                            "finished_at": report.at,
                            "deadline": None,
                            "error": None,
                            # An agent that skipped `started` for a short task says it here.
                            **({"started_at": report.started_at} if report.started_at else {}),
                        },
                        detail={"agent": report.agent_id},
                        usage=report.usage.to_usage() if report.usage else None,
                    )
                )
            else:
                failures.append(report)
        limited: set[str] = set()
        for report in failures:
            error = (
                report.error.to_info()
                if report.error
                else ErrorInfo("error", "agent reported failure without a reason")
            )
            usage = report.usage.to_usage() if report.usage else None
            if error.kind == RATE_LIMITED:
                change = await self._rate_limited_change(
                    report.task_id, report.attempt, error, usage
                )
                limited.add(report.task_id)
            else:
                change = await self._failure_change(
                    report.task_id, report.attempt, error, report.agent_id, usage
                )
            if change is not None:
                changes.append(change)
        moved, _ = await self._apply(changes)
        written = {id(delivery) for delivery in batch}
        self._inbox[:] = [d for d in self._inbox if id(d) not in written]
        try:
            if self.breakers is not None:
                # A rate limit is backpressure, not a failure: no breaker counts it.
                await self.breakers.record([t for t in moved if t.id not in limited])
            await self._after_changes(moved)
            spent = {c.task_id for c in changes if c.usage is not None}
            await self._check_budgets({t.workflow_id for t in moved if t.id in spent})
        finally:
            # Written, so done with whatever follows. Acked together, not one awaited ack
            # after another: the acks' frames then leave in one pass of the bus's writer
            # instead of one event-loop round trip each.
            await asyncio.gather(*(delivery.ack() for delivery in batch))
        # A "started" report that arrives after its result is expected and harmless; only
        # tasks none of whose reports applied are worth a line (duplicates, stale attempts).
        ignored = {r.task_id for r, _ in reports if r.kind != "started"} - {t.id for t in moved}
        if ignored:
            log.info(
                "reports_ignored",
                count=len(ignored),
                reason="duplicate, stale attempt or finished task",
            )
        return True

    async def _timeout_of(self, task_id: str) -> float:
        try:
            return (await self.store.get_task(task_id)).timeout
        except NotFound:
            return 0.0
