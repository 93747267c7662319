"""The overview's queue depths between Store recounts: moved by the task events, wrong for at
most RECOUNT_SECONDS when an event cannot say where its task came from."""

from __future__ import annotations

import pytest

from agentdeck.core.states import TaskStatus as T
from agentdeck.tui.queue_counts import RECOUNT_SECONDS, QueueCounts

pytestmark = pytest.mark.tui
NOW = 1_700_000_000.0


def event(task: str, status: T, capability: str = "echo") -> dict[str, object]:
    """The data of a task event (what ``core.events.task_event`` publishes, the fields read)."""
    return {"task_id": task, "capability": capability, "status": status.value}


def counts(q: QueueCounts) -> tuple[dict[str, int], dict[str, int]]:
    """Queued and in flight per capability."""
    return dict(q.queued), dict(q.flying)


def recounted(**by_capability: dict[T, int]) -> QueueCounts:
    """Counts taken from a Store count at NOW."""
    q = QueueCounts()
    q.recount(by_capability, NOW)
    return q


def test_a_recount_sums_the_store_counts_into_queued_and_in_flight() -> None:
    """Ready and retrying are queued, dispatched and running in flight, per capability."""
    q = recounted(echo={T.READY: 3, T.RETRYING: 1, T.RUNNING: 2}, http={T.DISPATCHED: 4})
    assert counts(q) == ({"echo": 4}, {"echo": 2, "http": 4})


def test_the_scheduler_path_moves_a_task_from_queued_to_in_flight_to_gone() -> None:
    """Dispatched: one fewer queued, one more in flight; running: no change; succeeded: one
    fewer in flight (each status's usual source is the one the task left)."""
    q = recounted(echo={T.READY: 2})
    q.on_task(event("w/a", T.DISPATCHED))
    assert counts(q) == ({"echo": 1}, {"echo": 1})
    q.on_task(event("w/a", T.RUNNING))
    assert counts(q) == ({"echo": 1}, {"echo": 1})
    q.on_task(event("w/a", T.SUCCEEDED))
    assert counts(q) == ({"echo": 1}, {})
    q.on_task(event("w/b", T.READY))  # released by its dependency: from blocked
    assert counts(q) == ({"echo": 2}, {})


def test_a_task_seen_since_the_recount_leaves_the_status_its_last_event_named() -> None:
    """A task that went retrying and then ready stays queued (ready's usual source, blocked,
    would have counted it twice); a repeated event changes nothing."""
    q = recounted(chaos={T.RUNNING: 1})
    q.on_task(event("w/t", T.RETRYING, "chaos"))
    assert counts(q) == ({"chaos": 1}, {})
    q.on_task(event("w/t", T.READY, "chaos"))
    q.on_task(event("w/t", T.READY, "chaos"))
    assert counts(q) == ({"chaos": 1}, {})


def test_an_unusual_source_is_wrong_until_the_next_recount_at_most_recount_seconds_on() -> None:
    """A running task dispatched again, not seen since the recount, is taken as coming from
    ready: queued is one short and in flight one over, until the Store counts again, which is
    due RECOUNT_SECONDS after the last count and puts it right."""
    q = recounted(echo={T.READY: 1, T.RUNNING: 1})
    q.on_task(event("w/lost", T.DISPATCHED))
    assert counts(q) == ({}, {"echo": 2})  # (truly: 1 queued, 1 in flight)
    assert not q.due(NOW + RECOUNT_SECONDS - 0.1)
    assert q.due(NOW + RECOUNT_SECONDS)
    q.recount({"echo": {T.READY: 1, T.DISPATCHED: 1}}, NOW + RECOUNT_SECONDS)
    assert counts(q) == ({"echo": 1}, {"echo": 1})


def test_a_count_never_goes_below_zero() -> None:
    """An event the recount already counted cannot take a capability below none."""
    q = recounted(echo={T.RUNNING: 1})
    q.on_task(event("w/x", T.DISPATCHED))
    assert counts(q) == ({}, {"echo": 2})
    assert "echo" not in q.queued


def test_due_before_the_first_count_after_forget_and_when_the_clock_goes_back() -> None:
    """Nothing counted yet, told to forget, or a clock earlier than the last count: count."""
    q = QueueCounts()
    assert q.due(NOW)
    q.on_task(event("w/a", T.DISPATCHED))  # (nothing to move before a first count)
    assert counts(q) == ({}, {})
    q.recount({}, NOW)
    assert not q.due(NOW + 1)
    assert q.due(NOW - 1)
    q.forget()
    assert q.due(NOW + 1)


def test_events_that_cannot_be_read_are_left_out() -> None:
    """No task id, no capability or an unknown status: nothing moves."""
    q = recounted(echo={T.READY: 1})
    q.on_task({"capability": "echo", "status": "dispatched"})
    q.on_task({"task_id": "w/a", "status": "dispatched"})
    q.on_task({"task_id": "w/a", "capability": "echo", "status": "exploded"})
    assert counts(q) == ({"echo": 1}, {})
    assert q.moves == 0
