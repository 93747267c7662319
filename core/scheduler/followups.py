"""What follows a task's change: a failed attempt's retry or failure, dependents skipped,
workflows finished, a cancelled workflow's tasks closed.

Each step is a compare-and-set on what the Store holds now, so doing one twice (a round that
failed half-way, the repair sweep after a leader died) changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog

from agentdeck.core.dag import descendants
from agentdeck.core.errors import NotFound
from agentdeck.core.models import Change, ErrorInfo, Task, Usage
from agentdeck.core.retry import LOST, RetryPolicy, decide, decide_lost, lost_in_budget
from agentdeck.core.scheduler.base import SchedulerBase
from agentdeck.core.scheduler.config import IN_FLIGHT, OPEN_WORKFLOWS
from agentdeck.core.states import TASK_TERMINAL, TaskStatus, WorkflowStatus
from agentdeck.core.traceids import attempt_span_id, workflow_trace_id

log = structlog.get_logger(__name__)

T = TaskStatus
W = WorkflowStatus
RATE_LIMITED = "rate_limited"
"""The error kind of an attempt its provider turned away for now (HTTP 429/529, a CLI's
rate-limit result): backpressure, not a failure (no attempt spent, no breaker count)."""
RATE_LIMIT_WAIT = 30.0
"""Seconds a rate-limited capability is held when the provider named no time."""
MAX_RATE_LIMIT_WAIT = 3600.0
"""The longest hold a provider's word can ask for (a bogus date must not stop work for days)."""


def workflow_outcome(counts: Mapping[TaskStatus, int]) -> WorkflowStatus | None:
    """How a workflow whose tasks number ``counts`` (by status) ends: None while any task is
    not final; succeeded when all succeeded; cancelled when some were cancelled and none
    failed; failed otherwise."""
    if any(n for s, n in counts.items() if s not in TASK_TERMINAL):
        return None
    if counts.get(T.SUCCEEDED, 0) == sum(counts.values()):
        return W.SUCCEEDED
    if counts.get(T.CANCELLED, 0) and not counts.get(T.FAILED, 0):
        return W.CANCELLED
    return W.FAILED


class FollowUps(SchedulerBase):
    """Failed attempts, skipped dependents, finished and cancelled workflows."""

    def policy_for(self, task: Task) -> RetryPolicy:
        """The retry policy that governs ``task``: its own, its capability's, or the default."""
        base = self.config.capability_retry.get(task.capability, self.config.default_retry)
        if task.retry:
            # The spec's keys are laid over the capability's policy, not over the default.
            merged = {**base.to_dict(), **task.retry}
            return RetryPolicy.from_mapping(merged, where=f"task {task.key!r} retry")
        return base

    async def _attempt_in_flight(self, task_id: str, attempt: int) -> Task | None:
        """The task whose attempt ``attempt`` a report ends, or None for an unknown task or a
        stale report (another attempt, or no longer in flight: the CAS would skip it anyway).
        The attempt's timeout is forgotten: it has ended."""
        try:
            task = await self.store.get_task(task_id)
        except NotFound:
            log.warning("report_for_unknown_task", task_id=task_id)
            return None
        if task.attempt != attempt or task.status not in IN_FLIGHT:
            return None
        self._timeouts.pop(task_id, None)
        return task

    async def _failure_change(
        self,
        task_id: str,
        attempt: int,
        error: ErrorInfo,
        agent_id: str | None,
        usage: Usage | None = None,
    ) -> Change | None:
        """The change that records a failed attempt: retrying after a delay, or failed (with
        what the attempt spent, ``usage``). A ``lost`` attempt is decided by
        :func:`~agentdeck.core.retry.decide_lost` on the lost attempts of the task's history
        (one Store read; lost attempts are rare): it spends no attempt when it retries."""
        task = await self._attempt_in_flight(task_id, attempt)
        if task is None:
            return None
        policy = self.policy_for(task)
        if error.kind == LOST:
            lost = lost_in_budget(await self.store.task_events(task.id)) + 1
            decision = decide_lost(policy, lost, error, self.rng)
        else:
            decision = decide(policy, task.attempts_used, error, self.rng)
        now = self.clock.now()
        detail: dict[str, Any] = {"error": error.to_dict(), "reason": decision.reason}
        log.info(
            "task_attempt_failed",
            **self._log_ids(task),
            attempt=attempt,
            kind=error.kind,
            then="retrying" if decision.retry else "failed",
            reason=decision.reason,
        )
        values: dict[str, Any] = {"error": error, "deadline": None, "agent_id": agent_id}
        if decision.retry:
            detail["delay"] = round(decision.delay, 3)
            values["not_before"] = now + decision.delay
            if not decision.spends_attempt:
                values["first_attempt"] = task.first_attempt + 1
            return Change(
                task.id,
                T.RETRYING,
                frozenset(IN_FLIGHT),
                attempt=attempt,
                values=values,
                detail=detail,
                usage=usage,
            )
        values["finished_at"] = now
        return Change(
            task.id,
            T.FAILED,
            frozenset(IN_FLIGHT),
            attempt=attempt,
            values=values,
            detail=detail,
            usage=usage,
        )

    async def _rate_limited_change(
        self, task_id: str, attempt: int, error: ErrorInfo, usage: Usage | None = None
    ) -> Change | None:
        """The change for an attempt its provider rate-limited: back to ``retrying`` until the
        time the provider gave (``error.retry_after`` seconds; :data:`RATE_LIMIT_WAIT` if it
        gave none) with no attempt spent (the retry budget's start moves up by one), and the
        whole capability held until then, so no agent of it, on any host, starts new work.
        What the attempt spent before it was turned away (``usage``) still counts. None for a
        stale report."""
        task = await self._attempt_in_flight(task_id, attempt)
        if task is None:
            return None
        now = self.clock.now()
        wait = error.retry_after if error.retry_after is not None else RATE_LIMIT_WAIT
        wait = min(max(wait, 0.0), MAX_RATE_LIMIT_WAIT)
        await self.holds.rate_limit(task.capability, now + wait, error.message)
        log.info(
            "task_rate_limited",
            **self._log_ids(task),
            attempt=attempt,
            capability=task.capability,
            retry_after=wait,
        )
        return Change(
            task.id,
            T.RETRYING,
            frozenset(IN_FLIGHT),
            attempt=attempt,
            values={
                "error": error,
                "deadline": None,
                "agent_id": None,
                "not_before": now + wait,
                "first_attempt": task.first_attempt + 1,
            },
            event=RATE_LIMITED,
            detail={"error": error.to_dict(), "retry_after": round(wait, 3)},
            usage=usage,
        )

    def _log_ids(self, task: Task) -> dict[str, str]:
        """Keys that tie a log line to ``task``: its ids and its attempt's trace and span."""
        # The ids are derived, not looked up, so they are there whether or not this node
        # traces: a line joins the attempt's span wherever that span was recorded.
        return {
            "task_id": task.id,
            "workflow_id": task.workflow_id,
            "trace_id": f"{workflow_trace_id(task.workflow_id):032x}",
            "span_id": f"{attempt_span_id(task.id, task.attempt):016x}",
        }

    async def _after_changes(self, moved: Sequence[Task]) -> None:
        """Skip dependents of tasks that failed for good, then finish workflows that are done.

        The tasks stay in ``_follow_ups`` until both steps are done, so a Store failure half-way
        is made good by a later round (each step is a compare-and-set: doing it twice is
        harmless)."""
        self._follow_ups.update((t.id, t) for t in moved)
        moved = list(self._follow_ups.values())
        failed = [t for t in moved if t.status in (T.FAILED, T.CANCELLED)]
        by_workflow: dict[str, list[Task]] = {}
        for t in failed:
            by_workflow.setdefault(t.workflow_id, []).append(t)
        for workflow_id, tasks in by_workflow.items():
            await self._skip_dependents(workflow_id, tasks)
        touched = {t.workflow_id for t in moved if t.status in TASK_TERMINAL}
        # A workflow this leader wrote an open task of (a dependent the write released, say)
        # has not finished: a chain's step asks the Store nothing here.
        touched -= self._known_open()
        if touched:
            await self._finish_workflows(touched)
        self._follow_ups.clear()
        self._written.clear()

    async def _skip_dependents(self, workflow_id: str, failed: Sequence[Task]) -> int:
        """Skip what depends on ``failed`` (those still failed or cancelled); how many."""
        tasks = await self.store.list_tasks(workflow_id=workflow_id, limit=1_000_000)
        graph = {t.key: t.needs for t in tasks}
        # As the Store has them now: a follow-up done late must not skip for a task retried since.
        still_failed = {t.key for t in tasks if t.status in (T.FAILED, T.CANCELLED)}
        doomed: set[str] = set()
        for t in failed:
            if t.key in still_failed:
                doomed |= descendants(graph, t.key)
        changes = [
            Change(
                t.id,
                T.SKIPPED,
                frozenset({T.BLOCKED, T.READY, T.RETRYING}),
                detail={"reason": "a task it needs did not succeed"},
            )
            for t in tasks
            if t.key in doomed and t.status not in TASK_TERMINAL
        ]
        moved, _ = await self._apply(changes)
        return len(moved)

    async def _finish_workflows(self, workflow_ids: Iterable[str]) -> dict[str, WorkflowStatus]:
        """Finish those of ``workflow_ids`` whose tasks are all final, with the status their
        tasks give; the ones it finished, with that status (a workflow finished already is
        left alone)."""
        counts = await self.store.count_tasks(await self._without_open_tasks(workflow_ids))
        now = self.clock.now()
        finished: dict[str, WorkflowStatus] = {}
        for workflow_id, by_status in counts.items():
            outcome = workflow_outcome(by_status)
            if outcome is None:
                continue
            if await self.store.set_workflow_status(
                workflow_id, OPEN_WORKFLOWS, outcome, now, fence=self._fence
            ):
                finished[workflow_id] = outcome
                workflow = await self.store.get_workflow(workflow_id)
                log.info(
                    "workflow_finished",
                    workflow_id=workflow_id,
                    status=outcome.value,
                    trace_id=f"{workflow_trace_id(workflow_id):032x}",
                )
                await self.observers.workflow_finished(workflow, now)
        return finished

    async def _without_open_tasks(self, workflow_ids: Iterable[str]) -> list[str]:
        """Those of ``workflow_ids`` with no task left open: the only ones worth counting.

        Most rounds finish tasks of a workflow that still has others open; asking the Store
        which have an open task (an index probe each) spares counting all of their rows (a
        ``GROUP BY`` over 100,000 rows took 77 ms) after every such round."""
        ids = list(workflow_ids)
        still_open = await self.store.with_open_tasks(ids)
        return [w for w in ids if w not in still_open]

    async def _close_cancelled(self, workflow_id: str, now: float) -> int:
        """The rest of cancelling a workflow once it is ``cancelled``: cancel its unfinished
        tasks (telling agents to stop those in flight) and report the workflow finished; how
        many tasks it cancelled."""
        open_tasks = await self.store.list_tasks(
            workflow_id=workflow_id,
            status=[s for s in TaskStatus if s not in TASK_TERMINAL],
            limit=1_000_000,
        )
        changes = [
            Change(
                t.id,
                T.CANCELLED,
                frozenset({t.status}),
                attempt=t.attempt,
                values={"finished_at": now, "deadline": None},
                detail={"reason": "workflow cancelled"},
            )
            for t in open_tasks
        ]
        moved, _ = await self._apply(changes)
        for t in open_tasks:
            if t.status in IN_FLIGHT:
                await self._control("cancel", t.id)
        cancelled = await self.store.get_workflow(workflow_id)
        await self.observers.workflow_finished(cancelled, now)
        return len(moved)
