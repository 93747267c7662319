"""The Store contract for snapshots: dump every record page by page, load it back exactly.

Every Store backend in ``tests/contract/backends.py`` must pass these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConflictError
from agentdeck.core.models import (
    Budget,
    Change,
    Command,
    CommandStatus,
    ErrorInfo,
    Task,
    TaskEvent,
    Workflow,
)
from agentdeck.core.ports import Store
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W
from tests.contract.backends import STORE_BACKENDS, StoreBackend

pytestmark = pytest.mark.contract


@pytest.fixture(params=sorted(STORE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> StoreBackend:
    """Each Store backend in turn, by id."""
    return STORE_BACKENDS[request.param]


@pytest.fixture
async def store(backend: StoreBackend, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    """A migrated, empty store."""
    async with backend.open(tmp_path / "source", clock) as opened:
        yield opened


@pytest.fixture
async def target(backend: StoreBackend, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    """A second, empty store of the same backend."""
    async with backend.open(tmp_path / "target", clock) as opened:
        yield opened


def make(
    workflow_id: str, clock: FakeClock, graph: dict[str, tuple[str, ...]]
) -> tuple[Workflow, list[Task]]:
    now = clock.now()
    tasks = [
        Task(
            id=f"{workflow_id}/{key}",
            workflow_id=workflow_id,
            key=key,
            capability="echo",
            status=T.BLOCKED if needs else T.READY,
            input={"key": key, "nested": [1, "two", None]},
            needs=needs,
            pending=len(needs),
            created_at=now,
            updated_at=now,
        )
        for key, needs in graph.items()
    ]
    workflow = Workflow(workflow_id, f"{workflow_id}-name", W.RUNNING, now, now, len(tasks))
    return workflow, tasks


async def populate(store: Store, clock: FakeClock) -> None:
    """Three workflows in various states, with history and commands."""
    for wid in ("wf1", "wf10", "wf2"):
        await store.create_workflow(*make(wid, clock, {"a": (), "b": ("a",), "c": ("a", "b")}))
        clock.advance(1)
    await store.apply(
        [Change("wf1/a", T.DISPATCHED, frozenset({T.READY}), attempt=0, values={"attempt": 1})],
        clock.now(),
    )
    await store.apply(
        [
            Change(
                "wf1/a",
                T.SUCCEEDED,
                frozenset({T.DISPATCHED}),
                attempt=1,
                values={"output": {"ok": True}, "agent_id": "agent-1", "finished_at": 5.0},
            ),
            Change("wf2/a", T.DISPATCHED, frozenset({T.READY}), attempt=0, values={"attempt": 1}),
        ],
        clock.now(),
    )
    await store.apply(
        [
            Change(
                "wf2/a",
                T.RETRYING,
                frozenset({T.DISPATCHED}),
                attempt=1,
                values={"error": ErrorInfo("lost", "gone", True, 2.5), "not_before": 99.0},
                detail={"delay": 2.5},
            )
        ],
        clock.now(),
    )
    reason = "budget: spent $1.00 of $0.50"  # a budget and a hold reason go with a dump too
    await store.set_workflow_status("wf10", {W.RUNNING}, W.PAUSED, clock.now(), reason=reason)
    await store.set_workflow_budget("wf10", Budget(usd=0.5, tokens=7), clock.now())
    for i, action in enumerate(("pause", "cancel")):
        await store.add_command(Command(f"cmd{i}", action, "wf10", clock.now(), actor="me"))
    await store.finish_command(
        Command(
            "cmd0",
            "pause",
            "wf10",
            clock.now(),
            actor="me",
            status=CommandStatus.DONE,
            result="paused",
            finished_at=clock.now(),
        )
    )


async def everything(
    store: Store,
) -> tuple[list[Workflow], list[Task], list[TaskEvent], list[Command]]:
    """Every record, read page by page (pages of two, to cross page boundaries)."""
    workflows: list[Workflow] = []
    while page := await store.dump_workflows(after=workflows[-1].id if workflows else "", limit=2):
        workflows += page
    tasks: list[Task] = []
    while tpage := await store.dump_tasks(after=tasks[-1].id if tasks else "", limit=2):
        tasks += tpage
    commands: list[Command] = []
    while cpage := await store.dump_commands(after=commands[-1].id if commands else "", limit=2):
        commands += cpage
    events = await store.events_since(0, limit=10_000)
    return workflows, tasks, events, commands


async def test_dump_visits_every_record_once_in_id_order(store: Store, clock: FakeClock) -> None:
    """Paging by the last id seen visits each workflow, task and command once, by id."""
    await populate(store, clock)
    workflows, tasks, events, commands = await everything(store)
    assert [w.id for w in workflows] == ["wf1", "wf10", "wf2"]
    assert [t.id for t in tasks] == sorted(
        f"{w}/{k}" for w in ("wf1", "wf10", "wf2") for k in "abc"
    )
    assert [c.id for c in commands] == ["cmd0", "cmd1"]
    assert await store.dump_tasks(after="wf2/c") == []
    assert len(events) > 9


async def test_load_gives_back_the_same_state(
    store: Store, target: Store, clock: FakeClock
) -> None:
    """Loading a dump into an empty store reproduces every record, event seqs included."""
    await populate(store, clock)
    workflows, tasks, events, commands = await everything(store)
    await target.load(workflows=workflows, tasks=tasks, events=events, commands=commands)
    assert await everything(target) == (workflows, tasks, events, commands)
    assert await target.get_task("wf2/a") == await store.get_task("wf2/a")
    assert await target.list_commands() == await store.list_commands()
    assert await target.pending_commands() == await store.pending_commands()


async def test_loaded_store_keeps_working(store: Store, target: Store, clock: FakeClock) -> None:
    """After a load, dependencies release as before and new events sort after loaded ones."""
    await populate(store, clock)
    workflows, tasks, events, commands = await everything(store)
    await target.load(workflows=workflows, tasks=tasks, events=events, commands=commands)
    last = events[-1].seq
    await target.apply(
        [Change("wf10/a", T.DISPATCHED, frozenset({T.READY}), attempt=0, values={"attempt": 1})],
        clock.now(),
    )
    applied = await target.apply(
        [Change("wf10/a", T.SUCCEEDED, frozenset({T.DISPATCHED}), attempt=1)], clock.now()
    )
    assert [t.id for t in applied.released] == ["wf10/b"]
    new = await target.events_since(last)
    assert new and all(e.seq > last for e in new)


async def test_load_of_an_existing_record_writes_nothing(
    store: Store, target: Store, clock: FakeClock
) -> None:
    """A load meeting an existing workflow raises ConflictError and writes none of its records."""
    await populate(store, clock)
    workflows, tasks, _, _ = await everything(store)
    await target.load(workflows=workflows[:1], tasks=[t for t in tasks if t.workflow_id == "wf1"])
    with pytest.raises(ConflictError):
        await target.load(workflows=workflows, tasks=tasks)
    assert [w.id for w in await target.dump_workflows()] == ["wf1"]
    assert len(await target.dump_tasks()) == 3
