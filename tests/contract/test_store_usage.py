"""The Store contract for usage and budgets: one usage row per attempt, written by ``apply``
with the change that ends the attempt; totals summed by the Store; a workflow's budget and the
reason it is held kept with it. Every Store backend must pass every test here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConflictError, LeaseLost, NotFound
from agentdeck.core.models import Budget, Change, Usage
from agentdeck.core.ports import Store
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W
from agentdeck.core.usage import UsageTotal, by_label
from tests.contract.backends import STORE_BACKENDS, StoreBackend
from tests.contract.test_store import IN_FLIGHT, build, dispatch, submit

pytestmark = pytest.mark.contract


@pytest.fixture(params=sorted(STORE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> StoreBackend:
    """Each Store backend in turn, by id."""
    return STORE_BACKENDS[request.param]


@pytest.fixture
async def store(backend: StoreBackend, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    """A migrated, empty store."""
    async with backend.open(tmp_path, clock) as opened:
        yield opened


def used(
    tokens_in: int = 100,
    tokens_out: int = 10,
    cost: float | None = 0.5,
    model: str | None = "claude-x",
) -> Usage:
    """A usage with the given counts (cache tokens 3 and 4, to tell them apart)."""
    return Usage(tokens_in, tokens_out, 3, 4, cost, model)


def ended(tid: str, to: T = T.SUCCEEDED, attempt: int = 1, usage: Usage | None = None) -> Change:
    """An in-flight attempt ends (``to``) having spent ``usage``."""
    return Change(tid, to, IN_FLIGHT, attempt=attempt, usage=usage)


async def run(store: Store, tid: str, at: float, *, usage: Usage, attempt: int = 1) -> None:
    """Dispatch attempt ``attempt`` of ``tid`` and end it, succeeded, with ``usage``."""
    await store.apply([dispatch(tid, attempt - 1)], at)
    await store.apply([ended(tid, usage=usage, attempt=attempt)], at)


async def test_an_attempts_usage_is_written_with_its_result(store: Store, clock: FakeClock) -> None:
    """A change that ends an attempt with usage adds one row: the workflow's total shows it."""
    await submit(store, clock, "w1", {"a": []})
    await run(store, "w1/a", clock.now(), usage=used())
    (total,) = await store.usage_totals("workflow")
    assert total == UsageTotal("w1", 1, 100, 10, 3, 4, 0.5, 0)
    assert (total.tokens, total.total_tokens) == (110, 117)


async def test_usage_of_a_skipped_change_is_not_written(store: Store, clock: FakeClock) -> None:
    """A change whose compare-and-set fails writes no usage: a duplicate or late report of an
    attempt already ended counts nothing."""
    await submit(store, clock, "w1", {"a": []})
    await run(store, "w1/a", clock.now(), usage=used())
    applied = await store.apply([ended("w1/a", usage=used(cost=9.0))], clock.now())
    assert applied.tasks == []
    (total,) = await store.usage_totals("workflow")
    assert (total.attempts, total.cost_usd) == (1, 0.5)


async def test_failed_and_retrying_attempts_count_too(store: Store, clock: FakeClock) -> None:
    """Usage goes with every attempt-ending change, failed or retrying as well as succeeded:
    each attempt is one row."""
    await submit(store, clock, "w1", {"a": []})
    at = clock.now()
    await store.apply([dispatch("w1/a")], at)
    retry = Change("w1/a", T.RETRYING, IN_FLIGHT, attempt=1, usage=used(cost=0.25))
    await store.apply([retry], at)
    await store.apply([Change("w1/a", T.READY, frozenset({T.RETRYING}))], at)
    await store.apply([dispatch("w1/a", 1)], at)
    await store.apply([ended("w1/a", T.FAILED, attempt=2, usage=used(cost=0.5))], at)
    (total,) = await store.usage_totals("task")
    assert (total.key, total.attempts, total.cost_usd, total.input_tokens) == ("w1/a", 2, 0.75, 200)


async def test_two_changes_ending_one_attempt_in_a_batch_write_one_row(
    store: Store, clock: FakeClock
) -> None:
    """Within one apply, the first change that ends an attempt writes its usage; a second one
    for the same attempt does not apply and counts nothing."""
    await submit(store, clock, "w1", {"a": []})
    await store.apply([dispatch("w1/a")], clock.now())
    await store.apply(
        [ended("w1/a", usage=used()), ended("w1/a", usage=used(cost=7.0))], clock.now()
    )
    (total,) = await store.usage_totals("task")
    assert (total.attempts, total.cost_usd) == (1, 0.5)


async def test_unknown_costs_are_counted_not_summed(store: Store, clock: FakeClock) -> None:
    """The known costs are summed; the attempts without one are counted as unpriced; a group
    with no known cost has 0 dollars."""
    await submit(store, clock, "w1", {"a": [], "b": [], "c": []})
    await run(store, "w1/a", clock.now(), usage=used(cost=0.5))
    await run(store, "w1/b", clock.now(), usage=used(cost=None))
    await run(store, "w1/c", clock.now(), usage=used(cost=None, model=None))
    (total,) = await store.usage_totals("workflow")
    assert (total.attempts, total.cost_usd, total.unpriced) == (3, 0.5, 2)
    by_model = await store.usage_totals("model")
    assert [(t.key, t.cost_usd, t.unpriced) for t in by_model] == [
        ("claude-x", 0.5, 1),
        (None, 0.0, 1),
    ]


async def test_totals_group_by_capability_and_model_sorted_by_key(
    store: Store, clock: FakeClock
) -> None:
    """By capability (the task's) and by model, one total per key, sorted."""
    await submit(
        store,
        clock,
        "w1",
        {"a": [], "b": [], "c": []},
        capabilities={"a": "llm.b", "b": "llm.a", "c": "llm.b"},
    )
    await run(store, "w1/a", clock.now(), usage=used(model="m2"))
    await run(store, "w1/b", clock.now(), usage=used(model="m1"))
    await run(store, "w1/c", clock.now(), usage=used(model="m2"))
    caps = await store.usage_totals("capability")
    assert [(t.key, t.attempts, t.output_tokens) for t in caps] == [
        ("llm.a", 1, 10),
        ("llm.b", 2, 20),
    ]
    models = await store.usage_totals("model")
    assert [(t.key, t.attempts) for t in models] == [("m1", 1), ("m2", 2)]


async def test_totals_filter_by_time_workflows_and_label(store: Store, clock: FakeClock) -> None:
    """``since`` keeps rows written at or after it; ``workflow_ids`` and ``label`` keep those of
    the workflows named or labelled so."""
    workflow, tasks = build(clock, "w1", {"a": []})
    await store.create_workflow(replace(workflow, labels={"team": "search"}), tasks)
    workflow, tasks = build(clock, "w2", {"a": []})
    await store.create_workflow(replace(workflow, labels={"team": "ads"}), tasks)
    await run(store, "w1/a", 100.0, usage=used(cost=1.0))
    await run(store, "w2/a", 200.0, usage=used(cost=2.0))
    assert [t.key for t in await store.usage_totals("workflow", since=200.0)] == ["w2"]
    assert [t.key for t in await store.usage_totals("workflow", workflow_ids=["w1"])] == ["w1"]
    assert await store.usage_totals("workflow", workflow_ids=[]) == []
    assert [t.key for t in await store.usage_totals("workflow", label="team=ads")] == ["w2"]
    assert await store.usage_totals("workflow", label="team=nobody") == []


async def test_per_label_totals_fold_from_per_workflow_ones(store: Store, clock: FakeClock) -> None:
    """A label's total is the sum of its workflows' totals; a workflow counts under each label."""
    for wid, labels in (("w1", {"team": "a", "env": "prod"}), ("w2", {"team": "a"})):
        workflow, tasks = build(clock, wid, {"a": []})
        await store.create_workflow(replace(workflow, labels=labels), tasks)
        await run(store, f"{wid}/a", clock.now(), usage=used(cost=1.0))
    workflows = {w.id: w for w in await store.list_workflows()}
    folded = by_label(await store.usage_totals("workflow"), workflows)
    assert [(t.key, t.attempts, t.cost_usd) for t in folded] == [
        ("env=prod", 1, 1.0),
        ("team=a", 2, 2.0),
    ]


async def test_bad_groupings_and_labels_are_refused(store: Store) -> None:
    """Grouping by something else, or a label without ``=``, is a ValueError naming it."""
    with pytest.raises(ValueError, match="cannot group usage by 'label'; allowed: workflow"):
        await store.usage_totals("label")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label 'team' is not name=value"):
        await store.usage_totals("workflow", label="team")


async def test_a_bad_usage_refuses_the_whole_batch(store: Store, clock: FakeClock) -> None:
    """A negative token count or a cost that is not finite refuses the batch, writing nothing."""
    await submit(store, clock, "w1", {"a": []})
    await store.apply([dispatch("w1/a")], clock.now())
    for bad in (Usage(input_tokens=-1), Usage(cost_usd=float("nan")), Usage(cost_usd=-0.5)):
        with pytest.raises(ValueError, match="usage of the change for task 'w1/a'"):
            await store.apply([ended("w1/a", usage=bad)], clock.now())
    assert (await store.get_task("w1/a")).status == T.DISPATCHED
    assert await store.usage_totals("task") == []


async def test_a_workflows_budget_is_kept_and_replaced(store: Store, clock: FakeClock) -> None:
    """A budget written with the workflow reads back; set_workflow_budget replaces it."""
    workflow, tasks = build(clock, "w1", {"a": []})
    await store.create_workflow(replace(workflow, budget=Budget(usd=5.0)), tasks)
    assert (await store.get_workflow("w1")).budget == Budget(usd=5.0)
    await store.set_workflow_budget("w1", Budget(usd=5.0, tokens=2_000_000), clock.now())
    assert (await store.get_workflow("w1")).budget == Budget(usd=5.0, tokens=2_000_000)
    await store.set_workflow_budget("w1", None, clock.now())
    assert (await store.get_workflow("w1")).budget is None
    with pytest.raises(NotFound, match="workflow 'nope' not found"):
        await store.set_workflow_budget("nope", Budget(usd=1.0), clock.now())


async def test_a_budget_write_is_fenced(store: Store, clock: FakeClock) -> None:
    """An old fencing token cannot change a budget."""
    await submit(store, clock, "w1", {"a": []})
    await store.apply([], clock.now(), fence=5)
    with pytest.raises(LeaseLost):
        await store.set_workflow_budget("w1", Budget(usd=1.0), clock.now(), fence=4)
    assert (await store.get_workflow("w1")).budget is None


async def test_a_hold_reason_is_set_with_the_status_and_cleared_by_the_next(
    store: Store, clock: FakeClock
) -> None:
    """Pausing with a reason keeps it on the workflow; resuming (no reason) clears it."""
    await submit(store, clock, "w1", {"a": []})
    reason = "budget: spent $5.02 of $5.00"
    assert await store.set_workflow_status("w1", {W.RUNNING}, W.PAUSED, clock.now(), reason=reason)
    assert (await store.get_workflow("w1")).hold_reason == reason
    assert await store.set_workflow_status("w1", {W.PAUSED}, W.RUNNING, clock.now())
    assert (await store.get_workflow("w1")).hold_reason is None


async def test_usage_dumps_page_by_page_and_loads_back(
    store: Store, backend: StoreBackend, tmp_path: Path, clock: FakeClock
) -> None:
    """dump_usage pages by (task id, attempt); load writes the records as they were, so the
    totals of the loaded store are the same; loading one again is a ConflictError."""
    await submit(store, clock, "w1", {"a": [], "b": []})
    at = clock.now()
    await store.apply([dispatch("w1/a")], at)
    await store.apply([Change("w1/a", T.RETRYING, IN_FLIGHT, attempt=1, usage=used(cost=None))], at)
    await store.apply([Change("w1/a", T.READY, frozenset({T.RETRYING}))], at)
    await run(store, "w1/a", at + 1, usage=used(model=None), attempt=2)
    await run(store, "w1/b", at + 2, usage=used())
    pages, last = [], ("", 0)
    while page := await store.dump_usage(after=last, limit=2):
        pages.append(page)
        last = (page[-1].task_id, page[-1].attempt)
    records = [u for page in pages for u in page]
    assert [(u.task_id, u.attempt) for u in records] == [("w1/a", 1), ("w1/a", 2), ("w1/b", 1)]
    assert [len(page) for page in pages] == [2, 1]
    assert records[0].usage == used(cost=None) and records[1].usage.model is None
    workflows, tasks = await store.dump_workflows(), await store.dump_tasks()
    async with backend.open(tmp_path / "target", clock) as target:
        await target.load(workflows=workflows, tasks=tasks, usage=records)
        assert await target.dump_usage() == records
        assert await target.usage_totals("model") == await store.usage_totals("model")
        with pytest.raises(ConflictError):
            await target.load(usage=records[:1])
