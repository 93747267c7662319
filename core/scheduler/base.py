"""What every part of the scheduler shares: its ports, its state, and the one way it writes.

:class:`SchedulerBase` holds the state the parts of the scheduler (leadership, dispatch,
reports, follow-ups, commands: one module each) read and write, and :meth:`SchedulerBase._apply`,
the only place task changes are written: with the leader's fencing token, and announced to the
observers once the Store holds them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence

import structlog

from agentdeck.core.ahead import Ahead
from agentdeck.core.breakers import Breakers
from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.holds import CapabilityHolds
from agentdeck.core.limits import Limiter
from agentdeck.core.messages import Control, encode
from agentdeck.core.models import Change, Task, Usage, Workflow
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import Applied, Bus, Delivery, Lease, OutgoingTask, Registry, Store
from agentdeck.core.recovery import LostAgents
from agentdeck.core.scheduler.config import OPEN_WORKFLOWS, REPORT_WAIT, SchedulerConfig
from agentdeck.core.scheduler.feed import EventsFeed
from agentdeck.core.scheduler.observer import Observers, SchedulerObserver
from agentdeck.core.states import TASK_TERMINAL, TaskStatus, WorkflowStatus

log = structlog.get_logger(__name__)

T = TaskStatus
RELEASE_WITH_RESULTS = 16
"""Most workflows the results of a write may come from for the dependents it releases to be
dispatched with it (see :func:`releases_with_results`)."""


def releases_with_results(changes: Sequence[Change]) -> bool:
    """Whether a write of ``changes`` dispatches the dependents it releases with it: when it
    makes tasks ``succeeded`` of at most :data:`RELEASE_WITH_RESULTS` workflows (a task id
    is ``workflow_id/key``), however many tasks. A chain's step, or a round of one big
    workflow's layer, is latency-bound: its next tasks wait on this write, and the released
    ones leave without a ready-tasks query, a round of their own, or a workflow read each.
    Results of many workflows (many chains at once) are throughput-bound: they commit (and
    their reports are acked, so the broker sends the next ones) before what they released is
    published, by the round's dispatch; the workflows then need no read each here."""
    workflows = {c.task_id.partition("/")[0] for c in changes if c.to == T.SUCCEEDED}
    return 0 < len(workflows) <= RELEASE_WITH_RESULTS


class SchedulerBase:
    """The scheduler's ports and state; the parts in the sibling modules add the behaviour."""

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
        observers: Iterable[SchedulerObserver] = (),
    ) -> None:
        self.store, self.bus, self.registry, self.clock = store, bus, registry, clock
        self.node = node
        self.config = config or SchedulerConfig()
        self.rng = rng or random.Random()
        self._hold = hold or (lambda: ())
        self.holds = CapabilityHolds(registry, clock)
        self.limiter = Limiter(self.config.limits)
        """Capabilities an operator paused (pause-capability): held like an open breaker."""
        self.breakers = breakers
        """Circuit breakers: open ones hold their capability; None turns them off."""
        self.lost_agents = lost_agents
        """Finds running work of agents that stopped heartbeating; None: wait for deadlines."""
        self.outputs = outputs
        """Keeps large outputs in the BlobStore by reference; None: every output inline."""
        self.reload_config: Callable[[], list[str]] | None = None
        """Re-reads this node's config file into :meth:`reconfigure` (what changed), raising
        ConfigError with the old values kept: the ``reload`` command calls it, as SIGHUP does,
        and so does taking the lease (see leadership.py). Set by the composition root (None:
        the command fails saying there is no file, and a new leader keeps what it has)."""
        self.observers = Observers([EventsFeed(bus), *observers])
        """Told of every moment (see observer.py): the events feed first, then ``observers``
        and those added by :meth:`observe` (metrics and tracing, by the composition root)."""
        self._wake = asyncio.Event()
        self._inbox: list[Delivery] = []
        self._unpublished: list[OutgoingTask] = []
        # The released tasks the write under way published (see _apply).
        self._sent: list[Task] = []
        self._usage_due: dict[str, Usage] = {}
        self._timeouts: dict[str, float] = {}
        # Tasks whose change is written but whose follow-up (skip dependents, finish the
        # workflow) is not done yet: a round the Store failed half-way leaves them here.
        self._follow_ups: dict[str, Task] = {}
        # The state each task was last written in by this leader (by _apply) since the last
        # follow-up, and the fencing token it wrote with: a workflow with one of them open
        # cannot have finished, so its finished check is skipped (see _without_open_tasks).
        self._written: dict[str, Task] = {}
        self._written_fence: int | None = None
        # When the next repair sweep is due (at once on taking the lease, then every
        # repair_interval), and where the one under way goes on (None: none under way).
        self._repair_due = float("inf")
        self._repair_at: int | None = None
        # The workflows the sweep under way pages through, and whether the next one also reads
        # the cancelled ones (on taking the lease, or after a cancel cut off half-way).
        self._repair_statuses: frozenset[WorkflowStatus] = OPEN_WORKFLOWS
        self._repair_cancelled = False
        # Workflows whose budgets are still to be checked (a round that failed half-way leaves
        # them), and the labels known to be over their budget, with why (None: not read yet).
        self._budget_due: set[str] = set()
        self._labels_over: dict[str, str] | None = None
        self._workflows_seen: dict[str, Workflow] = {}
        self._fence: int | None = None
        self._lease_renewed = 0.0
        self._lease_ahead: Ahead[Lease | None] = Ahead("lease")
        self._stopping = False
        self._consumer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        # With a StoreWatch the rounds skip the queries nothing asked for (see tick()).
        self._last_poll = float("-inf")
        self._look_commands = True
        self._maybe_ready = True
        self._polling = True
        self._sent_at: float | None = None
        """When this leader last published tasks, until a round takes reports in (a fast
        task's report is then on its way: see :meth:`Scheduler.tick`)."""
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

    def observe(self, *observers: SchedulerObserver) -> None:
        """Tell ``observers`` of every moment from now on, after the ones already told."""
        for observer in observers:
            self.observers.add(observer)

    def wake(self) -> None:
        """Ask for a round soon (new work, a report arrived)."""
        self._maybe_ready = True
        self._wake.set()

    async def _apply(self, changes: Sequence[Change]) -> tuple[list[Task], list[Task]]:
        """Write ``changes`` with the fencing token; the tasks moved and the ones released.
        A change whose compare-and-set fails is skipped (not returned, not announced). The
        usage the applied ones carry is counted against ``tokens_per_minute`` and announced.

        A write that makes tasks ``succeeded`` of few workflows (:func:`releases_with_results`)
        dispatches the dependents it releases with it (:meth:`_dispatch_released`, as the
        Store's ``then``): those are announced after it, and not returned as released (they
        are dispatched already)."""
        if not changes:
            return [], []
        now = self.clock.now()
        succeeding = releases_with_results(changes)
        self._sent = []
        self._usage_due = {c.task_id: c.usage for c in changes if c.usage is not None}
        then = self._dispatch_released if succeeding else None
        try:
            result = await self.store.apply(changes, now, fence=self._fence, then=then)
        finally:
            sent, self._sent = self._sent, []
        if sent:
            sent_ids = {t.id for t in sent}
            dispatched = [t for t in result.tasks if t.id in sent_ids and t.status == T.DISPATCHED]
            dispatched_ids = {t.id for t in dispatched}
            tasks = [t for t in result.tasks if t.id not in dispatched_ids]
            left = [t for t in result.released if t.id not in dispatched_ids]
        else:  # the usual case under load: nothing was dispatched with the write
            dispatched, dispatched_ids = [], set()
            tasks, left = list(result.tasks), list(result.released)
        self._remember_written(result)
        if left or any(t.status == T.READY for t in tasks):
            self._maybe_ready = True
        self.applied += len(tasks)
        kinds = {c.task_id: c.event for c in changes}
        await self.observers.tasks_changed(tasks, result.released, kinds, now)
        if dispatched:
            await self.observers.tasks_changed(dispatched, [], {}, now)
            await self.observers.tasks_dispatched([t for t in sent if t.id in dispatched_ids], now)
            self.dispatched += len(dispatched)
        usage = {c.task_id: c.usage for c in changes if c.usage is not None}
        if usage:
            self._count_tokens(tasks, now)
            used = [(t, usage[t.id]) for t in tasks if t.id in usage]
            if used:
                await self.observers.usage_recorded(used, now)
        return tasks, left

    def _report_coming(self, now: float) -> bool:
        """True while tasks this leader sent may be about to report: sent less than
        :data:`REPORT_WAIT` of ``poll_interval`` ago, and no report taken in since (a fast
        task's report comes back within milliseconds). What can wait goes after it."""
        sent = self._sent_at
        return sent is not None and now - sent < self.config.poll_interval * REPORT_WAIT

    def _remember_written(self, result: Applied) -> None:
        """Note the state ``result`` wrote each task in (released first: a task released and
        then dispatched in one write ends in its later state), for :meth:`_known_open`."""
        if self._written_fence != self._fence:
            self._written = {}
            self._written_fence = self._fence
        self._written.update((t.id, t) for t in result.released)
        self._written.update((t.id, t) for t in result.tasks)

    def _known_open(self) -> set[str]:
        """Workflows that have a task open as this leader last wrote it, since the last
        follow-up: every task change is written by :meth:`_apply` under the same fencing token
        (a newer leader's writes refuse this one's), so such a task is open still."""
        if self._written_fence != self._fence or self._fence is None:
            return set()
        return {t.workflow_id for t in self._written.values() if t.status not in TASK_TERMINAL}

    def _count_tokens(self, tasks: Sequence[Task], now: float) -> None:
        """Count against ``tokens_per_minute`` the usage the write under way recorded for
        ``tasks`` (once: before its released dependents are admitted, or after it)."""
        for t in tasks:
            u = self._usage_due.pop(t.id, None)
            if u is not None:
                # tokens_per_minute counts what the Store recorded, as the budgets do.
                self.limiter.record_tokens(t.capability, u.input_tokens + u.output_tokens, now)

    async def _dispatch_released(self, applied: Applied) -> list[Change]:
        """Publish dependents ``applied`` released and return their ``dispatched`` changes
        (the dispatch part overrides this: none here)."""
        return []

    async def _control(self, action: str, target: str, attempt: int | None = None) -> None:
        """Tell agents (best effort) to act on ``target`` (for a cancel, up to ``attempt``, if
        given): a failed publish is only logged."""
        order = Control(action=action, target=target, at=self.clock.now(), attempt=attempt)  # type: ignore[arg-type]
        body = encode(order)
        try:
            await self.bus.publish_control(body)
        except AgentdeckError as exc:
            log.warning("control_publish_failed", action=action, target=target, error=str(exc))
