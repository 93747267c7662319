"""The scheduler: the one writer of task state.

One node at a time holds the scheduler lease (its fencing token goes with every write). The
leader loops: apply agents' reports, carry out operators' commands, promote retries whose delay
has passed, fail attempts that outlived their deadline, and dispatch ready tasks. Every step
reads the Store and writes it with compare-and-set, so a duplicate or late report, or a second
scheduler that lost its lease, changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import structlog

from agentdeck.core.breakers import Breakers
from agentdeck.core.clock import Clock
from agentdeck.core.dag import descendants
from agentdeck.core.errors import AgentdeckError, LeaseLost, MessageError, NotFound
from agentdeck.core.events import task_event, workflow_event
from agentdeck.core.holds import CapabilityHolds
from agentdeck.core.messages import Control, ErrorModel, Event, Report, TaskMessage, decode, encode
from agentdeck.core.models import Change, Command, CommandStatus, ErrorInfo, Task, Workflow
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import Bus, Delivery, OutgoingTask, Registry, Store, StoreWatch
from agentdeck.core.recovery import LostAgents, describe
from agentdeck.core.retry import RetryPolicy, decide
from agentdeck.core.states import TASK_IN_FLIGHT, TASK_TERMINAL, TaskStatus, WorkflowStatus
from agentdeck.core.tracing import attempt_span_id, workflow_trace_id

if TYPE_CHECKING:
    from agentdeck.core.metrics import Metrics
    from agentdeck.core.tracing import Tracing

log = structlog.get_logger(__name__)

T = TaskStatus
W = WorkflowStatus
LEASE_NAME = "scheduler"
IN_FLIGHT = frozenset(TASK_IN_FLIGHT)
#: Open workflows the repair sweep looks at per round (one query for them, one for the counts
#: of their tasks), so a big store's sweep is spread over rounds rather than stall one.
REPAIR_PAGE = 1000
#: Task statuses that still move a workflow forward with no follow-up needed.
MOVING = frozenset({T.READY, T.DISPATCHED, T.RUNNING, T.RETRYING})
#: Workflow statuses whose tasks may still move (the others' tasks are all final).
OPEN_WORKFLOWS = frozenset({W.RUNNING, W.PAUSED})


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """How the scheduler paces itself.

    ``poll_interval``: the longest it idles before looking at the Store again (work submitted by
    another process is noticed within it). ``batch_size``: most tasks dispatched or reports
    applied per round. ``lost_grace``: seconds past a running attempt's timeout before it counts
    as lost. ``lease_ttl``: how long the leader's lease lives unless renewed. ``repair_interval``:
    seconds between the leader's repair sweeps (the first runs when it takes the lease).
    """

    poll_interval: float = 0.2
    batch_size: int = 500
    lost_grace: float = 5.0
    lease_ttl: float = 4.0
    repair_interval: float = 30.0
    default_retry: RetryPolicy = field(default_factory=RetryPolicy)
    capability_retry: Mapping[str, RetryPolicy] = field(default_factory=dict)


class Scheduler:
    """Moves workflows forward. Use as an async context manager, then ``run()`` (or drive
    ``tick()`` by hand in tests)."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        registry: Registry,
        clock: Clock,
        *,
        node: str,
        config: SchedulerConfig | None = None,
        rng: random.Random | None = None,
        hold: Callable[[], Iterable[str]] | None = None,
        breakers: Breakers | None = None,
        lost_agents: LostAgents | None = None,
        outputs: OutputStore | None = None,
    ) -> None:
        self.store, self.bus, self.registry, self.clock = store, bus, registry, clock
        self.node = node
        self.config = config or SchedulerConfig()
        self.rng = rng or random.Random()
        self._hold = hold or (lambda: ())
        self.holds = CapabilityHolds(registry, clock)
        """Capabilities an operator paused (pause-capability): held like an open breaker."""
        self.breakers = breakers
        self.lost_agents = lost_agents
        self.outputs = outputs
        """Keeps large outputs in the BlobStore by reference; None: every output inline."""
        """Finds running work of agents that stopped heartbeating; None: wait for deadlines."""
        """Circuit breakers: open ones hold their capability; None turns them off."""
        self._wake = asyncio.Event()
        self._inbox: list[Delivery] = []
        self._unpublished: list[OutgoingTask] = []
        self._timeouts: dict[str, float] = {}
        # Tasks whose change is written but whose follow-up (skip dependents, finish the
        # workflow) is not done yet: a round the Store failed half-way leaves them here.
        self._follow_ups: dict[str, Task] = {}
        # When the next repair sweep is due (at once on taking the lease, then every
        # repair_interval), and where the one under way goes on (None: none under way).
        self._repair_due = float("inf")
        self._repair_at: int | None = None
        # The workflows the sweep under way pages through, and whether the next one also reads
        # the cancelled ones (on taking the lease, or after a cancel cut off half-way).
        self._repair_statuses: frozenset[WorkflowStatus] = OPEN_WORKFLOWS
        self._repair_cancelled = False
        self._fence: int | None = None
        self._lease_renewed = 0.0
        self._stopping = False
        self._consumer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        # With a StoreWatch the rounds skip the queries nothing asked for (see tick()).
        self._last_poll = float("-inf")
        self._look_commands = True
        self._maybe_ready = True
        self._polling = True
        self.metrics: Metrics | None = None
        """Prometheus metrics to feed (set by the composition root; None: none kept)."""
        self.tracing: Tracing | None = None
        """Where workflow and attempt spans go (set by the composition root; None: no spans)."""
        self.rounds = 0
        self.dispatched = 0
        self.applied = 0

    def __repr__(self) -> str:
        return (
            f"<Scheduler node={self.node} leader={self.is_leader} rounds={self.rounds} "
            f"dispatched={self.dispatched} applied={self.applied}>"
        )

    @property
    def is_leader(self) -> bool:
        """True while this node holds the scheduler lease."""
        return self._fence is not None

    # ----------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Scheduler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def wake(self) -> None:
        """Ask for a round soon (new work, a report arrived)."""
        self._maybe_ready = True
        self._wake.set()

    async def run(self) -> None:
        """Lead when the lease is free, otherwise stand by; until :meth:`stop`."""
        while not self._stopping:
            try:
                if await self._ensure_lease():
                    busy = await self.tick()
                    if busy:
                        await asyncio.sleep(0)  # let agents and consumers run between rounds
                        continue
            except LeaseLost:
                log.warning("lease_lost", node=self.node)
                await self._step_down()
            except AgentdeckError as exc:
                # A backend hiccup: stay alive, the next round tries again.
                log.error("scheduler_round_failed", error=str(exc), kind=type(exc).__name__)
            await self._idle()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop leading: end the report consumer and give the lease up."""
        self._stopping = True
        self._wake.set()
        await self._step_down(release=True)

    async def _idle(self) -> None:
        """Wait for a wake-up or the poll interval, whichever comes first."""
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(self.config.poll_interval))
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, waiter):
                fut.cancel()
            self._wake.clear()

    # --------------------------------------------------------------------- leadership

    async def _ensure_lease(self) -> bool:
        now = self.clock.now()
        if self._fence is not None and now - self._lease_renewed < self.config.lease_ttl / 3:
            return True
        lease = await self.registry.acquire_lease(LEASE_NAME, self.node, self.config.lease_ttl)
        if lease is None:
            if self._fence is not None:
                raise LeaseLost(f"{self.node} lost the scheduler lease")
            return False
        self._lease_renewed = now
        if self.metrics is not None:
            self.metrics.lease_renewed()
        if self._fence is None:
            self._fence = lease.token
            log.info("leader_elected", node=self.node, token=lease.token)
            if self.metrics is not None:
                self.metrics.leadership(True)
            await self._take_over()
        return True

    async def _take_over(self) -> None:
        """Become leader: rebuild what memory holds from the Store and start taking reports."""
        # Record our token at once, so a deposed leader's next write is refused.
        await self.store.apply([], self.clock.now(), fence=self._fence)
        inflight = await self.store.list_tasks(status=IN_FLIGHT, limit=1_000_000)
        self._timeouts = {t.id: t.timeout for t in inflight}
        self._repair_due = self.clock.now()  # a dead leader may have left follow-ups undone
        self._repair_at = None
        self._repair_cancelled = True  # ... or a cancel half done
        if not self.bus.durable and inflight:
            # The bus lost every message with the process that held it: publish the same
            # attempts again. No agent can still hold the old ones, so this duplicates nothing.
            await self._redeliver(inflight)
        self._consumer = asyncio.create_task(self._consume_reports(), name="scheduler-reports")
        if callable(getattr(self.store, "changes", None)):
            self._watcher = asyncio.create_task(self._watch_store(), name="scheduler-watch")

    async def _step_down(self, release: bool = False) -> None:
        for task in (self._consumer, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._consumer = self._watcher = None
        for delivery in self._inbox:
            with contextlib.suppress(Exception):
                await delivery.requeue()
        self._inbox.clear()
        if release and self._fence is not None:
            with contextlib.suppress(Exception):
                await self.registry.release_lease(LEASE_NAME, self.node)
        if self._fence is not None and self.metrics is not None:
            self.metrics.leadership(False)
        self._fence = None

    async def _consume_reports(self) -> None:
        async for delivery in self.bus.consume_reports():
            self._inbox.append(delivery)
            self._wake.set()

    async def _watch_store(self) -> None:
        """Wake at once when another process submits a workflow or queues a command (a Store
        with :class:`core.ports.StoreWatch`, e.g. PostgreSQL LISTEN/NOTIFY). Polling every
        ``poll_interval`` stays on as the fallback: a lost notification costs one interval."""
        watch = cast(StoreWatch, self.store)
        while not self._stopping:
            try:
                async for channel in watch.changes():
                    if channel == "commands":
                        self._look_commands = True
                    else:
                        self._maybe_ready = True
                    self._wake.set()
                return  # the store closed
            except AgentdeckError as exc:
                log.warning("store_watch_failed", error=str(exc), fallback="polling")
            await self.clock.sleep(max(self.config.poll_interval, 1.0))

    # -------------------------------------------------------------------------- rounds

    async def tick(self) -> bool:
        """One round of leader work. True if anything happened (so go again at once)."""
        if not await self._ensure_lease():
            return False
        self.rounds += 1
        busy = await self._apply_reports()
        # Without a StoreWatch every round looks at everything. With one, a round under load
        # (reports in, tasks out) skips the queries nothing asked for: commands only when one
        # was notified, and the time-driven work (retries due, deadlines, lost agents) once per
        # poll_interval, which is also the fallback for a notification that got lost.
        now = self.clock.now()
        self._polling = self._watcher is None or now - self._last_poll >= self.config.poll_interval
        if self._polling:
            self._last_poll = now
        if self._polling or self._look_commands:
            self._look_commands = False
            busy |= await self._run_commands()
        if self._polling:
            busy |= await self._handle_due()
            busy |= await self._recover_lost_agents()
            if self._follow_ups:  # left by a round the Store failed half-way
                await self._after_changes([])
        if self._repair_at is None and now >= self._repair_due:
            self._repair_at, self._repair_due = 0, now + self.config.repair_interval
            self._repair_statuses = OPEN_WORKFLOWS | (
                {W.CANCELLED} if self._repair_cancelled else set()
            )
            self._repair_cancelled = False
        if self._repair_at is not None:  # a page a round; a page the Store failed comes again
            await self._repair()
            busy |= self._repair_at is not None
        busy |= await self._flush_unpublished()
        busy |= await self._dispatch()
        return busy

    async def _apply(self, changes: Sequence[Change]) -> tuple[list[Task], list[Task]]:
        if not changes:
            return [], []
        now = self.clock.now()
        result = await self.store.apply(changes, now, fence=self._fence)
        if result.released or any(t.status == T.READY for t in result.tasks):
            self._maybe_ready = True
        if self.metrics is not None:
            self.metrics.tasks_changed(result.tasks, now)
        if self.tracing is not None:
            self.tracing.tasks_changed(result.tasks, now)
        self.applied += len(result.tasks)
        kinds = {c.task_id: c.event for c in changes}
        await self._publish_events(
            [task_event(t, now, kinds.get(t.id)) for t in result.tasks]
            + [task_event(t, now, "ready") for t in result.released]
        )
        return result.tasks, result.released

    async def _publish_events(self, events: Sequence[Event]) -> None:
        for event in events:
            try:
                await self.bus.publish_event(encode(event))
            except AgentdeckError as exc:  # watchers are best effort; the Store has the truth
                log.warning("event_publish_failed", error=str(exc))
                return

    # ----------------------------------------------------------------------- dispatch

    async def _dispatch(self) -> bool:
        if not (self._polling or self._maybe_ready):
            return False  # nothing became ready since the last look
        self._maybe_ready = False
        hold = set(self._hold()) | await self.holds.paused()
        if self.breakers is not None:
            hold |= await self.breakers.hold()
        ready = await self.store.ready_tasks(limit=self.config.batch_size, hold=hold)
        if ready and self.breakers is not None:
            ready = await self.breakers.admit(ready)  # one trial per half-open breaker
        if not ready:
            return False
        if len(ready) >= self.config.batch_size:
            self._maybe_ready = True  # there may be more behind this batch
        now = self.clock.now()
        # Publish first, record second: the Store never says `dispatched` for a message the
        # broker does not hold, even if this process dies in between (then the task is still
        # `ready` and the next leader sends the same attempt again; the (task, attempt)
        # compare-and-set makes the copy harmless). A failed publish leaves the tasks ready.
        try:
            next_attempts = [replace(t, attempt=t.attempt + 1) for t in ready]
            await self.bus.publish_tasks(await self._messages_for(next_attempts, now))
        except AgentdeckError as exc:
            log.warning("publish_failed", count=len(ready), error=str(exc))
            self._maybe_ready = True  # still ready: try again next round
            if self.breakers is not None:
                await self.breakers.give_back(ready)  # a trial never sent may go again at once
            return False
        changes = [
            Change(
                t.id,
                T.DISPATCHED,
                frozenset({T.READY}),
                attempt=t.attempt,
                values={
                    "attempt": t.attempt + 1,
                    "agent_id": None,
                    "deadline": None,
                    "not_before": None,
                    "error": None,
                },
                detail={"node": self.node},
            )
            for t in ready
        ]
        moved, _ = await self._apply(changes)
        if self.metrics is not None:
            self.metrics.tasks_dispatched(ready, now)
        self.dispatched += len(moved)
        return True

    async def _messages_for(self, tasks: Sequence[Task], now: float) -> list[OutgoingTask]:
        """One message per task, for its current attempt, with its upstream outputs."""
        needed = {f"{t.workflow_id}/{k}" for t in tasks for k in t.needs}
        outputs = await self.store.outputs(needed) if needed else {}
        if self.outputs is not None:
            outputs = await self.outputs.resolve_all(outputs)
        messages = []
        for t in tasks:
            self._timeouts[t.id] = t.timeout
            msg = TaskMessage(
                task_id=t.id,
                workflow_id=t.workflow_id,
                key=t.key,
                capability=t.capability,
                attempt=t.attempt,
                input=t.input,
                upstream={k: outputs.get(f"{t.workflow_id}/{k}") for k in t.needs},
                timeout=t.timeout,
                dispatched_at=now,
            )
            headers = self.tracing.attempt_dispatched(t, now) if self.tracing else {}
            messages.append(OutgoingTask(t.capability, encode(msg), headers))
        return messages

    async def _flush_unpublished(self) -> bool:
        if not self._unpublished:
            return False
        pending, self._unpublished = self._unpublished, []
        try:
            await self.bus.publish_tasks(pending)
        except AgentdeckError as exc:
            log.warning("publish_failed", count=len(pending), error=str(exc))
            self._unpublished = pending + self._unpublished
            return False
        return True

    async def _redeliver(self, tasks: Sequence[Task]) -> None:
        changes = [
            Change(
                t.id,
                T.DISPATCHED,
                frozenset(IN_FLIGHT),
                attempt=t.attempt,
                values={"deadline": None, "agent_id": None},
                event="redelivered",
                detail={"reason": "scheduler restarted; the bus does not keep messages"},
            )
            for t in tasks
        ]
        moved, _ = await self._apply(changes)
        messages = await self._messages_for(moved, self.clock.now())
        try:
            await self.bus.publish_tasks(messages)
        except AgentdeckError as exc:
            # The Store says dispatched; keep the messages and publish them next round.
            log.warning("publish_failed", count=len(messages), error=str(exc))
            self._unpublished.extend(messages)
        log.info("redelivered", count=len(moved))

    # ------------------------------------------------------------------------ reports

    async def _apply_reports(self) -> bool:
        if not self._inbox:
            return False
        # The batch stays in the inbox until its changes are written: a round that fails (the
        # Store is restarting) leaves it for the next round, or for _step_down to requeue.
        # Dropped, the reports would stay unacked on our channel and their tasks in flight.
        batch = self._inbox[: self.config.batch_size]
        reports: list[tuple[Report, Delivery]] = []
        for delivery in batch:
            try:
                reports.append((decode(delivery.body, Report), delivery))
            except MessageError as exc:
                log.error("bad_report", error=str(exc))
                self._inbox.remove(delivery)
                await delivery.reject(str(exc))
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
                    )
                )
            else:
                failures.append(report)
        for report in failures:
            error = (
                report.error.to_info()
                if report.error
                else ErrorInfo("error", "agent reported failure without a reason")
            )
            change = await self._failure_change(
                report.task_id, report.attempt, error, report.agent_id
            )
            if change is not None:
                changes.append(change)
        moved, _ = await self._apply(changes)
        written = {id(delivery) for _, delivery in reports}
        self._inbox[:] = [d for d in self._inbox if id(d) not in written]
        try:
            if self.breakers is not None:
                await self.breakers.record(moved)
            await self._after_changes(moved)
        finally:
            # Written, so done with whatever follows. Acked together, not one awaited ack
            # after another: the acks' frames then leave in one pass of the bus's writer
            # instead of one event-loop round trip each.
            await asyncio.gather(*(delivery.ack() for _, delivery in reports))
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

    def policy_for(self, task: Task) -> RetryPolicy:
        """The retry policy that governs ``task``: its own, its capability's, or the default."""
        base = self.config.capability_retry.get(task.capability, self.config.default_retry)
        if task.retry:
            # The spec's keys are laid over the capability's policy, not over the default.
            merged = {**base.to_dict(), **task.retry}
            return RetryPolicy.from_mapping(merged, where=f"task {task.key!r} retry")
        return base

    async def _failure_change(
        self, task_id: str, attempt: int, error: ErrorInfo, agent_id: str | None
    ) -> Change | None:
        """The change that records a failed attempt: retrying after a delay, or failed."""
        try:
            task = await self.store.get_task(task_id)
        except NotFound:
            log.warning("report_for_unknown_task", task_id=task_id)
            return None
        if task.attempt != attempt or task.status not in IN_FLIGHT:
            return None  # stale: the CAS would skip it anyway
        self._timeouts.pop(task_id, None)
        decision = decide(self.policy_for(task), task.attempts_used, error, self.rng)
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
            return Change(
                task.id,
                T.RETRYING,
                frozenset(IN_FLIGHT),
                attempt=attempt,
                values=values,
                detail=detail,
            )
        values["finished_at"] = now
        return Change(
            task.id, T.FAILED, frozenset(IN_FLIGHT), attempt=attempt, values=values, detail=detail
        )

    def _log_ids(self, task: Task) -> dict[str, str]:
        """Keys that tie a log line to ``task``: its ids and, when traced, its attempt's span."""
        ids = {"task_id": task.id, "workflow_id": task.workflow_id}
        if self.tracing is not None:
            ids["trace_id"] = f"{workflow_trace_id(task.workflow_id):032x}"
            ids["span_id"] = f"{attempt_span_id(task.id, task.attempt):016x}"
        return ids

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
        if touched:
            await self._finish_workflows(touched)
        self._follow_ups.clear()

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
        counts = await self.store.count_tasks(list(workflow_ids))
        now = self.clock.now()
        finished: dict[str, WorkflowStatus] = {}
        for workflow_id, by_status in counts.items():
            open_tasks = sum(n for s, n in by_status.items() if s not in TASK_TERMINAL)
            if open_tasks:
                continue
            total = sum(by_status.values())
            if by_status.get(T.SUCCEEDED, 0) == total:
                outcome = W.SUCCEEDED
            elif by_status.get(T.CANCELLED, 0) and not by_status.get(T.FAILED, 0):
                outcome = W.CANCELLED
            else:
                outcome = W.FAILED
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
                if self.metrics is not None:
                    self.metrics.workflow_finished(outcome.value)
                if self.tracing is not None:
                    self.tracing.workflow_finished(workflow, now)
                await self._publish_events([workflow_event(workflow, now)])
        return finished

    async def _repair(self) -> None:
        """One page of the repair sweep: do the follow-ups a leader died before doing (or a node
        crashed between a change and them), by the same code as :meth:`_after_changes` and
        :meth:`_cancel_workflow`.

        It pages through the running and paused workflows (:data:`REPAIR_PAGE` a round), and
        the cancelled ones too in the sweep on taking the lease, and counts their tasks by
        status in the Store. A running or paused workflow whose tasks are all final is
        finished. One with blocked tasks and nothing moving (ready, dispatched, running,
        retrying) can only be waiting on a failed or cancelled task whose dependents were never
        skipped (a blocked task whose needs all succeeded is ready): only its tasks are read,
        its failures' dependents skipped, and it is finished. A cancelled workflow with a task
        not final was cancelled by a leader that died before cancelling its tasks: they are
        cancelled now. A consistent store gets no write and no task read. Writes carry the
        fencing token: a deposed leader writes nothing."""
        offset = self._repair_at or 0
        page = await self.store.list_workflows(
            status=self._repair_statuses, limit=REPAIR_PAGE, offset=offset
        )
        counts = await self.store.count_tasks([w.id for w in page])
        cancelled = {w.id for w in page if w.status == W.CANCELLED}
        half_cancelled = [w for w in cancelled if set(counts.get(w, {})) - TASK_TERMINAL]
        counts = {w: by for w, by in counts.items() if w not in cancelled}
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
            error = ErrorInfo(
                "lost",
                f"no result {t.timeout:g}s (+{self.config.lost_grace:g}s grace) after it started",
            )
            change = await self._failure_change(t.id, t.attempt, error, t.agent_id)
            if change is not None:
                changes.append(change)
                await self._control("cancel", t.id)
        moved, _ = await self._apply(changes)
        if self.breakers is not None:
            await self.breakers.record(moved)
        await self._after_changes(moved)
        return bool(moved)

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
                await self._control("cancel", t.id)  # in case it is alive and cut off
        moved, _ = await self._apply(changes)
        if moved:
            log.warning("lost_agents_work_recovered", agents=describe(moved), tasks=len(moved))
        if self.breakers is not None:
            await self.breakers.record(moved)
        await self._after_changes(moved)
        return bool(moved)

    async def _control(self, action: str, target: str) -> None:
        body = encode(Control(action=action, target=target, at=self.clock.now()))  # type: ignore[arg-type]
        try:
            await self.bus.publish_control(body)
        except AgentdeckError as exc:
            log.warning("control_publish_failed", action=action, target=target, error=str(exc))

    # ----------------------------------------------------------------------- commands

    async def _run_commands(self) -> bool:
        commands = await self.store.pending_commands(limit=100)
        for command in commands:
            try:
                result = await self.execute(command)
                status = CommandStatus.DONE
            except LeaseLost:
                raise  # not this command's failure: it stays pending for the new leader
            except AgentdeckError as exc:
                result, status = str(exc), CommandStatus.FAILED
            finished = replace(command, status=status, result=result, finished_at=self.clock.now())
            await self.store.finish_command(finished)
            log.info(
                "command_done",
                action=command.action,
                target=command.target,
                status=status.value,
                result=result,
                actor=command.actor,
            )
            await self._publish_events(
                [
                    Event(
                        topic="command",
                        at=self.clock.now(),
                        data={
                            "id": command.id,
                            "action": command.action,
                            "target": command.target,
                            "status": status.value,
                            "result": result,
                        },
                    )
                ]
            )
        return bool(commands)

    async def execute(self, command: Command) -> str:
        """Carry out one operator command; returns what happened, raises AgentdeckError if it
        cannot be done (unknown target, wrong state)."""
        action = command.action
        if action == "cancel":
            return await self._cancel_workflow(command.target)
        if action in ("pause", "resume"):
            return await self._pause_workflow(command.target, pause=action == "pause")
        if action == "retry":
            return await self._retry(command.target)
        if action in ("trip", "reset") and self.breakers is not None:
            state = await (self.breakers.trip if action == "trip" else self.breakers.reset)(
                command.target
            )
            return f"breaker {state.name} is {state.status.value}"
        if action in ("drain", "undrain"):
            return await self._drain_agent(command.target, drain=action == "drain")
        if action in ("pause-capability", "resume-capability"):
            pause = action == "pause-capability"
            changed = await self.holds.set(command.target, paused=pause, actor=command.actor)
            self._maybe_ready = True  # resuming may release ready tasks at once
            done = "paused" if pause else "resumed"
            return f"capability {command.target} {done}" + ("" if changed else " already")
        if action == "requeue":
            await self.bus.requeue_dead_letter(command.target)
            return f"dead letter {command.target} requeued"
        raise AgentdeckError(
            f"unknown action {action!r}; known: cancel, pause, resume, retry, drain, undrain, "
            "pause-capability, resume-capability, requeue"
            + (", trip, reset" if self.breakers is not None else "")
        )

    async def _drain_agent(self, agent_id: str, *, drain: bool) -> str:
        # The agent carries it out (agents/worker.py obeys drain/resume control messages); the
        # registry shows it as draining from its next heartbeat.
        if agent_id != "*" and agent_id not in {a.id for a in await self.registry.agents()}:
            raise NotFound(f"no live agent {agent_id!r}")
        order = Control(action="drain" if drain else "resume", target=agent_id, at=self.clock.now())
        await self.bus.publish_control(encode(order))  # a failure fails the command, visibly
        return f"{'drain' if drain else 'resume'} sent to agent {agent_id}"

    async def _cancel_workflow(self, workflow_id: str) -> str:
        workflow = await self.store.get_workflow(workflow_id)
        now = self.clock.now()
        if not await self.store.set_workflow_status(
            workflow.id, OPEN_WORKFLOWS, W.CANCELLED, now, fence=self._fence
        ):
            raise AgentdeckError(
                f"workflow {workflow_id} is {workflow.status.value}; only running or paused "
                "workflows can be cancelled"
            )
        try:
            cancelled = await self._close_cancelled(workflow.id, now)
        except AgentdeckError:
            # The workflow is cancelled, its tasks maybe not: the next sweep, at once, does it.
            self._repair_cancelled, self._repair_due = True, now
            raise
        return f"cancelled workflow {workflow_id} ({cancelled} unfinished task(s) cancelled)"

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
        if self.metrics is not None:
            self.metrics.workflow_finished(W.CANCELLED.value)
        if self.tracing is not None:
            self.tracing.workflow_finished(cancelled, now)
        await self._publish_events([workflow_event(cancelled, now)])
        return len(moved)

    async def _pause_workflow(self, workflow_id: str, *, pause: bool) -> str:
        workflow = await self.store.get_workflow(workflow_id)
        src, dst = (W.RUNNING, W.PAUSED) if pause else (W.PAUSED, W.RUNNING)
        if not await self.store.set_workflow_status(
            workflow.id, {src}, dst, self.clock.now(), fence=self._fence
        ):
            raise AgentdeckError(
                f"workflow {workflow_id} is {workflow.status.value}; only a {src.value} "
                f"workflow can be {'paused' if pause else 'resumed'}"
            )
        updated = await self.store.get_workflow(workflow_id)
        await self._publish_events([workflow_event(updated, self.clock.now())])
        self.wake()
        return f"{'paused' if pause else 'resumed'} workflow {workflow_id}"

    async def _retry(self, target: str) -> str:
        """Retry a failed/cancelled task, or every failed task of a workflow, with a fresh
        retry budget; dependents that were skipped wait for it again."""
        if "/" in target:
            task = await self.store.get_task(target)
            workflow_id, keys = task.workflow_id, {task.key}
        else:
            workflow_id = (await self.store.get_workflow(target)).id
            keys = set()
        tasks = await self.store.list_tasks(workflow_id=workflow_id, limit=1_000_000)
        by_key = {t.key: t for t in tasks}
        if not keys:
            keys = {t.key for t in tasks if t.status in (T.FAILED, T.CANCELLED)}
            if not keys:
                raise AgentdeckError(f"workflow {workflow_id} has no failed or cancelled task")
        for key in keys:
            if by_key[key].status not in (T.FAILED, T.CANCELLED):
                raise AgentdeckError(
                    f"task {by_key[key].id} is {by_key[key].status.value}; only failed or "
                    "cancelled tasks can be retried"
                )
        graph = {t.key: t.needs for t in tasks}
        revived: set[str] = set(keys)
        for key in keys:
            revived |= {
                k for k in descendants(graph, key) if by_key[k].status in (T.SKIPPED, T.CANCELLED)
            }
        changes = []
        for key in sorted(revived):
            t = by_key[key]
            pending = sum(1 for n in t.needs if n in revived or by_key[n].status != T.SUCCEEDED)
            values: dict[str, Any] = {
                "pending": pending,
                "error": None,
                "output": None,
                "finished_at": None,
                "not_before": None,
            }
            if key in keys:
                values["first_attempt"] = t.attempt + 1
            changes.append(
                Change(
                    t.id,
                    T.READY if pending == 0 else T.BLOCKED,
                    frozenset({t.status}),
                    attempt=t.attempt,
                    values=values,
                    event="retried" if key in keys else None,
                    detail={"by": "operator"},
                )
            )
        now = self.clock.now()
        await self.store.set_workflow_status(
            workflow_id, {W.FAILED, W.CANCELLED}, W.RUNNING, now, fence=self._fence
        )
        moved, _ = await self._apply(changes)
        self.wake()
        return f"retrying {len(keys)} task(s) of workflow {workflow_id} ({len(moved)} reset)"


def summarize(workflow: Workflow, counts: Mapping[TaskStatus, int]) -> dict[str, Any]:
    """A workflow with its progress, for tables and ``--json``."""
    done = sum(n for s, n in counts.items() if s in TASK_TERMINAL)
    return {
        "id": workflow.id,
        "name": workflow.name,
        "status": workflow.status.value,
        "tasks": workflow.task_count,
        "done": done,
        "counts": {s.value: n for s, n in counts.items() if n},
        "created_at": workflow.created_at,
        "finished_at": workflow.finished_at,
    }
