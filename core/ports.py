"""The ports: what core needs from the world, one Protocol per concern.

Each backend module in ``backends/`` implements one or more of these. Every method documents
its guarantee and the errors it raises; the contract suite in ``tests/contract`` checks them on
every backend. All methods may raise :class:`core.errors.BackendUnavailable` when the engine
cannot be reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agentdeck.core.models import (
    JSON,
    AgentRecord,
    AgentState,
    AttemptUsage,
    Budget,
    Change,
    Command,
    Task,
    TaskEvent,
    Workflow,
)
from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.core.usage import UsageGroup, UsageTotal

# --------------------------------------------------------------------------------------- Bus


class Delivery(Protocol):
    """One message taken from a queue; it stays owned by the consumer until settled."""

    body: bytes
    headers: Mapping[str, str]
    redelivered: bool

    async def ack(self) -> None:
        """Settle the message as done. Call only after its effect is durable."""
        ...

    async def reject(self, reason: str) -> None:
        """Dead-letter the message with ``reason``; it is never redelivered to a consumer."""
        ...

    async def requeue(self) -> None:
        """Give the message back to the queue for another consumer (used when draining)."""
        ...


@dataclass(frozen=True, slots=True)
class OutgoingTask:
    """A task message ready for publishing to its capability's queue."""

    capability: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was rejected, with where it came from and why."""

    id: str
    queue: str
    body: bytes
    reason: str
    at: float


class Bus(Protocol):
    """Moves task messages to agents, reports back to the scheduler, and events to watchers.

    Delivery is at-least-once: a consumer may see a message again (``redelivered``) until it
    acks it. ``durable`` tells whether unacked messages survive a restart of this process; the
    scheduler republishes in-flight work at start when they do not.
    """

    durable: bool

    async def start(self) -> None:
        """Connect and declare what the bus needs. Raises BackendUnavailable."""
        ...

    async def close(self) -> None:
        """Stop consumers and disconnect. Unacked messages go back to their queues."""
        ...

    async def publish_tasks(self, messages: Sequence[OutgoingTask]) -> None:
        """Publish each message to its capability's queue; returns once all are accepted
        (confirmed by the broker where it has confirms)."""
        ...

    def consume_tasks(self, capabilities: Sequence[str], prefetch: int) -> AsyncIterator[Delivery]:
        """Deliveries from the queues of ``capabilities``, at most ``prefetch`` unacked at once."""
        ...

    async def queued(self, capability: str) -> int | None:
        """How many messages wait in ``capability``'s task queue, ready for a consumer: not
        those an agent holds unacked (its prefetch), nor the dead letters. 0 when the queue
        does not exist; None when this bus cannot tell. Raises BackendUnavailable."""
        ...

    async def publish_report(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish an agent's report (started / finished) for the scheduler."""
        ...

    def consume_reports(self) -> AsyncIterator[Delivery]:
        """Reports for the scheduler; ack each one after its effect is in the Store."""
        ...

    async def publish_event(self, body: bytes) -> None:
        """Fan an event out to every current subscriber (not stored; late joiners miss it)."""
        ...

    def subscribe_events(self) -> AsyncIterator[bytes]:
        """Events published from now on."""
        ...

    async def publish_control(self, body: bytes) -> None:
        """Fan a control message (drain, resume, cancel) out to every agent."""
        ...

    def subscribe_control(self) -> AsyncIterator[bytes]:
        """Control messages published from now on."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead-lettered messages, newest first."""
        ...

    async def requeue_dead_letter(self, letter_id: str) -> None:
        """Put a dead letter back on its queue. Raises NotFound."""
        ...


# ------------------------------------------------------------------------------------- Store


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`Store.apply` changed: the tasks it moved, and dependents it released."""

    tasks: list[Task]
    released: list[Task]


TASK_SORTS = ("id", "capability", "status", "attempt", "agent_id", "updated_at")
"""The columns :meth:`Store.list_tasks` can sort by (a control centre sorting a list of tasks
too long to read whole)."""


class Store(Protocol):
    """The truth: workflows, tasks, their event history and operators' commands.

    Every write is a transaction: it happens whole or not at all.
    """

    async def migrate(self) -> None:
        """Create or upgrade the schema to the newest version (safe to call on every start,
        and from two processes at once)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def create_workflow(self, workflow: Workflow, tasks: Sequence[Task]) -> None:
        """Write a workflow and all its tasks (and a ``created`` event per task) in one
        transaction. Raises ConflictError if the id exists."""
        ...

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """One workflow. Raises NotFound."""
        ...

    async def list_workflows(
        self,
        *,
        status: Collection[WorkflowStatus] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Workflow]:
        """Workflows, newest first."""
        ...

    async def count_workflows(self) -> dict[WorkflowStatus, int]:
        """How many workflows are in each status (absent: none), counted by the Store."""
        ...

    async def set_workflow_status(
        self,
        workflow_id: str,
        expect: Collection[WorkflowStatus],
        to: WorkflowStatus,
        at: float,
        *,
        fence: int | None = None,
        reason: str | None = None,
    ) -> bool:
        """Compare-and-set a workflow's status; True if it changed. Sets ``finished_at`` when
        ``to`` is terminal and clears it otherwise; sets ``hold_reason`` to ``reason`` (why the
        scheduler paused it; None clears it). Raises NotFound. ``fence`` as in
        :meth:`apply`: refused with LeaseLost, nothing written, once a newer token wrote."""
        ...

    async def set_workflow_budget(
        self, workflow_id: str, budget: Budget | None, at: float, *, fence: int | None = None
    ) -> None:
        """Replace a workflow's budget (None: no budget of its own), in any status. Raises
        NotFound, and LeaseLost as :meth:`apply` does for ``fence``."""
        ...

    async def usage_totals(
        self,
        group_by: UsageGroup,
        *,
        since: float | None = None,
        workflow_ids: Collection[str] | None = None,
        label: str | None = None,
    ) -> list[UsageTotal]:
        """What attempts spent, summed by the Store over the usage rows :meth:`apply` wrote,
        one total per ``workflow``, ``task``, ``capability`` or ``model`` (``group_by``),
        sorted by key (the None key of attempts whose model was not said comes last). Only
        rows written at or after ``since``, of the workflows in ``workflow_ids``, of workflows
        whose labels hold ``label`` (``name=value``), when given. Groups with no row are absent.
        Costs as :class:`core.usage.UsageTotal` says: the known ones summed, the unknown ones
        counted. Raises ValueError for another ``group_by`` or a ``label`` without ``=``."""
        ...

    async def get_task(self, task_id: str) -> Task:
        """One task. Raises NotFound."""
        ...

    async def list_tasks(
        self,
        *,
        workflow_id: str | None = None,
        status: Collection[TaskStatus] | None = None,
        capability: str | None = None,
        agent_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str | None = None,
        descending: bool = False,
    ) -> list[Task]:
        """Tasks matching every filter given, oldest first (by creation, then key); with
        ``sort`` (one of :data:`TASK_SORTS`) by that column first, missing values last,
        ``descending`` reversing it. Raises ValueError for another ``sort``."""
        ...

    async def total_tasks(
        self,
        *,
        workflow_id: str | None = None,
        status: Collection[TaskStatus] | None = None,
        capability: str | None = None,
        agent_id: str | None = None,
    ) -> int:
        """How many tasks match every filter given: the length of the list :meth:`list_tasks`
        pages through (a screen shows a window of it and says how long it is)."""
        ...

    async def count_by_capability(
        self, status: Collection[TaskStatus]
    ) -> dict[str, dict[TaskStatus, int]]:
        """For each capability with tasks in one of ``status``, how many are in each (statuses
        with none are absent): queue depths, counted by the Store rather than read row by
        row."""
        ...

    async def count_tasks(self, workflow_ids: Collection[str]) -> dict[str, dict[TaskStatus, int]]:
        """For each workflow, how many of its tasks are in each status (absent: zero)."""
        ...

    async def with_open_tasks(self, workflow_ids: Collection[str]) -> set[str]:
        """Those of ``workflow_ids`` with a task not yet final: the ones that cannot have
        finished. Its cost does not grow with a workflow's finished tasks (the scheduler asks
        after every round that finished tasks)."""
        ...

    async def ready_tasks(self, *, limit: int, hold: Collection[str] = ()) -> list[Task]:
        """Up to ``limit`` ``ready`` tasks of ``running`` workflows whose capability is not in
        ``hold``, oldest first."""
        ...

    async def due_tasks(self, now: float, *, limit: int = 500) -> list[Task]:
        """Tasks whose time has come: ``retrying`` with ``not_before <= now``, and
        ``dispatched``/``running`` with ``deadline <= now``."""
        ...

    async def outputs(self, task_ids: Collection[str]) -> dict[str, JSON]:
        """The outputs of the given tasks (those that exist)."""
        ...

    async def apply(
        self,
        changes: Sequence[Change],
        at: float,
        *,
        fence: int | None = None,
        then: Callable[[Applied], Awaitable[Sequence[Change]]] | None = None,
    ) -> Applied:
        """Apply compare-and-set transitions in one transaction.

        Each change is applied only if the task's status is in ``change.expect`` and (when
        given) its attempt equals ``change.attempt``; the others are skipped, not errors.
        Each applied change appends a TaskEvent (kind ``change.event`` or the new status) and,
        when it carries ``usage``, one usage row for its task and attempt (at most one per
        attempt: a second is ignored), which :meth:`usage_totals` sums.
        When a change makes a task ``succeeded``, in the same transaction each dependent's
        ``pending`` drops by one and every ``blocked`` dependent reaching zero becomes
        ``ready`` (with its own event); those are returned in ``released``.
        With ``fence``, the write is refused with LeaseLost if a newer fencing token has
        written before (a deposed leader cannot write).

        ``then``, when given, is awaited once ``changes`` are applied, with what they changed;
        the changes it returns are applied after them (they see what ``changes`` did: a
        released dependent may be dispatched) and the answer holds both (``tasks``: the
        first's, then the second's; ``released``: the first's). ``changes`` are committed
        before ``then`` is awaited (``then`` raising leaves them written), and what ``then``
        returns is written in a second transaction: whatever ``then`` publishes can rely on
        ``changes`` being durable.
        """
        ...

    async def task_events(self, task_id: str) -> list[TaskEvent]:
        """A task's history, oldest first."""
        ...

    async def events_since(
        self, seq: int, *, workflow_id: str | None = None, limit: int = 1000
    ) -> list[TaskEvent]:
        """Events with ``seq`` greater than the one given, in order (for watchers that poll)."""
        ...

    async def add_command(self, command: Command) -> None:
        """Queue an operator's command for the scheduler."""
        ...

    async def pending_commands(self, limit: int = 100) -> list[Command]:
        """Commands not yet carried out, oldest first."""
        ...

    async def finish_command(self, command: Command) -> None:
        """Record a command's outcome (status, result, finished_at). Raises NotFound."""
        ...

    async def get_command(self, command_id: str) -> Command:
        """One command. Raises NotFound."""
        ...

    async def list_commands(self, limit: int = 100, offset: int = 0) -> list[Command]:
        """The action log, newest first: ``limit`` commands after the first ``offset``."""
        ...

    async def count_commands(self) -> int:
        """How many commands the action log holds."""
        ...

    # Snapshots (core/snapshot.py) read everything page by page and load it back whole.

    async def dump_workflows(self, *, after: str = "", limit: int = 1000) -> list[Workflow]:
        """Up to ``limit`` workflows whose id sorts after ``after``, by id. Passing the last id
        of each page as the next ``after`` visits every workflow once."""
        ...

    async def dump_tasks(self, *, after: str = "", limit: int = 1000) -> list[Task]:
        """Up to ``limit`` tasks whose id sorts after ``after``, by id (so the tasks of one
        workflow, ``<workflow>/<key>``, come together)."""
        ...

    async def dump_commands(self, *, after: str = "", limit: int = 1000) -> list[Command]:
        """Up to ``limit`` commands whose id sorts after ``after``, by id."""
        ...

    async def dump_usage(
        self, *, after: tuple[str, int] = ("", 0), limit: int = 1000
    ) -> list[AttemptUsage]:
        """Up to ``limit`` usage records whose (task id, attempt) sorts after ``after``, by
        task id then attempt. Passing the last one's of each page visits every record once."""
        ...

    async def load(
        self,
        *,
        workflows: Sequence[Workflow] = (),
        tasks: Sequence[Task] = (),
        events: Sequence[TaskEvent] = (),
        commands: Sequence[Command] = (),
        usage: Sequence[AttemptUsage] = (),
    ) -> None:
        """Write records exactly as given, in one transaction: statuses, attempts, outputs,
        each event's ``seq``, each command's outcome and each attempt's usage are kept;
        dependency links are rebuilt from the tasks' ``needs``; events written later get a
        ``seq`` above every loaded one.

        A task's workflow, and the tasks it needs, must be loaded before it or in the same
        call. Raises ConflictError, writing nothing, if a workflow, task, event seq, command
        id or usage record (task and attempt) already exists. Meant for restoring a snapshot
        into an empty store.
        """
        ...


class StoreWatch(Protocol):
    """Optional ability of a Store: tell waiters that new work may be there (PostgreSQL
    LISTEN/NOTIFY). Without it the scheduler polls every ``poll_interval``."""

    def changes(self) -> AsyncIterator[str]:
        """Yields a channel name (``workflows``, ``commands``) each time another process
        submitted a workflow or queued a command. Ends when the store closes."""
        ...


# ---------------------------------------------------------------------------------- Registry


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a named lease, with its fencing token (larger = newer) and expiry."""

    name: str
    holder: str
    token: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """A circuit breaker's shared state as stored in the registry; ``version`` guards CAS."""

    name: str
    state: str
    data: Mapping[str, JSON]
    version: int


class Registry(Protocol):
    """Live, rebuildable facts: agents and their heartbeats, breakers, the leader lease.

    Records expire when not refreshed; losing everything here costs a few seconds of
    re-registration, never work.
    """

    async def start(self) -> None:
        """Connect. Raises BackendUnavailable."""
        ...

    async def close(self) -> None:
        """Disconnect."""
        ...

    async def register(self, agent: AgentRecord, ttl: float) -> None:
        """Publish an agent record that lives ``ttl`` seconds unless refreshed."""
        ...

    async def heartbeat(
        self,
        agent_id: str,
        ttl: float,
        *,
        in_flight: int,
        state: AgentState,
        succeeded: int = 0,
        failed: int = 0,
    ) -> bool:
        """Refresh an agent's record; False if it had expired or was never registered (the
        agent then registers again)."""
        ...

    async def deregister(self, agent_id: str) -> None:
        """Remove an agent's record (no error if absent)."""
        ...

    async def agents(self, capability: str | None = None) -> list[AgentRecord]:
        """Agents whose record has not expired, optionally only those serving ``capability``."""
        ...

    async def get_breaker(self, name: str) -> BreakerRecord | None:
        """A breaker's shared state, or None if it has none yet."""
        ...

    async def put_breaker(self, record: BreakerRecord, expected_version: int | None) -> bool:
        """Write a breaker's state if its stored version equals ``expected_version`` (None: must
        not exist yet); the stored version becomes ``record.version``. True if written."""
        ...

    async def breakers(self) -> list[BreakerRecord]:
        """Every breaker with shared state."""
        ...

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease if it is free or expired (a new, larger token), or extend it if
        ``holder`` already holds it (same token). None if someone else holds it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it."""
        ...

    async def get_lease(self, name: str) -> Lease | None:
        """The current unexpired holder, if any."""
        ...


# --------------------------------------------------------------------------------- BlobStore


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """An object's key, size in bytes and last-modified time."""

    key: str
    size: int
    modified: float


@runtime_checkable
class BlobStore(Protocol):
    """Objects by key: snapshots and large task outputs. Writes are whole: a reader sees the
    old object or the new one, never part of one."""

    async def start(self) -> None:
        """Connect / create the root. Raises BackendUnavailable."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any object there."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes. Raises NotFound."""
        ...

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        """Objects whose key starts with ``prefix``, sorted by key."""
        ...

    async def delete(self, key: str) -> None:
        """Remove an object (no error if absent)."""
        ...
