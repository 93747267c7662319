"""The dispatch's copy of a task for its next attempt is ``replace(t, attempt=t.attempt + 1)``."""

from __future__ import annotations

from dataclasses import fields, replace

from agentdeck.core.models import Task
from agentdeck.core.scheduler.dispatch import next_attempt


def test_next_attempt_is_replace_with_the_attempt_raised_field_by_field() -> None:
    # A distinct object in every field: a field copied from the wrong place, or left to its
    # default, shows (Task checks no types, so any value will do).
    values: dict[str, object] = {f.name: object() for f in fields(Task)}
    values["attempt"] = 7
    task = Task(**values)  # type: ignore[arg-type]
    copy, expected = next_attempt(task), replace(task, attempt=8)
    for f in fields(Task):
        assert getattr(copy, f.name) is getattr(expected, f.name), f.name
    assert copy == expected
    assert task.attempt == 7  # the task itself is not changed
