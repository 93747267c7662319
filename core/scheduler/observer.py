"""The one interface through which the scheduler tells the rest of the node what happened.

Every moment the scheduler passes is a method of :class:`SchedulerObserver`, a no-op by default:
an observer overrides the moments it cares about. The scheduler holds its observers in one
:class:`Observers` list and calls them in order; nothing in the scheduler asks which observers
there are. The events feed (:class:`~agentdeck.core.scheduler.feed.EventsFeed`), Prometheus
metrics (:class:`~agentdeck.core.metrics.MetricsObserver`) and traces
(:class:`~agentdeck.core.tracing.TracingObserver`) are observers. dramatiq's ``Middleware`` is the
model.

Guarantees: a moment is announced after the Store holds it (a change written, a workflow
finished, a command's outcome recorded), never for a write a lost compare-and-set skipped. An
observer's exception propagates like the Store's: an AgentdeckError fails the round (the next
one goes on), anything else stops the scheduler. So an observer that talks to a backend catches
that backend's errors itself, as the events feed does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from agentdeck.core.models import Command, Task, Usage, Workflow


class SchedulerObserver:
    """Base class of scheduler observers: every hook does nothing until overridden."""

    # ------------------------------------------------------------------- leadership

    async def lease_acquired(self, token: int) -> None:
        """This node became the leader, holding the lease with fencing ``token``."""

    async def lease_renewed(self) -> None:
        """The leader's lease was acquired or renewed (each renewal, the first one too)."""

    async def lease_lost(self) -> None:
        """This node stopped leading: its lease was taken, it lapsed, or it was given up."""

    async def round_finished(self, busy: bool) -> None:
        """The leader finished a round; ``busy``: it did something (so goes again at once)."""

    # ------------------------------------------------------------------------ tasks

    def message_headers(self, task: Task, now: float) -> Mapping[str, str]:
        """Headers for the message about to carry ``task``'s current attempt (dispatch or a
        redelivery), e.g. its trace context. Synchronous: it runs once per message while a batch
        is built, and must not do I/O."""
        return {}

    async def tasks_dispatched(self, ready: Sequence[Task], now: float) -> None:
        """``ready`` tasks (as they were while ready) were published and recorded
        ``dispatched`` at ``now``."""

    async def tasks_changed(
        self,
        tasks: Sequence[Task],
        released: Sequence[Task],
        kinds: Mapping[str, str | None],
        now: float,
    ) -> None:
        """One Store write moved ``tasks`` (in their new state) and released ``released``
        (dependents now ``ready``). ``kinds`` maps a task id to the event name its change gave
        (``retried``, ``redelivered``...; None: the new status names it). Attempts start
        (``running``), end (``succeeded``, ``failed``, ``retrying``), tasks are skipped or
        cancelled: every task transition the scheduler makes passes here."""

    async def usage_recorded(self, used: Sequence[tuple[Task, Usage]], now: float) -> None:
        """The Store wrote the usage of the attempts that ``used`` pairs (each task as the
        change that ended its attempt left it, with what that attempt spent), in the same
        write as their results. Called once per write, after :meth:`tasks_changed`."""

    # -------------------------------------------------------------------- workflows

    async def workflow_changed(self, workflow: Workflow, now: float) -> None:
        """An operator paused or resumed ``workflow``, or the scheduler paused it because its
        budget is spent (in its new state; ``hold_reason`` says why)."""

    async def workflow_finished(self, workflow: Workflow, now: float) -> None:
        """``workflow`` reached its final state (succeeded, failed or cancelled)."""

    # --------------------------------------------------------------------- commands

    async def command_finished(self, command: Command) -> None:
        """An operator command was carried out or failed; ``command`` holds its outcome."""


class Observers(SchedulerObserver):
    """The scheduler's observers, called in the order they were added."""

    def __init__(self, observers: Iterable[SchedulerObserver] = ()) -> None:
        self._observers = list(observers)

    def __repr__(self) -> str:
        return f"<Observers {[type(o).__name__ for o in self._observers]}>"

    def __iter__(self) -> Iterator[SchedulerObserver]:
        return iter(self._observers)

    def add(self, observer: SchedulerObserver) -> None:
        """Call ``observer`` too, after the ones added before it."""
        self._observers.append(observer)

    async def lease_acquired(self, token: int) -> None:
        for o in self._observers:
            await o.lease_acquired(token)

    async def lease_renewed(self) -> None:
        for o in self._observers:
            await o.lease_renewed()

    async def lease_lost(self) -> None:
        for o in self._observers:
            await o.lease_lost()

    async def round_finished(self, busy: bool) -> None:
        for o in self._observers:
            await o.round_finished(busy)

    def message_headers(self, task: Task, now: float) -> Mapping[str, str]:
        headers: dict[str, str] = {}
        for o in self._observers:
            headers.update(o.message_headers(task, now))
        return headers

    async def tasks_dispatched(self, ready: Sequence[Task], now: float) -> None:
        for o in self._observers:
            await o.tasks_dispatched(ready, now)

    async def tasks_changed(
        self,
        tasks: Sequence[Task],
        released: Sequence[Task],
        kinds: Mapping[str, str | None],
        now: float,
    ) -> None:
        for o in self._observers:
            await o.tasks_changed(tasks, released, kinds, now)

    async def usage_recorded(self, used: Sequence[tuple[Task, Usage]], now: float) -> None:
        for o in self._observers:
            await o.usage_recorded(used, now)

    async def workflow_changed(self, workflow: Workflow, now: float) -> None:
        for o in self._observers:
            await o.workflow_changed(workflow, now)

    async def workflow_finished(self, workflow: Workflow, now: float) -> None:
        for o in self._observers:
            await o.workflow_finished(workflow, now)

    async def command_finished(self, command: Command) -> None:
        for o in self._observers:
            await o.command_finished(command)
