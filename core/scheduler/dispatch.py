"""Dispatch: ready tasks published to their capability's queue and recorded ``dispatched``.

The ``dispatched`` write runs while the broker's confirms are awaited (both in flight), so a
lone task's or a chain step's path pays the longer of the two, not their sum. A publish that
fails puts back what was recorded (``dispatched`` -> ``ready``, the attempt as it was, event
``unpublished``) before the round ends: a message that never went out does not wait for
``dispatch_timeout``. The messages leave before the write's first statement, so a leader that
dies after the write committed left an attempt with no message only if the broker could not
take it then; the lost-message check (repair.py) fails that one ``lost`` after
``dispatch_timeout``, as it does a message the broker lost (docs/architecture.md, "Published
and recorded together"). Tasks a paused capability or an open breaker holds stay ready.

Under load a round's tasks for one capability travel several to a message (:func:`grouped`):
one publish, one confirm and one delivery for many tasks. A round with few of them sends each
alone, at once: a lone task never waits for a batch to fill. How many messages a round's tasks
need at least depends on the agents that serve the capability (:class:`Spreads`): enough for
each to get two, and never a batch larger than the fewest slots one of them has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog
from pydantic_core import to_json

from agentdeck.core.clock import Clock
from agentdeck.core.discovery import Discovery
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.messages import VERSION, TaskMessage, batch
from agentdeck.core.models import JSON, AgentRecord, AgentState, Change, Task, Workflow
from agentdeck.core.ports import Applied, OutgoingTask, Registry
from agentdeck.core.scheduler.base import releases_with_results
from agentdeck.core.scheduler.budgets import Budgets
from agentdeck.core.scheduler.config import IN_FLIGHT
from agentdeck.core.states import TaskStatus, WorkflowStatus

log = structlog.get_logger(__name__)

T = TaskStatus
W = WorkflowStatus

SPREAD = 16
"""A round's tasks for one capability go in at least this many messages (or one each, when
fewer), so several agents can share them: the most :class:`Spreads` asks for, and what it
asks for a capability whose agents it does not know."""

SPREAD_PER_AGENT = 2
"""Messages a round's tasks for one capability go in at least, per agent serving it."""

SPREAD_READ_EVERY = 1.0
"""Seconds :class:`Spreads` keeps the registry's view of the agents before reading it again."""

CHAINED = 100_000
"""Most tasks :attr:`Dispatch._chained` remembers."""

BATCH_BYTES = 512 * 1024
"""A task message larger than this travels alone; a batch stops growing past it."""


@dataclass(frozen=True, slots=True)
class Spread:
    """How a capability's tasks of one round are split: in at least ``messages`` messages,
    none carrying more than ``largest`` tasks."""

    messages: int = SPREAD
    largest: int = 1_000_000


def grouped(
    messages: Sequence[OutgoingTask], most: int, spreads: Mapping[str, Spread] | None = None
) -> list[OutgoingTask]:
    """``messages`` (one task each) as they are published: for each capability with ``n``
    tasks, batches of up to ``min(most, n // spread.messages, spread.largest)`` tasks
    (:func:`core.messages.batch`, each task with its own headers; ``spreads`` gives each
    capability's :class:`Spread`, by default :data:`SPREAD` messages), so a capability with
    fewer than ``2 * spread.messages`` tasks in the round gets one message per task; a batch
    also stops at :data:`BATCH_BYTES`. The order of each capability's tasks is kept."""
    by_capability: dict[str, list[OutgoingTask]] = {}
    for message in messages:
        by_capability.setdefault(message.capability, []).append(message)
    out: list[OutgoingTask] = []
    for capability, tasks in by_capability.items():
        spread = (spreads or {}).get(capability, Spread())
        size = min(most, len(tasks) // max(1, spread.messages), spread.largest)
        if size <= 1:
            out.extend(tasks)
            continue
        chunk: list[OutgoingTask] = []
        weight = 0
        for message in tasks:
            if chunk and (len(chunk) >= size or weight + len(message.body) > BATCH_BYTES):
                out.append(_one(capability, chunk))
                chunk, weight = [], 0
            chunk.append(message)
            weight += len(message.body)
        if chunk:
            out.append(_one(capability, chunk))
    return out


def _one(capability: str, chunk: list[OutgoingTask]) -> OutgoingTask:
    if len(chunk) == 1:
        return chunk[0]
    headers = [m.headers for m in chunk] if any(m.headers for m in chunk) else []
    return OutgoingTask(capability, batch(TaskMessage, [m.body for m in chunk], headers), {})


class Spreads:
    """How many messages each capability's tasks of a round need at least, from the agents the
    registry lists (read at most every :data:`SPREAD_READ_EVERY` seconds, and only for a round
    that has enough tasks to batch): :data:`SPREAD_PER_AGENT` per agent that is up and serves
    it, at most :data:`SPREAD`, and batches no larger than the fewest slots (``concurrency``)
    any of them has, so no agent is handed more tasks in one message than it can start.

    With two agents a round of 50 tasks goes in 4 messages of 12 instead of 16 of 3: fewer
    publishes, confirms, deliveries and report batches for the same work (a layer of a big
    workflow pays each of them). A capability no agent is known to serve (none registered
    yet, or the registry did not answer) keeps :data:`SPREAD`, as before."""

    def __init__(self, registry: Registry, clock: Clock) -> None:
        self._discovery = Discovery(registry)
        self._clock = clock
        self._known: dict[str, Spread] = {}
        self._read_at: float | None = None

    async def of(self, tasks: Sequence[Task]) -> dict[str, Spread]:
        """The :class:`Spread` of each capability of ``tasks`` (a round's) that has enough of
        them to be batched at all; no read for a round that has none."""
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.capability] = counts.get(t.capability, 0) + 1
        if all(n < 2 * SPREAD_PER_AGENT for n in counts.values()):
            return {}  # one message a task whatever the agents: nothing to read
        now = self._clock.now()
        if self._read_at is None or now - self._read_at >= SPREAD_READ_EVERY:
            self._read_at = now
            try:
                agents = await self._discovery.live()
            except AgentdeckError as exc:  # keep the last view; SPREAD for the unknown
                log.info("spread_read_failed", error=str(exc))
            else:
                self._known = spreads_of(agents)
        return {c: self._known[c] for c in counts if c in self._known}


def spreads_of(agents: Sequence[AgentRecord]) -> dict[str, Spread]:
    """The :class:`Spread` of each capability the ``up`` ``agents`` serve (see
    :class:`Spreads`)."""
    serving: dict[str, list[AgentRecord]] = {}
    for agent in agents:
        if agent.state == AgentState.UP:
            for capability in agent.capabilities:
                serving.setdefault(capability, []).append(agent)
    return {
        capability: Spread(
            messages=min(SPREAD, SPREAD_PER_AGENT * len(up)),
            largest=max(1, min(a.concurrency for a in up)),
        )
        for capability, up in serving.items()
    }


def next_attempt(t: Task) -> Task:
    """``replace(t, attempt=t.attempt + 1)``, the same Task, in less than half the time.

    Every dispatched task is copied so, once per task (issue 16): ``replace`` reads each of
    Task's fields by name and passes them by keyword. Spelt out by position, in Task's field
    order (a test compares it with ``replace`` field by field, so a field added to Task and
    not here fails it)."""
    return Task(
        t.id,
        t.workflow_id,
        t.key,
        t.capability,
        t.status,
        t.input,
        t.needs,
        t.pending,
        t.created_at,
        t.updated_at,
        t.timeout,
        t.attempt + 1,
        t.first_attempt,
        t.retry,
        t.output,
        t.error,
        t.agent_id,
        t.not_before,
        t.deadline,
        t.started_at,
        t.finished_at,
    )


def task_body(task: Task, upstream: Mapping[str, JSON], now: float) -> bytes:
    """``encode(TaskMessage.model_construct(...))`` of ``task``'s current attempt, byte for
    byte, without the model: built from the Store's own rows, checked when submitted, so
    not validated again (the agent validates what it receives), and a model per task cost
    the scheduler more than the encoding (issue 16). Same serializer (pydantic-core's),
    same keys in the model's order; a whole number where a float is due made a float, and
    infinities and NaN written ``null``, as the model's fields do (a test pins it)."""
    message = {
        "v": VERSION,
        "type": "task",
        "task_id": task.id,
        "workflow_id": task.workflow_id,
        "key": task.key,
        "capability": task.capability,
        "attempt": task.attempt,
        "input": task.input,
        "upstream": upstream,
        "timeout": float(task.timeout),
        "dispatched_at": float(now),
    }
    return to_json(message, inf_nan_mode="null")


class Dispatch(Budgets):
    """Publishing attempts: new ones, ones left unpublished, and redeliveries."""

    _releasing: tuple[asyncio.Future[bool], Sequence[Task], float] | None = None
    """The publish :meth:`_dispatch_released` left in flight while the Store records it (the
    future, the tasks, when): settled by :meth:`_apply` before it returns."""

    _reading: dict[str, asyncio.Future[Workflow]] = {}  # replaced by each _apply, never filled
    """The workflows of the results the write under way makes, read while it runs (see
    :meth:`_apply`), by id; :meth:`_dispatch_released` takes what it needs."""

    _spread_view: Spreads | None = None

    @property
    def _spreads(self) -> Spreads:
        """How a round's tasks are split into messages (made on first use)."""
        if self._spread_view is None:
            self._spread_view = Spreads(self.registry, self.clock)
        return self._spread_view

    _chained: set[str] | None = None
    """Tasks this process dispatched that need others (a chain's later steps, a layer's
    tasks): their result most likely releases a dependent, so its workflow is read while the
    result is written. A lone task's, or a first step's, is not (nothing to gain, a read
    more); at most :data:`CHAINED` of them, forgotten all at once past that."""

    async def _apply(self, changes: Sequence[Change]) -> tuple[list[Task], list[Task]]:
        """:meth:`SchedulerBase._apply`, and then the publish of the dependents it released
        settled: their ``dispatched`` write ran while it was in flight; should it fail, they
        are put back (:meth:`_settled`) before this returns, also when the write raised.

        A write that may release dependents with it (:func:`releases_with_results`) reads the
        workflows of its results while it runs, for :meth:`_dispatch_released`'s "is it
        running?", which then waits for no read of its own. Read before the write commits,
        the answer is the one a read after it would give: a workflow's status is written only
        by the leader, with its fencing token, and this leader is busy with this write (a
        newer leader's change refuses this write, or the dispatched one that follows)."""
        succeeding = [c.task_id for c in changes if c.to == T.SUCCEEDED]
        chained = self._chained or set()
        outer = self._reading
        self._reading = (
            {
                w: asyncio.ensure_future(self.store.get_workflow(w))
                for w in {i.partition("/")[0] for i in succeeding if i in chained}  # task_id
            }
            if releases_with_results(changes)
            else {}
        )
        chained.difference_update(succeeding)
        try:
            try:
                applied = await super()._apply(changes)
            except BaseException:
                await self._settle_released()
                raise
            await self._settle_released()
            return applied
        finally:
            unused, self._reading = self._reading, outer
            if unused:  # answered already, mostly; their errors are the write's to report
                await asyncio.gather(*unused.values(), return_exceptions=True)

    def _note_chained(self, tasks: Sequence[Task]) -> None:
        if self._chained is None or len(self._chained) >= CHAINED:
            self._chained = set()
        self._chained.update(t.id for t in tasks if t.needs)

    async def _settle_released(self) -> None:
        if self._releasing is None:
            return
        (publishing, ready, now), self._releasing = self._releasing, None
        if not await self._settled(publishing, ready, now):
            self.dispatched -= len(ready)  # counted by the write, never sent

    async def _dispatch(self) -> bool:
        if not (self._polling or self._maybe_ready):
            return False  # nothing became ready since the last look
        self._maybe_ready = False
        now = self.clock.now()
        hold = await self._holds(now)
        ready = await self.store.ready_tasks(limit=self.config.batch_size, hold=hold)
        ready = await self._admit(ready, now)
        if not ready:
            return False
        if len(ready) >= self.config.batch_size:
            self._maybe_ready = True  # there may be more behind this batch
        # Published and recorded at once: the write's round trips and commit overlap the
        # broker's confirms (see the module's docstring for a publish that fails).
        publishing = asyncio.ensure_future(self._publish(ready, now))
        await asyncio.sleep(0)  # its messages leave first: the longer wait starts first
        try:
            moved, _ = await self._apply(self._dispatch_changes(ready, now))
        except BaseException:
            # Not recorded (a Store error, a deposed leader): the tasks are still ready, as
            # when the write failed after the publish before; the messages may go out (two
            # copies of one attempt at most, which the compare-and-set makes harmless).
            await self._settled(publishing, ready, now)
            raise
        if not await self._settled(publishing, ready, now):
            return False
        self._note_chained(ready)
        await self.observers.tasks_dispatched(ready, now)
        self.dispatched += len(moved)
        return True

    async def _settled(
        self, publishing: asyncio.Future[bool], ready: Sequence[Task], now: float
    ) -> bool:
        """Wait for ``publishing`` (the publish of ``ready``'s next attempts); True if it went
        out. If not, those of ``ready`` the write under way recorded ``dispatched`` are put
        back (``_publish`` logged the failure and gave back any breaker trial)."""
        try:
            published = await publishing
        except BaseException:
            await self._put_back(ready, now)
            raise
        if not published:
            await self._put_back(ready, now)
        return published

    async def _put_back(self, ready: Sequence[Task], now: float) -> None:
        """``ready`` as they were before their unpublished attempt was recorded: ``ready``,
        with their attempt (a compare-and-set on the attempt recorded, so a task the write
        did not record stays as it is)."""
        changes = [
            Change(
                t.id,
                T.READY,
                frozenset({T.DISPATCHED}),
                attempt=t.attempt + 1,
                values={"attempt": t.attempt, "deadline": None, "agent_id": None},
                event="unpublished",
                detail={"node": self.node, "reason": "the broker did not take the message"},
            )
            for t in ready
        ]
        await self._apply(changes)  # ready again: the next round tries them again

    async def _holds(self, now: float) -> set[str]:
        """The capabilities nothing may be dispatched to now: paused, rate-limited, at their
        per-minute limit, or behind an open breaker."""
        hold = set(self._hold()) | await self.holds.held()  # paused, rate-limited
        hold |= set(self.limiter.held(now))  # per-minute limits reached
        if self.breakers is not None:
            hold |= await self.breakers.hold()
        return hold

    async def _admit(self, ready: list[Task], now: float) -> list[Task]:
        """Those of ``ready`` (not held) that concurrency limits, budgets and half-open
        breakers let go now."""
        if ready and self.limiter.limits:
            ready = self.limiter.admit(ready, await self._in_flight(), now)
        if ready and self.config.label_budgets:
            ready = await self._budget_admit(ready)  # a label over its budget starts nothing
        if ready and self.breakers is not None:
            ready = await self.breakers.admit(ready)  # one trial per half-open breaker
        return ready

    async def _publish(
        self, ready: Sequence[Task], now: float, known: Mapping[str, JSON] | None = None
    ) -> bool:
        """Publish the next attempt of each of ``ready``; False (logged, the tasks left ready
        for a later round) if the bus refused."""
        try:
            next_attempts = [next_attempt(t) for t in ready]
            await self.bus.publish_tasks(await self._messages_for(next_attempts, now, known))
        except AgentdeckError as exc:
            log.warning("publish_failed", count=len(ready), error=str(exc))
            self._maybe_ready = True  # still ready: try again next round
            if self.breakers is not None:
                await self.breakers.give_back(ready)  # a trial never sent may go again at once
            return False
        self._sent_at = now
        return True

    def _dispatch_changes(self, ready: Sequence[Task], now: float) -> list[Change]:
        """``ready`` recorded ``dispatched`` with their next attempt."""
        return [
            Change(
                t.id,
                T.DISPATCHED,
                frozenset({T.READY}),
                attempt=t.attempt,
                values={
                    "attempt": t.attempt + 1,
                    "agent_id": None,
                    # No word from any agent by then while one has a free slot: the message
                    # is taken as lost (repair.py); a busy capability only pushes it out.
                    "deadline": now + self.config.dispatch_timeout,
                    "not_before": None,
                    "error": None,
                },
                detail={"node": self.node},
            )
            for t in ready
        ]

    async def _dispatch_released(self, applied: Applied) -> list[Change]:
        """The ``then`` of a write that may release dependents (see :meth:`_apply`): publish
        the dependents it released, and have them recorded ``dispatched`` with it.

        A chain's next step then costs no round of its own and no ready-tasks query. The
        Store commits the result before calling this (see ``Store.apply``), so a dependent
        is published only once its upstream output is durable; it is recorded ``dispatched``
        (the Store's second transaction) while the publish is in flight, and put back
        should the publish fail (see the module's docstring). The released tasks go
        through the same holds and admission as :meth:`_dispatch` (and
        only those of a ``running`` workflow that spent nothing in this write, whose budgets
        are checked after it); what is not sent here is left ``ready`` for it.
        """
        # A workflow that spent in this write has its budgets checked once it is written
        # (and may be held then): its released tasks wait for the next dispatch.
        spent = {t.workflow_id for t in applied.tasks if t.id in self._usage_due}
        released = [
            t for t in applied.released if t.status == T.READY and t.workflow_id not in spent
        ]
        now = self.clock.now()
        self._count_tokens(applied.tasks, now)  # what this write spent counts already
        if not released:
            return []
        hold = await self._holds(now)
        running = {}
        for w in {t.workflow_id for t in released}:
            reading = self._reading.pop(w, None)  # read while the write ran (see _apply)
            workflow = await reading if reading is not None else await self.store.get_workflow(w)
            running[w] = workflow.status == W.RUNNING
        ready = [t for t in released if running[t.workflow_id] and t.capability not in hold]
        ready = await self._admit(ready, now)
        if not ready:
            return []
        # The outputs this write stored: given, so not read back.
        known = {
            f"{t.workflow_id}/{t.key}": t.output for t in applied.tasks if t.status == T.SUCCEEDED
        }
        # Published while the Store records them (settled by _apply, as in _dispatch).
        self._releasing = (asyncio.ensure_future(self._publish(ready, now, known)), ready, now)
        self._sent.extend(ready)
        self._note_chained(ready)
        return self._dispatch_changes(ready, now)

    async def _in_flight(self) -> dict[str, int]:
        """Attempts in flight per capability, when a concurrency limit needs them."""
        if not self.limiter.counts_in_flight:
            return {}
        counts = await self.store.count_by_capability([T.DISPATCHED, T.RUNNING])
        return {capability: sum(by.values()) for capability, by in counts.items()}

    async def _messages_for(
        self, tasks: Sequence[Task], now: float, known: Mapping[str, JSON] | None = None
    ) -> list[OutgoingTask]:
        """The messages of ``tasks`` (:func:`grouped`: one per task, or batches under load),
        each for its current attempt, with its upstream outputs as the
        Store holds them (or as ``known`` gives them, by ``workflow_id/key``): small ones
        inline, large ones as references (:mod:`core.outputs`). The agent fetches what its
        handler reads, so the scheduler never reads an object and a large output crosses the
        bus at most once (in its agent's report, if at all)."""
        known = known or {}
        needed = {f"{t.workflow_id}/{k}" for t in tasks for k in t.needs} - known.keys()
        outputs = {**(await self.store.outputs(needed) if needed else {}), **known}
        messages = []
        for t in tasks:
            self._timeouts[t.id] = t.timeout
            upstream = {k: outputs.get(f"{t.workflow_id}/{k}") for k in t.needs}
            headers = self.observers.message_headers(t, now)
            messages.append(OutgoingTask(t.capability, task_body(t, upstream, now), headers))
        spreads = await self._spreads.of(tasks) if self.config.tasks_per_message > 1 else {}
        return grouped(messages, self.config.tasks_per_message, spreads)

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
                values={
                    "deadline": self.clock.now() + self.config.dispatch_timeout,
                    "agent_id": None,
                },
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
