"""The rows a SQL store's writes store, built (and so checked and encoded) before the engine
is touched: a value that is not JSON, or tasks that do not fit their workflow, fail with
ValueError and nothing is written.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from agentdeck.backends._checks import check_tasks, workflow_change
from agentdeck.backends.sql.codec import (
    TASK_COLUMNS,
    TaskCodec,
    command_to_row,
    event_to_row,
    usage_to_row,
    workflow_to_row,
)
from agentdeck.backends.sql.decide import EventRow
from agentdeck.core.models import AttemptUsage, Command, Task, TaskEvent, Workflow
from agentdeck.core.states import WorkflowStatus

__all__ = ["Load", "NewWorkflow", "StatusChange", "load_rows", "new_workflow", "status_change"]

_STATUS = TASK_COLUMNS.index("status")

Dep = tuple[str, str]
"""A ``task_deps`` row: (the id of the task waited for, the id of the task waiting)."""


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """What ``create_workflow`` writes, in :mod:`backends.sql.codec` column orders."""

    workflow: tuple[Any, ...]
    tasks: list[tuple[Any, ...]]
    deps: list[Dep]
    """Each dependency once, even when a task lists a need twice."""
    events: list[EventRow]
    """A ``created`` event per task, in the order of the tasks."""


def new_workflow(codec: TaskCodec, workflow: Workflow, tasks: Sequence[Task]) -> NewWorkflow:
    """The rows of a new workflow. Raises ValueError for tasks that do not fit it (another
    workflow id, a duplicate key, an unknown need, a ``task_count`` that is not the number of
    tasks) or a value that is not JSON."""
    ids = check_tasks(workflow, tasks)
    task_rows = [codec.to_row(t) for t in tasks]
    return NewWorkflow(
        workflow=workflow_to_row(workflow),
        tasks=task_rows,
        deps=[(ids[need], t.id) for t in tasks for need in dict.fromkeys(t.needs)],
        events=[
            (
                t.id,
                t.workflow_id,
                t.created_at,
                "created",
                t.attempt,
                None,
                row[_STATUS],
                t.agent_id,
                "{}",
            )
            for t, row in zip(tasks, task_rows, strict=True)
        ],
    )


@dataclass(frozen=True, slots=True)
class Load:
    """What ``load`` writes, in :mod:`backends.sql.codec` column orders (events with seq)."""

    workflows: list[tuple[Any, ...]]
    tasks: list[tuple[Any, ...]]
    deps: list[Dep]
    events: list[tuple[Any, ...]]
    commands: list[tuple[Any, ...]]
    usage: list[tuple[Any, ...]]


def load_rows(
    codec: TaskCodec,
    workflows: Sequence[Workflow],
    tasks: Sequence[Task],
    events: Sequence[TaskEvent],
    commands: Sequence[Command],
    usage: Sequence[AttemptUsage] = (),
) -> Load:
    """The rows of records loaded as they are (:meth:`core.ports.Store.load`). A task's
    needs become dependencies on the tasks with those keys in its workflow. Raises
    ValueError for a value that is not JSON."""
    return Load(
        workflows=[workflow_to_row(w) for w in workflows],
        tasks=[codec.to_row(t) for t in tasks],
        deps=[(f"{t.workflow_id}/{n}", t.id) for t in tasks for n in dict.fromkeys(t.needs)],
        events=[event_to_row(e) for e in events],
        commands=[command_to_row(c) for c in commands],
        usage=[usage_to_row(u) for u in usage],
    )


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A workflow compare-and-set for ``set_workflow_status``, as stored strings."""

    workflow_id: str
    sources: list[str]
    """The statuses it may move from (sorted)."""
    target: str
    at: float
    finished_at: float | None
    """``at`` when the target is terminal, else None (a resumed workflow is not finished)."""
    reason: str | None = None
    """The workflow's ``hold_reason`` from now on (None clears it)."""


def status_change(
    workflow_id: str,
    expect: Collection[WorkflowStatus],
    to: WorkflowStatus,
    at: float,
    reason: str | None = None,
) -> StatusChange:
    """The compare-and-set of a workflow status. Raises ValueError for a status that is not
    one or a reason that is not a string, InvalidTransition when a status in ``expect``
    cannot go to ``to``."""
    target, sources, finished_at = workflow_change(expect, to, at)
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"a workflow's hold reason must be a string, got {reason!r}")
    return StatusChange(
        workflow_id, [s.value for s in sources], target.value, at, finished_at, reason
    )
