"""Argument checks both SQL stores make before they touch their database."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from agentdeck.core.models import Task, Workflow
from agentdeck.core.ports import TASK_SORTS
from agentdeck.core.states import WORKFLOW_TERMINAL, WorkflowStatus, check_workflow


def check_page(limit: int, offset: int = 0) -> None:
    """Raise ValueError for a negative limit or offset."""
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be 0 or more, got {offset}")


def task_order(sort: str | None, descending: bool) -> str:
    """The ORDER BY of a task list (ties and no ``sort``: creation order). Raises ValueError
    for a ``sort`` not in :data:`core.ports.TASK_SORTS` (it goes into the SQL)."""
    if sort is None:
        return "created_at, key, id"
    if sort not in TASK_SORTS:
        raise ValueError(f"cannot sort tasks by {sort!r}; use one of {', '.join(TASK_SORTS)}")
    return f"{sort} {'DESC' if descending else 'ASC'} NULLS LAST, created_at, key, id"


def check_tasks(workflow: Workflow, tasks: Sequence[Task]) -> dict[str, str]:
    """Check that ``tasks`` fit ``workflow``; returns task id by key. Raises ValueError."""
    if workflow.task_count != len(tasks):
        raise ValueError(
            f"workflow {workflow.id!r} says task_count={workflow.task_count} "
            f"but {len(tasks)} task(s) were given"
        )
    ids: dict[str, str] = {}
    for t in tasks:
        if t.workflow_id != workflow.id:
            raise ValueError(
                f"task {t.id!r} belongs to workflow {t.workflow_id!r}, not {workflow.id!r}"
            )
        if t.key in ids:
            raise ValueError(f"workflow {workflow.id!r} has two tasks with key {t.key!r}")
        ids[t.key] = t.id
    for t in tasks:
        unknown = [need for need in t.needs if need not in ids]
        if unknown:
            raise ValueError(
                f"task {t.id!r} needs unknown task key(s) {', '.join(map(repr, unknown))}"
            )
    return ids


def workflow_change(
    expect: Collection[WorkflowStatus], to: WorkflowStatus, at: float
) -> tuple[WorkflowStatus, list[WorkflowStatus], float | None]:
    """For ``set_workflow_status``: the target, the sorted sources and the ``finished_at`` to
    write. Raises InvalidTransition when a source cannot go to the target."""
    target = WorkflowStatus(to)
    sources = sorted(WorkflowStatus(s) for s in expect)
    for source in sources:
        check_workflow(source, target)
    return target, sources, at if target in WORKFLOW_TERMINAL else None
