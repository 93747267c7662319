"""``SqlStore``: the whole Store port, written once, over a few engine primitives.

The reads come from :class:`backends.sql.reads.SqlReads`. The writes here check and encode
everything first (a bad argument raises before the engine is touched, and nothing is
written), then hand one engine primitive the prepared rows to write in one transaction:

========================  =====================================================
``_insert_workflow``      a :class:`~backends.sql.writes.NewWorkflow`
``_set_status``           one workflow compare-and-set, after the fence check
``_set_budget``           one workflow's budget, after the fence check
``_apply``                validated :class:`~backends.sql.decide.Plan` s
``_insert_command``       a command row
``_finish``               a command's outcome
``_load``                 a :class:`~backends.sql.writes.Load`
``close``                 end the connections (``async with`` calls it on exit)
========================  =====================================================
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable, Collection, Sequence
from types import TracebackType
from typing import Any, Self

from agentdeck.backends.sql.codec import budget_or_null, command_to_row
from agentdeck.backends.sql.decide import Plan, plan
from agentdeck.backends.sql.reads import SqlReads
from agentdeck.backends.sql.writes import (
    Load,
    NewWorkflow,
    StatusChange,
    load_rows,
    new_workflow,
    status_change,
)
from agentdeck.core.models import (
    AttemptUsage,
    Budget,
    Change,
    Command,
    CommandStatus,
    Task,
    TaskEvent,
    Workflow,
)
from agentdeck.core.ports import Applied
from agentdeck.core.states import WorkflowStatus

__all__ = ["SqlStore", "Then", "merged"]

Then = Callable[[Applied], Awaitable[Sequence[Change]]] | None
"""``Store.apply``'s ``then``: more changes, made once the first ones are applied."""


def merged(first: Applied, second: Applied) -> Applied:
    """The answer of an ``apply`` with ``then``: both parts' tasks, the first's releases."""
    return Applied(tasks=first.tasks + second.tasks, released=first.released + second.released)


class SqlStore(SqlReads):
    """The Store port's reads and writes; an engine adds its primitives (see the module)."""

    # ------------------------------------------------------------- engine primitives

    @abstractmethod
    async def _insert_workflow(self, new: NewWorkflow) -> None:
        """Write a new workflow's rows. Raises ConflictError when it or a task exists."""

    @abstractmethod
    async def _set_status(self, change: StatusChange, fence: int | None) -> bool:
        """Check ``fence``, then make ``change`` if the workflow's status is one of its
        sources; True if it moved. Raises LeaseLost and NotFound."""

    @abstractmethod
    async def _set_budget(
        self, workflow_id: str, budget: str | None, at: float, fence: int | None
    ) -> None:
        """Check ``fence``, then set the workflow's budget (JSON text or NULL). Raises
        LeaseLost and NotFound."""

    @abstractmethod
    async def _apply(self, plans: list[Plan], at: float, fence: int | None, then: Then) -> Applied:
        """Check ``fence``, then apply ``plans`` in order, then what ``then`` returns (see
        :meth:`apply`). Raises LeaseLost."""

    @abstractmethod
    async def _insert_command(self, row: tuple[Any, ...]) -> None:
        """Write a command row. Raises ConflictError if its id exists."""

    @abstractmethod
    async def _finish(
        self, command_id: str, status: str, result: str, finished_at: float | None
    ) -> None:
        """Record a command's outcome. Raises NotFound."""

    @abstractmethod
    async def _load(self, rows: Load) -> None:
        """Write records as they are. Raises ConflictError when one exists already."""

    @abstractmethod
    async def close(self) -> None:
        """Release the engine's connections. Safe to call twice."""

    # --------------------------------------------------------------------- the port

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def create_workflow(self, workflow: Workflow, tasks: Sequence[Task]) -> None:
        """Write the workflow, its tasks, their dependencies and a ``created`` event per task
        in one transaction. Raises ConflictError if the id exists, and ValueError (nothing
        written) for tasks that do not fit the workflow (another workflow id, a duplicate key,
        an unknown need, a ``task_count`` that is not the number of tasks) or values that are
        not JSON."""
        await self._insert_workflow(new_workflow(self._dialect.tasks, workflow, tasks))

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
        """Compare-and-set a workflow's status; True if it changed. ``finished_at`` is set when
        ``to`` is terminal and cleared otherwise; ``hold_reason`` becomes ``reason``. Raises
        NotFound, InvalidTransition when a status in ``expect`` cannot go to ``to``, and
        LeaseLost (nothing written) when ``fence`` is older than a token that has written (as
        :meth:`apply`)."""
        change = status_change(workflow_id, expect, to, at, reason)
        return await self._set_status(change, fence)

    async def set_workflow_budget(
        self, workflow_id: str, budget: Budget | None, at: float, *, fence: int | None = None
    ) -> None:
        """Replace a workflow's budget. Raises NotFound, LeaseLost (nothing written) for an
        old ``fence``, and ValueError for a budget that is not JSON."""
        text = budget_or_null(budget, f"budget of workflow {workflow_id!r}")
        await self._set_budget(workflow_id, text, at, fence)

    async def apply(
        self,
        changes: Sequence[Change],
        at: float,
        *,
        fence: int | None = None,
        then: Then = None,
    ) -> Applied:
        """Apply compare-and-set transitions in one transaction (see the Protocol and
        :mod:`backends.sql.decide`).

        With ``fence`` and no changes, it only records the token, so a new leader can lock
        out the old one before its first real write. Raises LeaseLost (nothing written),
        ValueError for an unknown value name, InvalidTransition when ``expect`` holds a status
        that cannot reach ``to``: a bad change refuses its whole batch before anything is
        written. ``then``: see the Protocol; its changes are checked the same way.
        """
        if not changes and fence is None and then is None:
            return Applied(tasks=[], released=[])
        return await self._apply([plan(c) for c in changes], at, fence, then)

    async def add_command(self, command: Command) -> None:
        """Queue an operator's command. Raises ConflictError if its id exists."""
        await self._insert_command(command_to_row(command))

    async def finish_command(self, command: Command) -> None:
        """Record a command's outcome (status, result, finished_at). Raises NotFound."""
        status = CommandStatus(command.status).value
        await self._finish(command.id, status, command.result, command.finished_at)

    async def load(
        self,
        *,
        workflows: Sequence[Workflow] = (),
        tasks: Sequence[Task] = (),
        events: Sequence[TaskEvent] = (),
        commands: Sequence[Command] = (),
        usage: Sequence[AttemptUsage] = (),
    ) -> None:
        """Write records as given in one transaction (see :meth:`core.ports.Store.load`).
        Raises ConflictError, writing nothing, when any of them exists already."""
        rows = load_rows(self._dialect.tasks, workflows, tasks, events, commands, usage)
        await self._load(rows)
