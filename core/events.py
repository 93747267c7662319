"""Turning store changes into events for watchers (UI, ``--watch``, metrics)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic_core import to_json

from agentdeck.core.messages import VERSION, Event
from agentdeck.core.models import JSON, Task, Usage, Workflow


def task_event(task: Task, at: float, kind: str | None = None) -> Event:
    """The event announcing a task's new state."""
    return Event(topic="task", at=at, data=task_event_data(task, kind))


def task_event_data(task: Task, kind: str | None = None) -> dict[str, JSON]:
    """The ``data`` of :func:`task_event`."""
    status = task.status.value
    return {
        "task_id": task.id,
        "workflow_id": task.workflow_id,
        "key": task.key,
        "capability": task.capability,
        "status": status,
        "kind": kind or status,
        "attempt": task.attempt,
        "agent_id": task.agent_id,
        "error": task.error.to_dict() if task.error else None,
    }


def encode_event(topic: str, at: float, data: Mapping[str, JSON]) -> bytes:
    """``core.messages.encode(Event(topic=topic, at=at, data=data))``, byte for byte, without
    building the model: the scheduler announces a few events per task, and validating a
    pydantic model for each cost it more than the encoding (issue 16).

    The same serializer (pydantic-core's) writes the same keys in the same order; ``at`` is
    made a float as the model's field would, and infinities and NaN become ``null`` as the
    model's default ``ser_json_inf_nan`` has them. ``data`` must have string keys and JSON
    values (as :class:`Event` requires); anything pydantic cannot serialize raises
    ``pydantic_core.PydanticSerializationError``, as ``encode`` would."""
    event = {"v": VERSION, "type": "event", "topic": topic, "at": float(at), "data": data}
    return to_json(event, inf_nan_mode="null")


def task_event_body(task: Task, at: float, kind: str | None = None) -> bytes:
    """:func:`task_event` encoded (:func:`encode_event`)."""
    return encode_event("task", at, task_event_data(task, kind))


def workflow_event(workflow: Workflow, at: float) -> Event:
    """The event announcing a workflow's new state; ``reason`` says why the scheduler holds
    it (e.g. its budget is spent), None otherwise."""
    data: dict[str, JSON] = {
        "workflow_id": workflow.id,
        "name": workflow.name,
        "status": workflow.status.value,
        "reason": workflow.hold_reason,
    }
    return Event(topic="workflow", at=at, data=data)


def task_events(tasks: Iterable[Task], at: float) -> list[Event]:
    """One event per task."""
    return [task_event(t, at) for t in tasks]


def usage_event(used: Sequence[tuple[Task, Usage]], now: float) -> Event:
    """One event for the usage a scheduler round wrote (``used``: attempts and what each
    spent): how many attempts, their input and output tokens, the known cost summed, and how
    many had no known cost. Watchers chart spending from it (the Store keeps the records)."""
    costs = [u.cost_usd for _, u in used]
    return Event(
        topic="usage",
        at=now,
        data={
            "attempts": len(used),
            "input_tokens": sum(u.input_tokens for _, u in used),
            "output_tokens": sum(u.output_tokens for _, u in used),
            "cost_usd": round(sum(c for c in costs if c is not None), 6),
            "unpriced": sum(1 for c in costs if c is None),
        },
    )
