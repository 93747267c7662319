"""What the leader makes good on its own: retries whose delay passed, attempts past their
deadline, work of agents that vanished, and the follow-ups a dead leader left undone."""

from __future__ import annotations

import structlog

from agentdeck.core.errors import AgentdeckError
from agentdeck.core.models import AgentState, Change, ErrorInfo, Task
from agentdeck.core.recovery import describe
from agentdeck.core.scheduler.config import MOVING, REPAIR_PAGE
from agentdeck.core.scheduler.followups import FollowUps
from agentdeck.core.states import TASK_TERMINAL, TaskStatus, WorkflowStatus

log = structlog.get_logger(__name__)

T = TaskStatus
W = WorkflowStatus


class Repairs(FollowUps):
    """The repair sweep, due retries and deadlines, and lost agents' work."""

    async def _repair(self) -> None:
        """One page of the repair sweep: do the follow-ups a leader died before doing (or a node
        crashed between a change and them), by the same code as :meth:`_after_changes` and
        :meth:`_cancel_workflow`.

        It pages through the running and paused workflows (:data:`REPAIR_PAGE` a round), and
        the cancelled ones too in the sweep on taking the lease. It counts the running and
        paused ones' tasks by status in the Store, and only asks which cancelled ones have a
        task not final (:meth:`Store.with_open_tasks`). A running or paused workflow whose tasks
        are all final is finished. One with blocked tasks and nothing moving (ready,
        dispatched, running, retrying) can only be waiting on a failed or cancelled task whose
        dependents were never skipped (a blocked task whose needs all succeeded is ready): only
        its tasks are read, its failures' dependents skipped, and it is finished. A cancelled
        workflow with a task not final was cancelled by a leader that died before cancelling
        its tasks: they are cancelled now. A consistent store gets no write and no task read.
        Writes carry the fencing token: a deposed leader writes nothing."""
        offset = self._repair_at or 0
        page = await self.store.list_workflows(
            status=self._repair_statuses, limit=REPAIR_PAGE, offset=offset
        )
        cancelled = [w.id for w in page if w.status == W.CANCELLED]
        # A cancelled workflow needs only "has it an open task?": an index probe each, not a
        # count of all its tasks (most were cancelled in full, their rows all final).
        still_open = await self.store.with_open_tasks(cancelled) if cancelled else set()
        half_cancelled = [w for w in cancelled if w in still_open]
        counts = await self.store.count_tasks([w.id for w in page if w.status != W.CANCELLED])
        done = [w for w, by in counts.items() if by and not set(by) - TASK_TERMINAL]
        skipped = tasks_cancelled = 0
        for workflow_id, by in counts.items():
            if (
                by.get(T.BLOCKED)
                and not set(by) & MOVING
                and (by.get(T.FAILED) or by.get(T.CANCELLED))
            ):
                failed = await self.store.list_tasks(
                    workflow_id=workflow_id, status=(T.FAILED, T.CANCELLED), limit=1_000_000
                )
                skipped += await self._skip_dependents(workflow_id, failed)
                done.append(workflow_id)  # nothing open may be left now
        finished = await self._finish_workflows(done) if done else {}
        for workflow_id in half_cancelled:
            tasks_cancelled += await self._close_cancelled(workflow_id, self.clock.now())
        # Newest first: the workflows that left the list, so the next page starts earlier.
        left = sum(1 for status in finished.values() if status not in self._repair_statuses)
        self._repair_at = None if len(page) < REPAIR_PAGE else offset + len(page) - left
        if skipped or finished or tasks_cancelled:
            log.warning(
                "repaired",
                node=self.node,
                workflows_finished=len(finished),
                tasks_skipped=skipped,
                tasks_cancelled=tasks_cancelled,
                reason="follow-ups a previous leader did not do",
            )

    # ------------------------------------------------------------------- due and lost

    async def _handle_due(self) -> bool:
        now = self.clock.now()
        due = await self.store.due_tasks(now, limit=self.config.batch_size)
        if not due:
            return False
        waiting = {t.capability for t in due if t.status == T.DISPATCHED}
        free = await self._free_capabilities(waiting) if waiting else set()
        queued = await self._queued(free) if free else {}
        changes: list[Change] = []
        for t in due:
            if t.status == T.RETRYING:
                changes.append(
                    Change(
                        t.id,
                        T.READY,
                        frozenset({T.RETRYING}),
                        attempt=t.attempt,
                        values={"not_before": None},
                    )
                )
                continue
            if t.status == T.DISPATCHED and (t.capability not in free or queued.get(t.capability)):
                changes.append(self._wait_longer(t, now, queued.get(t.capability)))
                continue
            if t.status == T.DISPATCHED:
                error = ErrorInfo(
                    "lost",
                    f"no agent reported it within {self.config.dispatch_timeout:g}s of dispatch "
                    f"while an agent of {t.capability!r} had a free slot and its queue was "
                    "empty: its message was lost",
                )
            else:
                error = ErrorInfo(
                    "lost",
                    f"no result {t.timeout:g}s (+{self.config.lost_grace:g}s grace) "
                    "after it started",
                )
            change = await self._failure_change(t.id, t.attempt, error, t.agent_id)
            if change is not None:
                changes.append(change)
                # This attempt only: the retry may be running by the time the order arrives.
                await self._control("cancel", t.id, t.attempt)
        moved, _ = await self._apply(changes)
        ended = [t for t in moved if t.status != T.DISPATCHED]  # not the ones told to wait
        if self.breakers is not None:
            await self.breakers.record(ended)
        await self._after_changes(ended)
        return bool(ended)

    async def _free_capabilities(self, capabilities: set[str]) -> set[str]:
        """Those of ``capabilities`` that a live, undrained agent with a free slot serves (as of
        its last heartbeat). Such an agent takes the queue's next message at once; whether
        messages still wait in the queue (an agent running short tasks shows free slots while
        it works through thousands) is :meth:`_queued`'s question."""
        free: set[str] = set()
        for agent in await self.registry.agents():
            if agent.state == AgentState.UP and agent.in_flight < agent.concurrency:
                free |= capabilities & set(agent.capabilities)
        return free

    _queued_failing = False
    """True while the bus fails to count queued messages (logged once, at the first failure)."""

    async def _queued(self, capabilities: set[str]) -> dict[str, int]:
        """How many messages wait in each of ``capabilities``' task queues, asked once each
        per round (a round with 1,000 overdue attempts of one capability asks once).

        A dispatched message no agent reported is lost only if its queue is empty: one still
        waiting there is behind others, and one an agent holds unacked (its prefetch, not
        counted here) is counted in that agent's ``in_flight``, so its capability is not free
        until the agent runs it or gives it back (a requeued message is counted here again).
        A capability the bus cannot tell about (None, or an error: logged once until it
        answers again) is left out: then a free slot alone decides, as before."""
        counts: dict[str, int] = {}
        try:
            for capability in sorted(capabilities):
                count = await self.bus.queued(capability)
                if count is not None:
                    counts[capability] = count
        except AgentdeckError as exc:
            if not self._queued_failing:
                log.warning(
                    "queue_length_unknown",
                    node=self.node,
                    error=str(exc),
                    consequence="an overdue dispatched attempt is lost if an agent is free",
                )
            self._queued_failing = True
            return counts
        self._queued_failing = False
        return counts

    def _wait_longer(self, task: Task, now: float, queued: int | None = None) -> Change:
        """Push out the deadline of a dispatched attempt whose capability has no free slot, or
        ``queued`` messages still waiting in its queue: its message is most likely queued
        behind others. Each wait doubles the last (up to ``max_dispatch_wait``), so a long
        backlog costs each task a few history lines, not one every dispatch timeout."""
        last = (task.deadline or now) - task.updated_at
        wait = min(max(2 * last, self.config.dispatch_timeout), self.config.max_dispatch_wait)
        reason = (
            f"{queued} message(s) wait in the queue of {task.capability!r}"
            if queued
            else f"no agent of {task.capability!r} has a free slot"
        )
        return Change(
            task.id,
            T.DISPATCHED,
            frozenset({T.DISPATCHED}),
            attempt=task.attempt,
            values={"deadline": now + wait},
            event="waiting",
            detail={"reason": reason, "wait": wait},
        )

    async def _recover_lost_agents(self) -> bool:
        """Fail as ``lost`` the running attempts of agents gone from the registry, at once
        rather than at their deadline; the retry policy decides what comes next."""
        if self.lost_agents is None:
            return False
        orphans = await self.lost_agents.orphans(self.store)
        changes: list[Change] = []
        for t in orphans:
            error = ErrorInfo("lost", f"agent {t.agent_id} stopped sending heartbeats")
            change = await self._failure_change(t.id, t.attempt, error, t.agent_id)
            if change is not None:
                changes.append(change)
                # In case it is alive and cut off; this attempt only, not the retry.
                await self._control("cancel", t.id, t.attempt)
        moved, _ = await self._apply(changes)
        if moved:
            log.warning("lost_agents_work_recovered", agents=describe(moved), tasks=len(moved))
        if self.breakers is not None:
            await self.breakers.record(moved)
        await self._after_changes(moved)
        return bool(moved)
