"""Task and workflow state machines as data: one table of allowed transitions each.

``check_task`` / ``check_workflow`` are the only places that decide whether a change is legal;
everything that writes a status calls one of them first.
"""

from __future__ import annotations

from enum import StrEnum

from agentdeck.core.errors import InvalidTransition


class TaskStatus(StrEnum):
    """Where a task is in its life. See docs/architecture.md for the life of a task."""

    BLOCKED = "blocked"
    READY = "ready"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class WorkflowStatus(StrEnum):
    """Where a workflow is in its life."""

    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


T = TaskStatus
W = WorkflowStatus

#: Every legal task transition. Why the less obvious ones exist:
#: - dispatched/running -> dispatched: a non-durable bus lost the message (restart) and the
#:   same attempt is published again ("redelivered");
#: - dispatched -> succeeded/failed/retrying: a fast agent's result can overtake its report
#:   that it started;
#: - dispatched -> ready: the scheduler records an attempt while publishing it, and puts it
#:   back when the broker did not take the message ("unpublished");
#: - failed/cancelled/skipped -> ready/blocked: an operator retries by hand.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.BLOCKED: frozenset({T.READY, T.SKIPPED, T.CANCELLED}),
    T.READY: frozenset({T.DISPATCHED, T.CANCELLED, T.SKIPPED, T.BLOCKED}),
    T.DISPATCHED: frozenset(
        {T.RUNNING, T.DISPATCHED, T.SUCCEEDED, T.FAILED, T.RETRYING, T.CANCELLED, T.READY}
    ),
    T.RUNNING: frozenset({T.SUCCEEDED, T.FAILED, T.RETRYING, T.CANCELLED, T.DISPATCHED}),
    T.RETRYING: frozenset({T.READY, T.CANCELLED, T.SKIPPED}),
    T.SUCCEEDED: frozenset(),
    T.FAILED: frozenset({T.READY, T.BLOCKED}),
    T.CANCELLED: frozenset({T.READY, T.BLOCKED}),
    T.SKIPPED: frozenset({T.READY, T.BLOCKED, T.CANCELLED}),
}

TASK_TERMINAL: frozenset[TaskStatus] = frozenset({T.SUCCEEDED, T.FAILED, T.CANCELLED, T.SKIPPED})
#: Statuses in which an agent may hold the task's message.
TASK_IN_FLIGHT: frozenset[TaskStatus] = frozenset({T.DISPATCHED, T.RUNNING})

WORKFLOW_TRANSITIONS: dict[WorkflowStatus, frozenset[WorkflowStatus]] = {
    W.RUNNING: frozenset({W.PAUSED, W.SUCCEEDED, W.FAILED, W.CANCELLED}),
    W.PAUSED: frozenset({W.RUNNING, W.CANCELLED, W.SUCCEEDED, W.FAILED}),
    W.SUCCEEDED: frozenset(),
    # A failed or cancelled workflow runs again when an operator retries one of its tasks.
    W.FAILED: frozenset({W.RUNNING}),
    W.CANCELLED: frozenset({W.RUNNING}),
}

WORKFLOW_TERMINAL: frozenset[WorkflowStatus] = frozenset({W.SUCCEEDED, W.FAILED, W.CANCELLED})


def can_task(current: TaskStatus, target: TaskStatus) -> bool:
    """True when the table allows a task to go from ``current`` to ``target``."""
    return target in TASK_TRANSITIONS[current]


def check_task(current: TaskStatus, target: TaskStatus) -> None:
    """Raise :class:`InvalidTransition` unless the task table allows the change."""
    if not can_task(current, target):
        raise InvalidTransition("task", current.value, target.value)


def check_workflow(current: WorkflowStatus, target: WorkflowStatus) -> None:
    """Raise :class:`InvalidTransition` unless the workflow table allows the change."""
    if target not in WORKFLOW_TRANSITIONS[current]:
        raise InvalidTransition("workflow", current.value, target.value)


def task_sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """Every status from which ``target`` can be reached (for compare-and-set guards)."""
    return frozenset(s for s, targets in TASK_TRANSITIONS.items() if target in targets)
