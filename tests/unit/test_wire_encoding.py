"""The scheduler encodes task events (``core.events.encode_event``) and task messages
(``core.scheduler.dispatch.task_body``) without a pydantic model each: the bytes on the wire
must stay exactly what ``encode`` of the model gave."""

from __future__ import annotations

import asyncio
import math
import warnings
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.events import encode_event, task_event, task_event_body
from agentdeck.core.messages import Event, TaskMessage, decode, encode
from agentdeck.core.models import ErrorInfo, Task
from agentdeck.core.scheduler.dispatch import task_body
from agentdeck.core.scheduler.feed import EventsFeed
from agentdeck.core.states import TaskStatus

TEXT = st.text(max_size=12)  # any code point: escapes, non-ASCII, surrogates' neighbours
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**53), 2**53)


@st.composite
def tasks(draw: st.DrawFn) -> Task:
    error = draw(
        st.none()
        | st.builds(ErrorInfo, TEXT, TEXT, st.booleans(), st.none() | st.floats(allow_nan=False))
    )
    return Task(
        id=draw(TEXT),
        workflow_id=draw(TEXT),
        key=draw(TEXT),
        capability=draw(TEXT),
        status=draw(st.sampled_from(TaskStatus)),
        input=None,
        needs=(),
        pending=0,
        created_at=0.0,
        updated_at=0.0,
        attempt=draw(st.integers(0, 2**40)),
        agent_id=draw(st.none() | TEXT),
        error=error,
    )


@settings(max_examples=300, deadline=None)
@given(tasks(), FLOATS, st.none() | TEXT)
def test_a_task_event_encodes_byte_for_byte_as_the_model_did(
    task: Task, at: float, kind: str | None
) -> None:
    assert task_event_body(task, at, kind) == encode(task_event(task, at, kind))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | FLOATS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(TEXT, FLOATS, st.dictionaries(TEXT, JSON_VALUES, max_size=4))
def test_any_event_encodes_byte_for_byte_as_the_model_did(
    topic: str, at: float, data: dict[str, object]
) -> None:
    assert encode_event(topic, at, data) == encode(Event(topic=topic, at=at, data=data))


def test_an_encoded_event_decodes_as_the_event() -> None:
    body = encode_event("task", 5, {"n": math.inf, "s": "é\n"})
    assert decode(body, Event) == Event(topic="task", at=5.0, data={"n": None, "s": "é\n"})


class _Bus:
    def __init__(self, fail_after: int | None = None) -> None:
        self.bodies: list[bytes] = []
        self.fail_after = fail_after

    async def publish_event(self, body: bytes) -> None:
        if self.fail_after is not None and len(self.bodies) >= self.fail_after:
            raise BackendUnavailable("bus down")
        self.bodies.append(body)


def _task(n: int, status: TaskStatus) -> Task:
    return Task(f"t{n}", "wf", f"k{n}", "cap", status, None, (), 0, 0.0, 0.0, attempt=1)


def test_the_feed_publishes_moved_then_released_tasks_in_order() -> None:
    bus = _Bus()
    moved = [_task(1, TaskStatus.SUCCEEDED), _task(2, TaskStatus.RUNNING)]
    released = [_task(3, TaskStatus.READY)]
    feed = EventsFeed(bus)  # type: ignore[arg-type]
    asyncio.run(feed.tasks_changed(moved, released, {"t2": "redelivered"}, 7.0))
    assert bus.bodies == [
        encode(task_event(moved[0], 7.0)),
        encode(task_event(moved[1], 7.0, "redelivered")),
        encode(task_event(released[0], 7.0, "ready")),
    ]


def test_the_feed_drops_the_rest_of_a_batch_after_a_failed_publish() -> None:
    bus = _Bus(fail_after=1)
    moved = [_task(n, TaskStatus.SUCCEEDED) for n in range(3)]
    asyncio.run(EventsFeed(bus).tasks_changed(moved, [], {}, 7.0))  # type: ignore[arg-type]
    assert bus.bodies == [encode(task_event(moved[0], 7.0))]


@settings(max_examples=300, deadline=None)
@given(
    tasks(),
    JSON_VALUES,
    st.dictionaries(TEXT, JSON_VALUES, max_size=3),
    FLOATS,
    FLOATS,
)
def test_a_task_message_encodes_byte_for_byte_as_the_model_did(
    task: Task, input: object, upstream: dict[str, object], timeout: float, now: float
) -> None:
    """As ``model_construct`` + ``encode`` gave it (an int where a float is due too, which
    the model wrote as a float, with a warning)."""
    task = replace(task, input=input, timeout=timeout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the model warns of an int where a float is due
        expected = encode(
            TaskMessage.model_construct(
                task_id=task.id,
                workflow_id=task.workflow_id,
                key=task.key,
                capability=task.capability,
                attempt=task.attempt,
                input=task.input,
                upstream=upstream,
                timeout=task.timeout,
                dispatched_at=now,
            )
        )
    assert task_body(task, upstream, now) == expected


def test_a_task_message_decodes_as_the_task_message() -> None:
    task = replace(_task(1, TaskStatus.READY), input={"x": [1, "é"]}, needs=("k0",), timeout=2.5)
    body = task_body(task, {"k0": {"out": 1}}, 9.0)
    assert decode(body, TaskMessage) == TaskMessage(
        task_id="t1",
        workflow_id="wf",
        key="k1",
        capability="cap",
        attempt=1,
        input={"x": [1, "é"]},
        upstream={"k0": {"out": 1}},
        timeout=2.5,
        dispatched_at=9.0,
    )
