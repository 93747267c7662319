"""Usage and budgets in the scheduler: an attempt's usage is written with its result, counted
in metrics and tokens_per_minute, and a workflow over its budget (or its label's) is held,
never failed, until an operator raises the budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.limits import CapabilityLimits
from agentdeck.core.messages import Event, Report, TaskMessage, decode, encode
from agentdeck.core.metrics import Metrics, MetricsObserver
from agentdeck.core.models import Budget, CommandStatus, Usage
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.scheduler import Scheduler, SchedulerConfig, SchedulerObserver
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W

NO_JITTER = RetryPolicy(max_attempts=3, initial_delay=1.0, max_delay=10.0, jitter=0.0)
USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 1000,
    "cost_usd": 0.6,
    "model": "claude-x",
}


class UsageLog(SchedulerObserver):
    """Keeps what usage_recorded was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Usage]] = []

    async def usage_recorded(self, used: Any, now: float) -> None:
        self.seen += [(t.id, u) for t, u in used]


class Deck:
    """A SQLite store, a memory bus and registry, a leading scheduler, a client, metrics."""

    def __init__(self, store: SqliteStore, bus: MemoryBus, scheduler: Scheduler) -> None:
        self.store, self.bus, self.scheduler = store, bus, scheduler
        self.clock: FakeClock = scheduler.clock  # type: ignore[assignment]
        self.client = Client(store, self.clock, poll=0.001)

    async def settle(self) -> None:
        """Run rounds until nothing more happens."""
        for _ in range(50):
            for _ in range(5):
                await asyncio.sleep(0)
            if not await self.scheduler.tick() and not self.scheduler._inbox:
                return
        raise AssertionError("scheduler did not settle")

    async def submit(self, text: str) -> str:
        return (await self.client.submit(parse_spec(text, limits=SpecLimits()))).id

    async def take(self, capability: str = "llm") -> TaskMessage:
        """One task message off the bus, as an agent takes it."""
        it = self.bus.consume_tasks([capability], prefetch=100)
        delivery = await asyncio.wait_for(anext(it), 2)
        await delivery.ack()
        await it.aclose()  # type: ignore[attr-defined]
        return decode(delivery.body, TaskMessage)

    async def drain(self, capability: str = "llm") -> list[str]:
        """The ids of the tasks whose messages wait on ``capability``'s queue, taken off it."""
        it = self.bus.consume_tasks([capability], prefetch=100)
        taken = []
        try:
            while True:
                delivery = await asyncio.wait_for(anext(it), 0.05)
                await delivery.ack()
                taken.append(decode(delivery.body, TaskMessage).task_id)
        except TimeoutError:
            pass
        await it.aclose()  # type: ignore[attr-defined]
        return taken

    async def report(self, msg: TaskMessage, kind: str, **fields: Any) -> None:
        report = Report(
            kind=kind,
            task_id=msg.task_id,
            attempt=msg.attempt,
            agent_id="agent-1",
            at=self.clock.now(),
            **fields,
        )
        await self.bus.publish_report(encode(report), {})
        await self.settle()


DeckFactory = Callable[..., Any]


@pytest.fixture
async def make_deck(tmp_path: Path, clock: FakeClock) -> AsyncIterator[DeckFactory]:
    """Builds a Deck with the given SchedulerConfig fields and observers."""
    opened: list[tuple[SqliteStore, MemoryBus, Scheduler]] = []

    async def make(*observers: SchedulerObserver, **config: Any) -> Deck:
        store = SqliteStore(tmp_path / f"agentdeck{len(opened)}.db", clock=clock)
        bus = MemoryBus.from_url("memory://", clock=clock)
        registry = MemoryRegistry.from_url("memory://", clock=clock)
        await store.migrate()
        await bus.start()
        await registry.start()
        scheduler = Scheduler(
            store,
            bus,
            registry,
            clock,
            node="node-1",
            config=SchedulerConfig(default_retry=NO_JITTER, **config),
            observers=observers,
        )
        opened.append((store, bus, scheduler))
        return Deck(store, bus, scheduler)

    yield make
    for store, bus, scheduler in opened:
        await scheduler.stop()
        await bus.close()
        await store.close()


ONE = "name: one\ntasks:\n  - {key: a, capability: llm}\n"
TWO = (
    "name: two\n{extra}tasks:\n"
    "  - {{key: a, capability: llm}}\n"
    "  - {{key: b, capability: llm, needs: [a]}}\n"
)


async def test_usage_of_every_kind_of_attempt_end_is_recorded(make_deck: DeckFactory) -> None:
    """Succeeded, failed-and-retried and rate-limited attempts each leave one usage row; a
    duplicate report adds none."""
    log = UsageLog()
    deck = await make_deck(log)
    wf = await deck.submit(ONE)
    await deck.settle()
    first = await deck.take()
    await deck.report(first, "failed", error={"kind": "error", "message": "x"}, usage=USAGE)
    deck.clock.advance(5)
    await deck.settle()
    second = await deck.take()
    limited = {"kind": "rate_limited", "message": "429", "retry_after": 1}
    await deck.report(second, "failed", error=limited, usage={**USAGE, "cost_usd": None})
    deck.clock.advance(5)
    await deck.settle()
    third = await deck.take()
    await deck.report(third, "succeeded", output=1, usage=USAGE)
    await deck.report(third, "succeeded", output=1, usage=USAGE)  # a duplicate
    (total,) = await deck.store.usage_totals("workflow")
    assert (total.key, total.attempts, total.input_tokens) == (wf, 3, 300)
    assert (total.cost_usd, total.unpriced) == (pytest.approx(1.2), 1)
    assert [task_id for task_id, _ in log.seen] == [f"{wf}/a"] * 3


async def test_a_report_without_usage_records_none(make_deck: DeckFactory) -> None:
    """Agents that spend nothing report no usage, and no row is written."""
    deck = await make_deck()
    await deck.submit(ONE)
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1)
    assert await deck.store.usage_totals("workflow") == []


async def test_usage_feeds_the_llm_counters(make_deck: DeckFactory) -> None:
    """Tokens by kind and known costs are counted by model and capability as applied."""
    metrics = Metrics()
    deck = await make_deck(MetricsObserver(metrics))
    await deck.submit(ONE)
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    value = metrics.registry.get_sample_value
    labels = {"model": "claude-x", "capability": "llm"}
    assert value("agentdeck_llm_tokens_total", {"kind": "input", **labels}) == 100
    assert value("agentdeck_llm_tokens_total", {"kind": "output", **labels}) == 20
    assert value("agentdeck_llm_tokens_total", {"kind": "cache_creation", **labels}) == 5
    assert value("agentdeck_llm_tokens_total", {"kind": "cache_read", **labels}) == 1000
    assert value("agentdeck_llm_cost_usd_total", labels) == pytest.approx(0.6)


async def test_usage_feeds_tokens_per_minute(make_deck: DeckFactory) -> None:
    """Input plus output tokens recorded count against the capability's tokens_per_minute:
    once reached, the capability's next task waits for the window."""
    deck = await make_deck(limits={"llm": CapabilityLimits(tokens_per_minute=100)})
    wf = await deck.submit(TWO.format(extra=""))
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    assert deck.scheduler.limiter.held(deck.clock.now()) == {"llm": "100 tokens per minute reached"}
    assert await deck.drain() == []
    deck.clock.advance(61)
    await deck.settle()
    assert await deck.drain() == [f"{wf}/b"]


async def test_a_workflow_over_its_budget_is_held_not_failed(make_deck: DeckFactory) -> None:
    """Spending that reaches the spec's budget pauses the workflow with the reason; its next
    task stays ready and nothing is dispatched."""
    deck = await make_deck()
    events = deck.bus.subscribe_events()
    wf = await deck.submit(TWO.format(extra="budget: {usd: 0.5}\n"))
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    workflow = await deck.store.get_workflow(wf)
    assert (workflow.status, workflow.hold_reason) == (W.PAUSED, "budget: spent $0.60 of $0.50")
    assert (await deck.store.get_task(f"{wf}/b")).status == T.READY
    assert await deck.drain() == []
    seen = []
    while len(seen) < 50:
        try:
            seen.append(decode(await asyncio.wait_for(anext(events), 0.05), Event))
        except TimeoutError:
            break
    assert any(e.topic == "workflow" and e.data.get("status") == "paused" for e in seen), [
        e.data for e in seen
    ]
    await events.aclose()  # type: ignore[attr-defined]


async def test_a_token_budget_holds_too(make_deck: DeckFactory) -> None:
    """A tokens budget counts input plus output tokens (not the cache ones)."""
    deck = await make_deck()
    wf = await deck.submit(TWO.format(extra="budget: {tokens: 120}\n"))
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    assert (await deck.store.get_workflow(wf)).hold_reason == "budget: spent 120 of 120 tokens"


async def test_within_budget_nothing_is_held(make_deck: DeckFactory) -> None:
    """Spending under the budget leaves the workflow running."""
    deck = await make_deck()
    wf = await deck.submit(TWO.format(extra="budget: {usd: 5, tokens: 1000}\n"))
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    assert (await deck.store.get_workflow(wf)).status == W.RUNNING
    assert await deck.drain() == [f"{wf}/b"]


async def test_resume_over_budget_is_refused_saying_why(make_deck: DeckFactory) -> None:
    """Resuming a workflow still over its budget fails, naming the spending and the way out."""
    deck = await make_deck()
    wf = await deck.submit(TWO.format(extra="budget: {usd: 0.5}\n"))
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    queued = await deck.client.command("resume", wf, wait=None)
    await deck.settle()
    done = await deck.store.get_command(queued.id)
    assert done.status == CommandStatus.FAILED
    assert done.result == (
        f"workflow {wf} is over its budget (budget: spent $0.60 of $0.50); raise it first "
        f"(budget {wf} usd=N or tokens=N)"
    )
    assert (await deck.store.get_workflow(wf)).status == W.PAUSED


async def test_raising_the_budget_resumes_a_held_workflow(make_deck: DeckFactory) -> None:
    """The budget action replaces the keys given; a raise too small keeps the hold and says
    so; one that covers the spending resumes the workflow and its next task goes out."""
    deck = await make_deck()
    wf = await deck.submit(TWO.format(extra="budget: {usd: 0.5, tokens: 10000}\n"))
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    small = await deck.client.command("budget", wf, "usd=0.55", wait=None)
    await deck.settle()
    done = await deck.store.get_command(small.id)
    assert done.result == (
        f"budget of workflow {wf} set to usd=0.55, tokens=10000; still held "
        "(budget: spent $0.60 of $0.55)"
    )
    assert (await deck.store.get_workflow(wf)).status == W.PAUSED
    enough = await deck.client.command("budget", wf, "usd=2", wait=None)
    await deck.settle()
    assert (await deck.store.get_command(enough.id)).result.endswith("; resumed")
    workflow = await deck.store.get_workflow(wf)
    assert (workflow.status, workflow.hold_reason, workflow.budget) == (
        W.RUNNING,
        None,
        Budget(usd=2.0, tokens=10000),
    )
    assert await deck.drain() == [f"{wf}/b"]


async def test_an_operator_pause_is_not_resumed_by_a_budget_raise(make_deck: DeckFactory) -> None:
    """A workflow an operator paused stays paused when its budget changes."""
    deck = await make_deck()
    wf = await deck.submit(ONE)
    await deck.settle()
    await deck.client.command("pause", wf, wait=None)
    await deck.settle()
    raised = await deck.client.command("budget", wf, "tokens=5000", wait=None)
    await deck.settle()
    assert (await deck.store.get_command(raised.id)).result == (
        f"budget of workflow {wf} set to tokens=5000"
    )
    assert (await deck.store.get_workflow(wf)).status == W.PAUSED


async def test_a_label_over_its_budget_holds_all_its_workflows(make_deck: DeckFactory) -> None:
    """When a label's workflows together reach its budget, every running workflow carrying it
    is held, one submitted later too; others go on."""
    deck = await make_deck(label_budgets={"team=search": Budget(usd=1.0)})
    labelled = TWO.format(extra="labels: {team: search}\n")
    first = await deck.submit(labelled)
    second = await deck.submit(labelled)
    other = await deck.submit(TWO.format(extra="labels: {team: ads}\n"))
    await deck.settle()
    msgs = {m.workflow_id: m for m in [await deck.take() for _ in range(3)]}
    await deck.report(msgs[first], "succeeded", output=1, usage=USAGE)
    assert (await deck.store.get_workflow(first)).status == W.RUNNING  # $0.60 of $1.00
    assert await deck.drain() == [f"{first}/b"]  # within the budget then
    await deck.report(msgs[second], "succeeded", output=1, usage=USAGE)
    reason = "budget: spent $1.20 of $1.00 (label team=search)"
    for wf in (first, second):
        workflow = await deck.store.get_workflow(wf)
        assert (workflow.status, workflow.hold_reason) == (W.PAUSED, reason)
    await deck.report(msgs[other], "succeeded", output=1)
    assert (await deck.store.get_workflow(other)).status == W.RUNNING
    late = await deck.submit(labelled)
    await deck.settle()
    assert (await deck.store.get_workflow(late)).hold_reason == reason
    assert await deck.drain() == [f"{other}/b"]


async def test_a_new_leader_finds_labels_already_over(
    make_deck: DeckFactory, tmp_path: Path
) -> None:
    """Label spending is read from the Store, so a leader that never saw the usage holds a
    labelled workflow before dispatching it."""
    deck = await make_deck(label_budgets={"team=search": Budget(tokens=100)})
    labelled = TWO.format(extra="labels: {team: search}\n")
    first = await deck.submit(labelled)
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    assert (await deck.store.get_workflow(first)).status == W.PAUSED
    deck.scheduler._labels_over = None  # as a fresh leader starts
    late = await deck.submit(labelled)
    await deck.settle()
    assert (await deck.store.get_workflow(late)).status == W.PAUSED
    assert await deck.drain() == []


async def test_a_label_holds_until_its_budget_is_raised_in_settings(
    make_deck: DeckFactory,
) -> None:
    """A workflow its label holds cannot be resumed, and raising its own budget does not
    release it: the action says the label still holds it."""
    deck = await make_deck(label_budgets={"team=search": Budget(usd=0.5)})
    wf = await deck.submit(TWO.format(extra="labels: {team: search}\n"))
    await deck.settle()
    await deck.report(await deck.take(), "succeeded", output=1, usage=USAGE)
    reason = "budget: spent $0.60 of $0.50 (label team=search)"
    resume = await deck.client.command("resume", wf, wait=None)
    budget = await deck.client.command("budget", wf, "usd=100", wait=None)
    await deck.settle()
    assert (await deck.store.get_command(resume.id)).result.startswith(
        f"workflow {wf} is over its budget ({reason})"
    )
    assert (await deck.store.get_command(budget.id)).result.endswith(f"still held ({reason})")
    assert (await deck.store.get_workflow(wf)).status == W.PAUSED


async def test_a_budget_check_the_store_failed_is_done_next_round(
    make_deck: DeckFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Store failing during the budget check fails the round, not the hold: the next
    round checks again and holds the workflow."""
    deck = await make_deck()
    wf = await deck.submit(TWO.format(extra="budget: {usd: 0.5}\n"))
    await deck.settle()
    msg = await deck.take()
    real = deck.store.usage_totals
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BackendUnavailable("the Store is restarting")
        return await real(*args, **kwargs)

    monkeypatch.setattr(deck.store, "usage_totals", flaky)
    await deck.bus.publish_report(
        encode(
            Report(
                kind="succeeded",
                task_id=msg.task_id,
                attempt=msg.attempt,
                agent_id="agent-1",
                at=deck.clock.now(),
                output=1,
                usage=USAGE,  # type: ignore[arg-type]
            )
        ),
        {},
    )
    for _ in range(5):
        await asyncio.sleep(0)
    with pytest.raises(BackendUnavailable):
        await deck.scheduler.tick()
    assert (await deck.store.get_workflow(wf)).status == W.RUNNING
    deck.clock.advance(1)
    await deck.settle()
    assert (await deck.store.get_workflow(wf)).hold_reason == "budget: spent $0.60 of $0.50"
    assert await deck.drain() == []
