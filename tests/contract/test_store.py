"""The Store contract: every Store backend must pass every test here.

Tests speak only to the :class:`core.ports.Store` Protocol; the backends come from
``tests/contract/backends.py``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConflictError, InvalidTransition, LeaseLost, NotFound
from agentdeck.core.models import Change, Command, CommandStatus, ErrorInfo, Task, Workflow, task_id
from agentdeck.core.ports import Applied, Store
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W
from tests.contract.backends import STORE_BACKENDS, StoreBackend

pytestmark = pytest.mark.contract

IN_FLIGHT = frozenset({T.DISPATCHED, T.RUNNING})


@pytest.fixture(params=sorted(STORE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> StoreBackend:
    """Each Store backend in turn, by id."""
    return STORE_BACKENDS[request.param]


@pytest.fixture
async def store(backend: StoreBackend, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    """A migrated, empty store."""
    async with backend.open(tmp_path, clock) as opened:
        yield opened


# ------------------------------------------------------------------------------- helpers


def build(
    clock: FakeClock,
    workflow_id: str,
    graph: Mapping[str, Sequence[str]],
    *,
    capabilities: Mapping[str, str] | None = None,
) -> tuple[Workflow, list[Task]]:
    """A running workflow whose tasks follow ``graph`` (key -> keys it needs), as submit makes
    them: ready without needs, else blocked with a pending count."""
    now = clock.now()
    tasks = [
        Task(
            id=task_id(workflow_id, key),
            workflow_id=workflow_id,
            key=key,
            capability=(capabilities or {}).get(key, "echo"),
            status=T.BLOCKED if needs else T.READY,
            input={"key": key},
            needs=tuple(needs),
            pending=len(needs),
            created_at=now,
            updated_at=now,
        )
        for key, needs in graph.items()
    ]
    workflow = Workflow(
        id=workflow_id,
        name=f"{workflow_id} name",
        status=W.RUNNING,
        created_at=now,
        updated_at=now,
        task_count=len(tasks),
    )
    return workflow, tasks


async def submit(
    store: Store,
    clock: FakeClock,
    workflow_id: str,
    graph: Mapping[str, Sequence[str]],
    *,
    capabilities: Mapping[str, str] | None = None,
) -> tuple[Workflow, list[Task]]:
    """Build a workflow (see :func:`build`) and write it."""
    workflow, tasks = build(clock, workflow_id, graph, capabilities=capabilities)
    await store.create_workflow(workflow, tasks)
    return workflow, tasks


def dispatch(tid: str, attempt: int = 0) -> Change:
    """ready -> dispatched, starting attempt ``attempt + 1``."""
    return Change(
        tid, T.DISPATCHED, frozenset({T.READY}), attempt=attempt, values={"attempt": attempt + 1}
    )


def succeed(tid: str, attempt: int = 1, output: object = None) -> Change:
    """An in-flight attempt succeeds with ``output``."""
    return Change(tid, T.SUCCEEDED, IN_FLIGHT, attempt=attempt, values={"output": output})


def fail(tid: str, attempt: int = 1) -> Change:
    """An in-flight attempt fails for good."""
    return Change(
        tid,
        T.FAILED,
        IN_FLIGHT,
        attempt=attempt,
        values={"error": ErrorInfo("error", "boom", retryable=False)},
    )


async def finish(store: Store, tids: Sequence[str], at: float) -> list[Task]:
    """Dispatch then succeed ``tids``; returns the dependents released."""
    await store.apply([dispatch(t) for t in tids], at)
    return (await store.apply([succeed(t) for t in tids], at)).released


def full_task(workflow_id: str) -> Task:
    """A task with every field set to something other than its default."""
    return Task(
        id=task_id(workflow_id, "full"),
        workflow_id=workflow_id,
        key="full",
        capability="cap.x-1",
        status=T.RETRYING,
        input={
            "n": 1.5,
            "big": 2**53,
            "nested": {"list": [1, "two", None, True, -0.25]},
            "s": "é✓",
        },
        needs=(),
        pending=0,
        created_at=1_700_000_000.125,
        updated_at=1_700_000_001.5,
        timeout=12.75,
        attempt=3,
        first_attempt=2,
        retry={"attempts": 5, "backoff": 0.5, "on": ["timeout"]},
        output=[1, {"x": None}],
        error=ErrorInfo("timeout", "too slow", retryable=False, retry_after=1.5),
        agent_id="agent-7",
        not_before=1_700_000_003.25,
        deadline=1_700_000_004.5,
        started_at=1_700_000_002.0,
        finished_at=1_700_000_005.75,
    )


# ---------------------------------------------------------------------------- lifecycle


async def test_migrate_twice_is_a_no_op(store: Store, clock: FakeClock) -> None:
    """Migrating an up-to-date store again changes nothing and keeps the data."""
    workflow, _ = await submit(store, clock, "wf", {"a": []})
    await store.migrate()
    await store.migrate()
    assert await store.get_workflow("wf") == workflow


@pytest.mark.parametrize("shared_name", sorted(n for n, b in STORE_BACKENDS.items() if b.shared))
async def test_two_stores_on_the_same_database_see_each_others_writes(
    shared_name: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Two instances on one database (two processes, say) each see what the other wrote."""
    backend = STORE_BACKENDS[shared_name]
    async with backend.open(tmp_path, clock) as first, backend.open(tmp_path, clock) as second:
        _, tasks = await submit(first, clock, "wf", {"a": []})
        moved = (await second.apply([dispatch(tasks[0].id)], clock.now())).tasks
        assert (await first.get_task(tasks[0].id)) == moved[0]
        await second.add_command(Command("c1", "pause", "wf", clock.now()))
        assert [c.id for c in await first.pending_commands()] == ["c1"]


# ---------------------------------------------------------------------------- workflows


async def test_workflow_and_tasks_round_trip_exactly(store: Store, clock: FakeClock) -> None:
    """Every field of a workflow and its tasks reads back equal to what was written."""
    full = full_task("wf")
    child = replace(
        full,
        id="wf/child",
        key="child",
        status=T.BLOCKED,
        needs=("full",),
        pending=1,
        error=None,
        output=None,
        retry=None,
        agent_id=None,
    )
    workflow = Workflow(
        "wf",
        "nightly build",
        W.PAUSED,
        10.5,
        11.25,
        2,
        finished_at=12.0,
        labels={"team": "data", "env": "prod"},
    )
    await store.create_workflow(workflow, [full, child])

    assert await store.get_workflow("wf") == workflow
    assert await store.get_task(full.id) == full
    assert await store.get_task(child.id) == child
    assert (await store.get_task(child.id)).needs == ("full",)


async def test_create_workflow_writes_a_created_event_per_task(
    store: Store, clock: FakeClock
) -> None:
    """Each new task's history starts with one ``created`` event at its creation status."""
    _, tasks = await submit(store, clock, "wf", {"a": [], "b": ["a"]})
    for task in tasks:
        [event] = await store.task_events(task.id)
        assert (event.kind, event.from_status, event.to_status) == ("created", None, task.status)
        assert (event.task_id, event.workflow_id, event.attempt) == (task.id, "wf", 0)
        assert event.at == task.created_at


async def test_duplicate_workflow_id_raises_conflict_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    """A second workflow with a taken id is refused whole: the first stays as it was."""
    original, _ = await submit(store, clock, "wf", {"a": []})
    clock.advance(1)
    other, tasks = build(clock, "wf", {"z": []})
    with pytest.raises(ConflictError):
        await store.create_workflow(replace(other, name="other"), tasks)
    assert await store.get_workflow("wf") == original
    with pytest.raises(NotFound):
        await store.get_task("wf/z")


async def test_create_workflow_refuses_an_unknown_need(store: Store, clock: FakeClock) -> None:
    """A task needing a key the workflow lacks is refused and nothing is written."""
    workflow, tasks = build(clock, "wf", {"a": [], "b": ["nope"]})
    with pytest.raises(ValueError, match="nope"):
        await store.create_workflow(workflow, tasks)
    with pytest.raises(NotFound):
        await store.get_workflow("wf")


async def test_create_workflow_of_ten_thousand_tasks(store: Store, clock: FakeClock) -> None:
    """A 10,000-task workflow is written whole, with its counts and events."""
    graph = {f"t{i:05d}": ([f"t{i - 1:05d}"] if i % 10 else []) for i in range(10_000)}
    await submit(store, clock, "big", graph)
    counts = await store.count_tasks(["big"])
    assert counts == {"big": {T.READY: 1_000, T.BLOCKED: 9_000}}
    assert len(await store.events_since(0, limit=20_000)) == 10_000


async def test_list_workflows_newest_first_with_filters_and_pages(
    store: Store, clock: FakeClock
) -> None:
    """Workflows list newest first, filter by status and page with limit and offset."""
    for name in ("w1", "w2", "w3"):
        await submit(store, clock, name, {"a": []})
        clock.advance(1)
    await store.set_workflow_status("w2", {W.RUNNING}, W.PAUSED, clock.now())

    assert [w.id for w in await store.list_workflows()] == ["w3", "w2", "w1"]
    assert [w.id for w in await store.list_workflows(status=[W.RUNNING])] == ["w3", "w1"]
    assert [w.id for w in await store.list_workflows(limit=1, offset=1)] == ["w2"]
    assert await store.list_workflows(status=[]) == []


async def test_set_workflow_status_is_a_compare_and_set(store: Store, clock: FakeClock) -> None:
    """The status changes only from an expected one; terminal sets finished_at, else clears."""
    await submit(store, clock, "wf", {"a": []})
    clock.advance(5)
    at = clock.now()

    assert await store.set_workflow_status("wf", {W.RUNNING, W.PAUSED}, W.FAILED, at)
    failed = await store.get_workflow("wf")
    assert (failed.status, failed.finished_at, failed.updated_at) == (W.FAILED, at, at)

    assert not await store.set_workflow_status("wf", {W.RUNNING}, W.CANCELLED, at + 1)
    assert await store.get_workflow("wf") == failed

    assert await store.set_workflow_status("wf", {W.FAILED}, W.RUNNING, at + 2)
    again = await store.get_workflow("wf")
    assert (again.status, again.finished_at, again.updated_at) == (W.RUNNING, None, at + 2)


async def test_set_workflow_status_refuses_an_illegal_transition(
    store: Store, clock: FakeClock
) -> None:
    """Expecting a status that cannot reach the target is an error, and nothing changes."""
    workflow, _ = await submit(store, clock, "wf", {"a": []})
    with pytest.raises(InvalidTransition):
        await store.set_workflow_status("wf", {W.RUNNING, W.SUCCEEDED}, W.PAUSED, clock.now())
    assert await store.get_workflow("wf") == workflow


# -------------------------------------------------------------------------------- tasks


async def test_list_tasks_filters_and_orders(store: Store, clock: FakeClock) -> None:
    """Tasks list oldest first then by key, matching every filter given, paged."""
    await submit(store, clock, "w1", {"b": [], "a": [], "c": ["a"]}, capabilities={"b": "http"})
    clock.advance(1)
    await submit(store, clock, "w2", {"a": []})
    await store.apply(
        [Change("w1/b", T.DISPATCHED, frozenset({T.READY}), values={"agent_id": "ag1"})],
        clock.now(),
    )

    def ids(tasks: list[Task]) -> list[str]:
        return [t.id for t in tasks]

    assert ids(await store.list_tasks()) == ["w1/a", "w1/b", "w1/c", "w2/a"]
    assert ids(await store.list_tasks(workflow_id="w2")) == ["w2/a"]
    assert ids(await store.list_tasks(status=[T.READY, T.BLOCKED])) == ["w1/a", "w1/c", "w2/a"]
    assert ids(await store.list_tasks(capability="http")) == ["w1/b"]
    assert ids(await store.list_tasks(agent_id="ag1")) == ["w1/b"]
    assert ids(await store.list_tasks(workflow_id="w1", status=[T.READY])) == ["w1/a"]
    assert ids(await store.list_tasks(limit=2, offset=1)) == ["w1/b", "w1/c"]
    assert await store.list_tasks(status=[]) == []


async def test_list_tasks_sorts_by_a_column_on_request(store: Store, clock: FakeClock) -> None:
    """Sorted by a column (missing values last, either way), ties in creation order, paged;
    any other column is refused by name."""
    caps = {"a": "http", "b": "echo", "c": "http", "d": "echo"}
    await submit(store, clock, "w1", {"a": [], "b": [], "c": [], "d": []}, capabilities=caps)
    await store.apply(
        [Change("w1/c", T.DISPATCHED, frozenset({T.READY}), values={"agent_id": "ag1"})],
        clock.now(),
    )

    def ids(tasks: list[Task]) -> list[str]:
        return [t.id for t in tasks]

    assert ids(await store.list_tasks(sort="capability")) == ["w1/b", "w1/d", "w1/a", "w1/c"]
    assert ids(await store.list_tasks(sort="capability", descending=True)) == [
        "w1/a", "w1/c", "w1/b", "w1/d",
    ]  # fmt: skip
    assert ids(await store.list_tasks(sort="status", limit=1)) == ["w1/c"]  # dispatched < ready
    assert ids(await store.list_tasks(sort="agent_id"))[0] == "w1/c"
    assert ids(await store.list_tasks(sort="agent_id", descending=True))[0] == "w1/c"
    assert ids(await store.list_tasks(sort="capability", offset=1, limit=2)) == ["w1/d", "w1/a"]
    with pytest.raises(ValueError, match=r"'input'.*capability"):
        await store.list_tasks(sort="input")


async def test_total_tasks_counts_what_list_tasks_pages_through(
    store: Store, clock: FakeClock
) -> None:
    """The total under the same filters is the length of the whole list, whatever the page."""
    await submit(store, clock, "w1", {"b": [], "a": [], "c": ["a"]}, capabilities={"b": "http"})
    await submit(store, clock, "w2", {"a": []})
    await store.apply([dispatch("w1/a")], clock.now())

    filters: list[dict[str, object]] = [
        {},
        {"workflow_id": "w1"},
        {"status": [T.READY, T.BLOCKED]},
        {"capability": "http"},
        {"workflow_id": "w2", "status": [T.DISPATCHED]},
        {"status": []},
    ]
    for f in filters:
        whole = await store.list_tasks(limit=1000, **f)  # type: ignore[arg-type]
        assert await store.total_tasks(**f) == len(whole), f  # type: ignore[arg-type]
    assert await store.total_tasks() == 4
    assert await store.total_tasks(status=[T.READY, T.BLOCKED]) == 3


async def test_count_workflows_per_status(store: Store, clock: FakeClock) -> None:
    """Every workflow counted once, under its status; statuses with none are absent."""
    assert await store.count_workflows() == {}
    for wid in ("w1", "w2", "w3"):
        await submit(store, clock, wid, {"a": []})
    await store.set_workflow_status("w2", {W.RUNNING}, W.PAUSED, clock.now())

    assert await store.count_workflows() == {W.RUNNING: 2, W.PAUSED: 1}
    assert sum((await store.count_workflows()).values()) == len(
        await store.list_workflows(limit=1000)
    )


async def test_count_by_capability_counts_the_statuses_asked_for(
    store: Store, clock: FakeClock
) -> None:
    """Per capability, per status asked for; other statuses and capabilities are absent."""
    caps = {"a": "echo", "b": "http", "c": "http", "d": "echo"}
    await submit(store, clock, "w1", {"a": [], "b": [], "c": [], "d": ["a"]}, capabilities=caps)
    await store.apply([dispatch("w1/b")], clock.now())

    assert await store.count_by_capability([T.READY, T.DISPATCHED]) == {
        "echo": {T.READY: 1},
        "http": {T.READY: 1, T.DISPATCHED: 1},
    }
    assert await store.count_by_capability([T.BLOCKED]) == {"echo": {T.BLOCKED: 1}}
    assert await store.count_by_capability([]) == {}


async def test_count_tasks_per_workflow_and_status(store: Store, clock: FakeClock) -> None:
    """Counts per status for each known workflow; empty statuses and unknown ids are absent."""
    await submit(store, clock, "w1", {"a": [], "b": [], "c": ["a"]})
    await submit(store, clock, "w2", {"a": []})
    await store.apply([dispatch("w1/a")], clock.now())

    assert await store.count_tasks(["w1", "w2", "nope"]) == {
        "w1": {T.DISPATCHED: 1, T.READY: 1, T.BLOCKED: 1},
        "w2": {T.READY: 1},
    }
    assert await store.count_tasks([]) == {}


async def test_with_open_tasks_names_the_workflows_that_cannot_have_finished(
    store: Store, clock: FakeClock
) -> None:
    """A workflow is open while any of its tasks is blocked, ready, in flight or retrying;
    one whose tasks are all final (or that has none) is not, nor is an unknown id."""
    await submit(store, clock, "w1", {"a": [], "b": ["a"]})
    await submit(store, clock, "w2", {"a": []})
    await submit(store, clock, "w3", {"a": [], "b": []})
    await store.apply([dispatch("w1/a"), dispatch("w2/a"), dispatch("w3/a")], clock.now())
    await store.apply([succeed("w2/a"), fail("w3/a")], clock.now())
    skip_b = Change("w3/b", T.SKIPPED, frozenset({T.READY}))
    await store.apply([skip_b], clock.now())

    assert await store.with_open_tasks(["w1", "w2", "w3", "nope"]) == {"w1"}
    await store.apply([succeed("w1/a")], clock.now())  # b becomes ready: still open
    assert await store.with_open_tasks(["w1"]) == {"w1"}
    await store.apply([dispatch("w1/b"), succeed("w1/b")], clock.now())
    assert await store.with_open_tasks(["w1", "w2"]) == set()
    assert await store.with_open_tasks([]) == set()


async def test_outputs_of_existing_tasks(store: Store, clock: FakeClock) -> None:
    """Outputs come back for the tasks that exist, None for a task without one."""
    await submit(store, clock, "wf", {"a": [], "b": []})
    await finish(store, ["wf/a"], clock.now())
    assert await store.outputs(["wf/a", "wf/b", "wf/nope"]) == {"wf/a": None, "wf/b": None}
    await store.apply([dispatch("wf/b"), succeed("wf/b", output={"rows": [1, 2.5]})], clock.now())
    assert await store.outputs(["wf/b"]) == {"wf/b": {"rows": [1, 2.5]}}
    assert await store.outputs([]) == {}


@pytest.mark.parametrize(
    "output",
    [float("nan"), {"rows": [1, float("inf")]}, {"a": None, "b": -float("inf")}],
    ids=["nan", "inf-in-a-list", "-inf-beside-a-null"],
)
async def test_a_non_finite_number_in_an_output_is_refused_and_nothing_written(
    store: Store, clock: FakeClock, output: object
) -> None:
    """NaN and infinities are not JSON: an output holding one (at any depth, next to a null
    or not) is a ValueError naming it, and the batch writes nothing, on every engine."""
    await submit(store, clock, "wf", {"a": []})
    await store.apply([dispatch("wf/a")], clock.now())
    with pytest.raises(ValueError, match=r"output of .* is not JSON"):
        await store.apply([succeed("wf/a", output=output)], clock.now())
    assert (await store.get_task("wf/a")).status == T.DISPATCHED


@pytest.mark.parametrize("size", [3, 250])
async def test_the_values_a_change_writes_read_back_the_same(
    store: Store, clock: FakeClock, size: int
) -> None:
    """Whatever travels with a written task comes back as it was, on every engine: text with
    quotes, backslashes and characters outside ASCII, floats at their edges and infinities
    (JSON has no number for them, and PostgreSQL's write of a batch of 200 tasks or more
    carries its rows and events as JSON), outputs and errors, and the events' agent and
    order; in a small batch and in a big one."""
    keys = [f"t{i:03}" for i in range(size)]
    await submit(store, clock, "wf", {k: [] for k in keys})
    agent = 'agent "x" \\ é ✓ \U0001f600'
    edges = [
        (math.inf, -math.inf, 5e-324, 1.7976931348623157e308),
        (0.1, 1e16, 1e-7, 1763000000.123456),
        (-0.5, 0.0, 12345.678901234567, 2.0),
    ]
    floats = {f"wf/{k}": edges[i % len(edges)] for i, k in enumerate(keys)}
    await store.apply([dispatch(t) for t in floats], clock.now())
    changes = [
        Change(
            t,
            T.RUNNING,
            frozenset({T.DISPATCHED}),
            attempt=1,
            values={
                "agent_id": agent,
                "not_before": v[0],
                "deadline": v[1],
                "started_at": v[2],
                "finished_at": v[3],
                "output": {"é": ["✓", 1.5, None]},
                "error": ErrorInfo("odd", 'a "quoted" \\ message ✓'),
            },
        )
        for t, v in floats.items()
    ]
    await store.apply(changes, clock.now())
    for t, v in floats.items():
        task = await store.get_task(t)
        assert (task.not_before, task.deadline, task.started_at, task.finished_at) == v
        assert task.agent_id == agent
        assert task.output == {"é": ["✓", 1.5, None]}
        assert task.error == ErrorInfo("odd", 'a "quoted" \\ message ✓')
        events = await store.task_events(t)
        assert [(e.to_status, e.attempt) for e in events[-2:]] == [
            (T.DISPATCHED, 1),
            (T.RUNNING, 1),
        ]
        assert events[-1].agent_id == agent
    written = await store.events_since(0, limit=10 * size)
    running = [e.task_id for e in written if e.to_status == T.RUNNING]
    assert running == list(floats)  # in the batch's order


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s, now: s.get_workflow("nope"), id="get_workflow"),
        pytest.param(lambda s, now: s.get_task("nope/a"), id="get_task"),
        pytest.param(
            lambda s, now: s.set_workflow_status("nope", {W.RUNNING}, W.PAUSED, now),
            id="set_workflow_status",
        ),
        pytest.param(lambda s, now: s.get_command("nope"), id="get_command"),
        pytest.param(
            lambda s, now: s.finish_command(Command("nope", "retry", "wf", now)),
            id="finish_command",
        ),
    ],
)
async def test_missing_ids_raise_not_found(
    store: Store, clock: FakeClock, call: Callable[[Store, float], Awaitable[object]]
) -> None:
    """Reading or updating a record that does not exist raises NotFound."""
    with pytest.raises(NotFound):
        await call(store, clock.now())


# ---------------------------------------------------------------------------- scheduling


async def test_ready_tasks_skip_paused_workflows_and_held_capabilities(
    store: Store, clock: FakeClock
) -> None:
    """Only ready tasks of running workflows whose capability is not held are offered."""
    await submit(store, clock, "w1", {"a": [], "b": [], "c": ["a"]}, capabilities={"b": "held"})
    await submit(store, clock, "w2", {"a": []})
    await store.set_workflow_status("w2", {W.RUNNING}, W.PAUSED, clock.now())

    assert [t.id for t in await store.ready_tasks(limit=10)] == ["w1/a", "w1/b"]
    assert [t.id for t in await store.ready_tasks(limit=10, hold={"held"})] == ["w1/a"]
    assert [t.id for t in await store.ready_tasks(limit=1)] == ["w1/a"]

    await store.set_workflow_status("w2", {W.PAUSED}, W.RUNNING, clock.now())
    assert "w2/a" in [t.id for t in await store.ready_tasks(limit=10)]


async def test_ready_tasks_oldest_first(store: Store, clock: FakeClock) -> None:
    """Tasks of older workflows come first, whatever order they were written in."""
    clock.advance(10)
    await submit(store, clock, "newer", {"a": []})
    clock.advance(-5)
    await submit(store, clock, "older", {"a": []})
    assert [t.id for t in await store.ready_tasks(limit=10)] == ["older/a", "newer/a"]


async def test_due_tasks_are_retries_and_deadlines_that_have_come(
    store: Store, clock: FakeClock
) -> None:
    """Retrying tasks past not_before and in-flight tasks past their deadline are due."""
    now = clock.now()
    workflow, base = build(clock, "wf", {k: [] for k in ("r1", "r2", "d1", "d2", "d3", "x")})
    by_key = {t.key: t for t in base}
    tasks = [
        replace(by_key["r1"], status=T.RETRYING, attempt=1, not_before=now - 1),
        replace(by_key["r2"], status=T.RETRYING, attempt=1, not_before=now + 10),
        replace(by_key["d1"], status=T.DISPATCHED, attempt=1, deadline=now),
        replace(by_key["d2"], status=T.RUNNING, attempt=1, deadline=now - 5),
        replace(by_key["d3"], status=T.RUNNING, attempt=1, deadline=None),
        replace(by_key["x"], status=T.READY, not_before=now - 1, deadline=now - 1),
    ]
    await store.create_workflow(workflow, tasks)

    due = await store.due_tasks(now)
    assert sorted(t.key for t in due) == ["d1", "d2", "r1"]
    assert due[0] in tasks
    assert len(await store.due_tasks(now, limit=2)) == 2
    assert sorted(t.key for t in await store.due_tasks(now + 10)) == ["d1", "d2", "r1", "r2"]


# --------------------------------------------------------------------------------- apply


async def test_apply_moves_a_task_and_sets_its_values(store: Store, clock: FakeClock) -> None:
    """An applied change sets status, values and updated_at, and returns the new task."""
    _, [task] = await submit(store, clock, "wf", {"a": []})
    await store.apply([dispatch(task.id)], clock.now())
    clock.advance(2)
    at = clock.now()
    running = Change(
        task.id,
        T.RUNNING,
        frozenset({T.DISPATCHED}),
        attempt=1,
        values={"agent_id": "ag1", "started_at": at - 0.5, "deadline": at + 60},
    )

    applied = await store.apply([running], at)

    [moved] = applied.tasks
    assert moved == await store.get_task(task.id)
    assert (moved.status, moved.attempt, moved.agent_id) == (T.RUNNING, 1, "ag1")
    assert (moved.started_at, moved.deadline, moved.updated_at) == (at - 0.5, at + 60, at)
    assert (moved.input, moved.created_at) == (task.input, task.created_at)
    assert applied.released == []


async def test_apply_stores_and_clears_an_error(store: Store, clock: FakeClock) -> None:
    """An ErrorInfo value reads back equal; None clears it."""
    _, [task] = await submit(store, clock, "wf", {"a": []})
    error = ErrorInfo("lost", "agent vanished", retryable=True, retry_after=2.5)
    await store.apply([dispatch(task.id)], clock.now())
    await store.apply(
        [
            Change(
                task.id,
                T.RETRYING,
                IN_FLIGHT,
                attempt=1,
                values={"error": error, "not_before": 5.0},
            )
        ],
        clock.now(),
    )
    assert (await store.get_task(task.id)).error == error
    await store.apply(
        [
            Change(
                task.id,
                T.READY,
                frozenset({T.RETRYING}),
                values={"error": None, "not_before": None},
            )
        ],
        clock.now(),
    )
    cleared = await store.get_task(task.id)
    assert (cleared.error, cleared.not_before, cleared.status) == (None, None, T.READY)


async def test_apply_appends_an_event_per_applied_change(store: Store, clock: FakeClock) -> None:
    """Each applied change appends one event: kind, statuses, attempt after, agent, detail."""
    _, [task] = await submit(store, clock, "wf", {"a": []})
    at = clock.now() + 1
    await store.apply([dispatch(task.id)], at)
    await store.apply(
        [
            Change(
                task.id,
                T.RUNNING,
                frozenset({T.DISPATCHED}),
                attempt=1,
                values={"agent_id": "ag1"},
                event="started",
                detail={"host": "n1", "pid": 42},
            )
        ],
        at + 1,
    )
    created, dispatched, started = await store.task_events(task.id)
    assert (dispatched.kind, dispatched.from_status, dispatched.to_status) == (
        "dispatched",
        T.READY,
        T.DISPATCHED,
    )
    assert (dispatched.attempt, dispatched.at, dispatched.agent_id) == (1, at, None)
    assert (started.kind, started.from_status, started.to_status) == (
        "started",
        T.DISPATCHED,
        T.RUNNING,
    )
    assert (started.attempt, started.agent_id, started.at) == (1, "ag1", at + 1)
    assert started.detail == {"host": "n1", "pid": 42}
    assert created.seq < dispatched.seq < started.seq


async def test_apply_skips_a_task_in_an_unexpected_status(store: Store, clock: FakeClock) -> None:
    """A change whose expected status does not match is skipped: no error, no write, no event."""
    _, [task] = await submit(store, clock, "wf", {"a": []})
    applied = await store.apply([succeed(task.id, attempt=0)], clock.now() + 1)
    assert (applied.tasks, applied.released) == ([], [])
    assert await store.get_task(task.id) == task
    assert len(await store.task_events(task.id)) == 1


async def test_apply_skips_a_stale_attempt(store: Store, clock: FakeClock) -> None:
    """A result for another attempt than the current one is ignored."""
    _, [task] = await submit(store, clock, "wf", {"a": []})
    await store.apply([dispatch(task.id)], clock.now())
    before = await store.get_task(task.id)
    applied = await store.apply([succeed(task.id, attempt=2)], clock.now() + 1)
    assert applied.tasks == []
    assert await store.get_task(task.id) == before


async def test_applying_the_same_change_twice_is_a_no_op(store: Store, clock: FakeClock) -> None:
    """A duplicate (a redelivered result) changes nothing the second time."""
    _, [task] = await submit(store, clock, "wf", {"a": []})
    await store.apply([dispatch(task.id)], clock.now())
    first = await store.apply([succeed(task.id, output=1)], clock.now() + 1)
    second = await store.apply([succeed(task.id, output=2)], clock.now() + 2)
    assert [t.output for t in first.tasks] == [1]
    assert second.tasks == []
    assert (await store.get_task(task.id)) == first.tasks[0]
    assert [e.kind for e in await store.task_events(task.id)] == [
        "created",
        "dispatched",
        "succeeded",
    ]


async def test_changes_in_one_call_apply_in_order(store: Store, clock: FakeClock) -> None:
    """Later changes in a call see earlier ones; each moved task is returned once, in the
    order it first moved, as it stands at the end of the call."""
    await submit(store, clock, "wf", {"a": [], "b": []})
    changes = [
        dispatch("wf/b"),
        dispatch("wf/a"),
        Change("wf/b", T.RUNNING, frozenset({T.DISPATCHED}), attempt=1),
        Change("wf/nope", T.DISPATCHED, frozenset({T.READY})),
    ]
    applied = await store.apply(changes, clock.now())
    assert [(t.id, t.status) for t in applied.tasks] == [
        ("wf/b", T.RUNNING),
        ("wf/a", T.DISPATCHED),
    ]
    assert applied.tasks == [await store.get_task("wf/b"), await store.get_task("wf/a")]
    assert [e.kind for e in await store.task_events("wf/b")] == ["created", "dispatched", "running"]


async def test_a_task_released_and_dispatched_in_one_call(store: Store, clock: FakeClock) -> None:
    """A change later in a call can act on a dependent that an earlier change released."""
    await submit(store, clock, "wf", {"a": [], "b": ["a"]})
    await store.apply([dispatch("wf/a")], clock.now())
    applied = await store.apply([succeed("wf/a"), dispatch("wf/b")], clock.now())
    assert [t.id for t in applied.released] == ["wf/b"]
    assert [(t.id, t.status) for t in applied.tasks] == [
        ("wf/a", T.SUCCEEDED),
        ("wf/b", T.DISPATCHED),
    ]
    kinds = [e.kind for e in await store.task_events("wf/b")]
    assert kinds == ["created", "ready", "dispatched"]


async def test_then_dispatches_what_the_first_changes_released(
    store: Store, clock: FakeClock
) -> None:
    """``then`` gets what the changes did; the changes it returns see it and are written after
    them; the answer holds both parts, the first's tasks first."""
    await submit(store, clock, "wf", {"a": [], "b": ["a"], "c": ["a"]})
    await store.apply([dispatch("wf/a")], clock.now())
    seen = []

    async def then(applied: Applied) -> list[Change]:
        seen.append(applied)
        assert (await store.get_task("wf/b")).status != T.DISPATCHED  # not written yet
        return [dispatch(t.id) for t in applied.released if t.key == "b"]

    applied = await store.apply([succeed("wf/a", output=7)], clock.now(), then=then)
    [first] = seen
    assert [(t.id, t.status, t.output) for t in first.tasks] == [("wf/a", T.SUCCEEDED, 7)]
    assert [t.id for t in first.released] == ["wf/b", "wf/c"]
    assert [(t.id, t.status) for t in applied.tasks] == [
        ("wf/a", T.SUCCEEDED),
        ("wf/b", T.DISPATCHED),
    ]
    assert [t.id for t in applied.released] == ["wf/b", "wf/c"]
    assert [e.kind for e in await store.task_events("wf/b")] == ["created", "ready", "dispatched"]
    assert (await store.get_task("wf/c")).status == T.READY


async def test_then_returning_nothing_writes_the_first_changes_only(
    store: Store, clock: FakeClock
) -> None:
    """A ``then`` with nothing to add leaves the call as it would be without it."""
    await submit(store, clock, "wf", {"a": [], "b": ["a"]})
    await store.apply([dispatch("wf/a")], clock.now())

    async def then(applied: Applied) -> list[Change]:
        return []

    applied = await store.apply([succeed("wf/a")], clock.now(), then=then)
    assert [(t.id, t.status) for t in applied.tasks] == [("wf/a", T.SUCCEEDED)]
    assert [(t.id, t.status) for t in applied.released] == [("wf/b", T.READY)]


async def test_apply_of_nothing_changes_nothing(store: Store, clock: FakeClock) -> None:
    """An empty batch returns empty results."""
    applied = await store.apply([], clock.now())
    assert (applied.tasks, applied.released) == ([], [])


async def test_apply_refuses_unknown_value_names_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    """A change setting a column that does not exist is refused, with the others in its call."""
    _, [task] = await submit(store, clock, "wf", {"a": []})
    bad = Change(task.id, T.DISPATCHED, frozenset({T.READY}), values={"colour": "red"})
    with pytest.raises(ValueError, match="colour"):
        await store.apply([dispatch(task.id), bad], clock.now())
    assert await store.get_task(task.id) == task


async def test_apply_refuses_an_illegal_transition(store: Store, clock: FakeClock) -> None:
    """Expecting a status that cannot reach the target raises InvalidTransition."""
    _, [task] = await submit(store, clock, "wf", {"a": []})
    with pytest.raises(InvalidTransition):
        await store.apply([Change(task.id, T.SUCCEEDED, frozenset({T.READY}))], clock.now())
    assert await store.get_task(task.id) == task


async def test_a_thousand_changes_in_one_call(store: Store, clock: FakeClock) -> None:
    """A batch of 1,000 changes applies whole, each with its event."""
    graph: dict[str, list[str]] = {f"t{i:04d}": [] for i in range(1_000)}
    _, tasks = await submit(store, clock, "wf", graph)
    applied = await store.apply([dispatch(t.id) for t in tasks], clock.now())
    assert len(applied.tasks) == 1_000
    assert await store.count_tasks(["wf"]) == {"wf": {T.DISPATCHED: 1_000}}
    assert len(await store.events_since(0, limit=5_000)) == 2_000


# ------------------------------------------------------------------------- dependencies


async def test_success_releases_dependents_when_all_their_needs_succeeded(
    store: Store, clock: FakeClock
) -> None:
    """In a diamond, b and c are released by a, and d only once both b and c succeeded."""
    await submit(store, clock, "wf", {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})

    released = await finish(store, ["wf/a"], clock.now())
    assert sorted((t.id, t.status, t.pending) for t in released) == [
        ("wf/b", T.READY, 0),
        ("wf/c", T.READY, 0),
    ]
    assert (await store.get_task("wf/d")).status is T.BLOCKED

    assert await finish(store, ["wf/b"], clock.now()) == []
    assert (await store.get_task("wf/d")).pending == 1
    [d] = await finish(store, ["wf/c"], clock.now())
    assert d == await store.get_task("wf/d")
    assert (d.status, d.pending) == (T.READY, 0)


async def test_release_appends_a_ready_event(store: Store, clock: FakeClock) -> None:
    """A released dependent's history records its release and the task that released it."""
    await submit(store, clock, "wf", {"a": [], "b": ["a"]})
    at = clock.now() + 3
    await finish(store, ["wf/a"], at)
    last = (await store.task_events("wf/b"))[-1]
    assert (last.kind, last.from_status, last.to_status, last.at) == (
        "ready",
        T.BLOCKED,
        T.READY,
        at,
    )
    assert last.detail == {"released_by": "a"}


async def test_fan_in_of_a_thousand_releases_once_all_succeeded(
    store: Store, clock: FakeClock
) -> None:
    """A task needing 1,000 others waits for the last of them, and is released once."""
    roots = [f"r{i:04d}" for i in range(1_000)]
    await submit(store, clock, "wf", {**{r: [] for r in roots}, "sink": roots})
    ids = [f"wf/{r}" for r in roots]

    assert await finish(store, ids[:-1], clock.now()) == []
    assert (await store.get_task("wf/sink")).pending == 1
    [sink] = await finish(store, ids[-1:], clock.now())
    assert (sink.id, sink.status, sink.pending) == ("wf/sink", T.READY, 0)
    assert [e.kind for e in await store.task_events("wf/sink")] == ["created", "ready"]


async def test_needs_finishing_in_one_call_release_the_dependent_once(
    store: Store, clock: FakeClock
) -> None:
    """When one batch succeeds every need, the dependent is released exactly once."""
    await submit(store, clock, "wf", {"a": [], "b": [], "c": ["a", "b"]})
    released = await finish(store, ["wf/a", "wf/b"], clock.now())
    assert [t.id for t in released] == ["wf/c"]


async def test_failure_releases_nothing(store: Store, clock: FakeClock) -> None:
    """A failed need leaves its dependent blocked, its count unchanged."""
    await submit(store, clock, "wf", {"a": [], "b": ["a"]})
    await store.apply([dispatch("wf/a")], clock.now())
    applied = await store.apply([fail("wf/a")], clock.now())
    assert [t.status for t in applied.tasks] == [T.FAILED]
    assert applied.released == []
    b = await store.get_task("wf/b")
    assert (b.status, b.pending) == (T.BLOCKED, 1)


async def test_success_counts_down_but_does_not_revive_a_dependent_that_is_not_blocked(
    store: Store, clock: FakeClock
) -> None:
    """Only blocked dependents are released; a cancelled one just has its count lowered."""
    await submit(store, clock, "wf", {"a": [], "b": ["a"]})
    await store.apply([Change("wf/b", T.CANCELLED, frozenset({T.BLOCKED}))], clock.now())
    assert await finish(store, ["wf/a"], clock.now()) == []
    b = await store.get_task("wf/b")
    assert (b.status, b.pending) == (T.CANCELLED, 0)


# -------------------------------------------------------------------------------- events


async def test_events_have_one_increasing_global_order(store: Store, clock: FakeClock) -> None:
    """Events across tasks and workflows carry increasing seqs; polling from a seq resumes."""
    await submit(store, clock, "w1", {"a": []})
    await submit(store, clock, "w2", {"a": []})
    everything = await store.events_since(0)
    seqs = [e.seq for e in everything]
    assert len(seqs) == 2
    assert seqs == sorted(set(seqs))

    await store.apply([dispatch("w2/a"), dispatch("w1/a")], clock.now())
    newer = await store.events_since(seqs[-1])
    assert [(e.task_id, e.kind) for e in newer] == [("w2/a", "dispatched"), ("w1/a", "dispatched")]
    assert seqs[-1] < newer[0].seq < newer[1].seq


async def test_events_since_filters_by_workflow_and_limits(store: Store, clock: FakeClock) -> None:
    """Polling can follow one workflow, a page at a time."""
    await submit(store, clock, "w1", {"a": [], "b": []})
    await submit(store, clock, "w2", {"a": []})
    assert {e.workflow_id for e in await store.events_since(0, workflow_id="w2")} == {"w2"}
    first = await store.events_since(0, limit=2)
    rest = await store.events_since(first[-1].seq)
    assert (len(first), len(rest)) == (2, 1)
    assert await store.task_events("wf/nope") == []


# --------------------------------------------------------------------------------- fence


async def test_fencing_refuses_an_older_token_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    """Once token 5 wrote, token 4 gets LeaseLost and changes nothing; 5 and 6 still write."""
    _, [a, b] = await submit(store, clock, "wf", {"a": [], "b": []})
    await store.apply([dispatch(a.id)], clock.now(), fence=5)

    with pytest.raises(LeaseLost):
        await store.apply([dispatch(b.id)], clock.now(), fence=4)
    assert await store.get_task(b.id) == b
    assert len(await store.task_events(b.id)) == 1

    assert (await store.apply([dispatch(b.id)], clock.now(), fence=5)).tasks
    await store.apply([], clock.now(), fence=6)
    with pytest.raises(LeaseLost):
        await store.apply([succeed(b.id)], clock.now(), fence=5)


async def test_writes_without_a_fence_are_not_fenced(store: Store, clock: FakeClock) -> None:
    """A change without a token (a one-off tool) is applied whatever tokens wrote before."""
    _, [a] = await submit(store, clock, "wf", {"a": []})
    await store.apply([], clock.now(), fence=9)
    assert (await store.apply([dispatch(a.id)], clock.now())).tasks


async def test_a_workflow_status_write_is_fenced_like_apply(store: Store, clock: FakeClock) -> None:
    """``set_workflow_status`` with a token older than one that wrote gets LeaseLost and
    changes nothing; the newest token writes, and its write locks older tokens out of
    ``apply`` as well; a write without a token is not fenced."""
    workflow, [a] = await submit(store, clock, "wf", {"a": []})
    await store.apply([], clock.now(), fence=5)

    with pytest.raises(LeaseLost):
        await store.set_workflow_status("wf", {W.RUNNING}, W.CANCELLED, clock.now(), fence=4)
    assert await store.get_workflow("wf") == workflow

    clock.advance(1)
    assert await store.set_workflow_status("wf", {W.RUNNING}, W.PAUSED, clock.now(), fence=5)
    assert await store.set_workflow_status("wf", {W.PAUSED}, W.RUNNING, clock.now(), fence=6)
    with pytest.raises(LeaseLost):
        await store.apply([dispatch(a.id)], clock.now(), fence=5)
    assert (await store.get_task(a.id)).status == T.READY

    assert await store.set_workflow_status("wf", {W.RUNNING}, W.PAUSED, clock.now())
    assert (await store.get_workflow("wf")).status == W.PAUSED


# ------------------------------------------------------------------------------ commands


async def test_commands_queue_finish_and_log(store: Store, clock: FakeClock) -> None:
    """Commands queue oldest first, leave the queue when finished and stay in the log."""
    commands = []
    for i, action in enumerate(("pause", "retry", "cancel")):
        command = Command(
            f"c{i}",
            action,
            "wf",
            clock.now(),
            actor="ops@host",
            args={"force": i == 2, "n": [i, 1.5]},
        )
        await store.add_command(command)
        commands.append(command)
        clock.advance(1)

    assert await store.pending_commands() == commands
    assert await store.pending_commands(limit=1) == commands[:1]

    done = replace(
        commands[1], status=CommandStatus.DONE, result="retrying 1 task(s)", finished_at=clock.now()
    )
    await store.finish_command(done)
    assert await store.get_command("c1") == done
    assert [c.id for c in await store.pending_commands()] == ["c0", "c2"]
    assert await store.list_commands() == [commands[2], done, commands[0]]
    assert [c.id for c in await store.list_commands(limit=1)] == ["c2"]


async def test_commands_at_the_same_time_keep_their_queue_order(
    store: Store, clock: FakeClock
) -> None:
    """Commands queued in the same instant come out in the order they were queued."""
    for name in ("z", "a", "m"):
        await store.add_command(Command(name, "pause", "wf", clock.now()))
    assert [c.id for c in await store.pending_commands()] == ["z", "a", "m"]
    assert [c.id for c in await store.list_commands()] == ["m", "a", "z"]


async def test_duplicate_command_id_raises_conflict(store: Store, clock: FakeClock) -> None:
    """A command id can be queued only once."""
    await store.add_command(Command("c1", "pause", "wf", clock.now()))
    with pytest.raises(ConflictError):
        await store.add_command(Command("c1", "cancel", "wf", clock.now()))
    assert (await store.get_command("c1")).action == "pause"


async def test_the_action_log_is_read_a_page_at_a_time_with_its_length(
    store: Store, clock: FakeClock
) -> None:
    """``list_commands(limit, offset)`` pages through the log newest first, and
    ``count_commands`` says how long it is (the action log screen shows any part of it)."""
    assert await store.count_commands() == 0
    for i in range(7):
        await store.add_command(Command(f"c{i}", "retry", f"wf/{i}", clock.now()))
        clock.advance(1)
    assert await store.count_commands() == 7
    newest_first = [f"c{i}" for i in reversed(range(7))]
    pages = [
        [c.id for c in await store.list_commands(limit=3, offset=offset)] for offset in (0, 3, 6, 9)
    ]
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:], []]
    with pytest.raises(ValueError, match="offset must be 0 or more, got -1"):
        await store.list_commands(offset=-1)
