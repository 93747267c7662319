"""Several tasks per message and several reports per message (issue 16): what a batch carries,
when one is made, and that at-least-once, compare-and-set and a lone task's path hold as they
do for one message each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentdeck.agents.context import TaskContext
from agentdeck.agents.reports import ReportBatcher
from agentdeck.agents.shared import Shared
from agentdeck.agents.worker import Worker
from agentdeck.backends.memory import MemoryBus, MemoryRegistry, task_queue
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, MessageError
from agentdeck.core.messages import Report, TaskMessage, batch, decode_batch, encode
from agentdeck.core.models import AgentRecord, AgentState
from agentdeck.core.ports import OutgoingTask
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.scheduler.dispatch import (
    BATCH_BYTES,
    SPREAD,
    SPREAD_READ_EVERY,
    Spread,
    Spreads,
    grouped,
    spreads_of,
)
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T

CAP = "work"


def task(key: str, attempt: int = 1, capability: str = CAP) -> TaskMessage:
    return TaskMessage(
        task_id=f"wf/{key}",
        workflow_id="wf",
        key=key,
        capability=capability,
        attempt=attempt,
        timeout=60.0,
        dispatched_at=0.0,
    )


def report(task_id: str, attempt: int = 1, **extra: Any) -> Report:
    extra.setdefault("kind", "succeeded")
    return Report(task_id=task_id, attempt=attempt, agent_id="ag", at=1.0, **extra)


@dataclass
class RecordedDelivery:
    """A delivery that remembers how it was settled."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    redelivered: bool = False
    settled: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.settled.append("ack")

    async def reject(self, reason: str) -> None:
        self.settled.append(f"reject: {reason}")

    async def requeue(self) -> None:
        self.settled.append("requeue")


def waiting(bus: MemoryBus, capability: str = CAP) -> int:
    """Messages ready in ``capability``'s queue (the memory bus's own count)."""
    return len(bus._queue(task_queue(capability)).messages)


async def turns(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# ------------------------------------------------------------------------------ the codec


def test_a_batch_carries_each_message_as_it_would_travel_alone() -> None:
    """decode_batch gives back the very messages, in order, each with its own headers."""
    body = batch(TaskMessage, [encode(task("a")), encode(task("b"))], [{"traceparent": "1"}, {}])
    items = decode_batch(body, TaskMessage)
    assert [i.message for i in items] == [task("a"), task("b")]
    assert [i.headers for i in items] == [{"traceparent": "1"}, {}]
    assert json.loads(body)["items"][0] == json.loads(encode(task("a")))


def test_a_lone_message_reads_as_a_batch_of_one_without_headers_of_its_own() -> None:
    """Old senders' messages still read: one item, headers None (the delivery's apply)."""
    (item,) = decode_batch(encode(task("a")), TaskMessage)
    assert (item.message, item.headers, item.error) == (task("a"), None, None)


def test_a_bad_item_is_reported_with_its_ids_and_spares_its_neighbours() -> None:
    """One item that is not a task: its error and ids; the others decode."""
    bad = b'{"v":1,"type":"task","task_id":"wf/x","attempt":3}'
    items = decode_batch(batch(TaskMessage, [encode(task("a")), bad]), TaskMessage)
    assert items[0].message == task("a")
    assert items[1].message is None and items[1].ids == ("wf/x", 3)
    assert items[1].error is not None and "workflow_id" in str(items[1].error)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"v":1,"type":"tasks","items":[]}', "items must be a non-empty list"),
        (b'{"v":1,"type":"tasks","items":{}}', "items must be a non-empty list"),
        (b'{"v":1,"type":"tasks","items":[{}],"headers":[]}', "one object per item"),
        (b'{"v":2,"type":"tasks","items":[{}]}', "unknown message version 2"),
        (b"[1]", "expected a JSON object"),
    ],
)
def test_an_unreadable_batch_raises_one_error_naming_what_is_wrong(
    body: bytes, problem: str
) -> None:
    """The body as a whole is refused, with the reason."""
    with pytest.raises(MessageError, match=problem):
        decode_batch(body, TaskMessage)


def test_headers_must_match_the_messages_when_building_a_batch() -> None:
    with pytest.raises(ValueError, match="2 headers for 1 messages"):
        batch(TaskMessage, [encode(task("a"))], [{}, {}])


# ------------------------------------------------------------------------- grouping tasks


def outgoing(n: int, capability: str = CAP, size: int = 0) -> list[OutgoingTask]:
    return [
        OutgoingTask(
            capability,
            encode(task(f"t{i}", capability=capability).model_copy(update={"input": "x" * size})),
            {"traceparent": f"p{i}"},
        )
        for i in range(n)
    ]


def keys(messages: list[OutgoingTask]) -> list[list[str]]:
    return [
        [i.message.key for i in decode_batch(m.body, TaskMessage) if i.message] for m in messages
    ]


def test_few_tasks_go_one_per_message_at_once() -> None:
    """Under 2 x SPREAD tasks of a capability in a round: no batch at all."""
    messages = outgoing(2 * SPREAD - 1)
    assert grouped(messages, 50) == messages


def test_under_load_tasks_go_in_batches_with_their_own_headers() -> None:
    """1,000 tasks: batches of 50 (the most), in order, each task keeping its trace header."""
    out = grouped(outgoing(1000), 50)
    assert [len(k) for k in keys(out)] == [50] * 20
    assert [k for ks in keys(out) for k in ks] == [f"t{i}" for i in range(1000)]
    items = decode_batch(out[1].body, TaskMessage)
    assert [i.headers for i in items][:2] == [{"traceparent": "p50"}, {"traceparent": "p51"}]


def test_a_batch_is_spread_over_at_least_spread_messages() -> None:
    """100 tasks: batches of 100 // SPREAD, so several agents can share them."""
    out = grouped(outgoing(100), 50)
    assert {len(k) for k in keys(out)} <= {100 // SPREAD, 100 % (100 // SPREAD)}
    assert len(out) >= SPREAD


def test_each_capability_is_grouped_on_its_own() -> None:
    """A busy capability is batched, a quiet one is not."""
    out = grouped(outgoing(5, capability="quiet") + outgoing(640), 50)
    assert [m.capability for m in out].count("quiet") == 5
    assert all(len(k) == 1 for m, k in zip(out, keys(out), strict=True) if m.capability == "quiet")
    assert {len(k) for m, k in zip(out, keys(out), strict=True) if m.capability == CAP} == {40}


def test_large_task_messages_are_not_batched_past_the_byte_limit() -> None:
    """A batch stops growing before BATCH_BYTES."""
    out = grouped(outgoing(64, size=BATCH_BYTES // 3), 50)
    assert all(
        len(m.body) <= BATCH_BYTES or len(k) == 1 for m, k in zip(out, keys(out), strict=True)
    )
    assert sum(len(k) for k in keys(out)) == 64


def test_one_task_per_message_when_configured() -> None:
    messages = outgoing(1000)
    assert grouped(messages, 1) == messages


def agent(
    name: str,
    concurrency: int = 200,
    state: AgentState = AgentState.UP,
    caps: tuple[str, ...] = (CAP,),
) -> AgentRecord:
    return AgentRecord(name, name, caps, concurrency, state, 0.0, 0.0)


def test_two_agents_share_a_round_in_few_messages() -> None:
    """Two agents serving the capability: a round of 50 tasks goes in batches of 50 // 4, not
    in 16 messages or more (each agent still gets two)."""
    spreads = spreads_of([agent("a"), agent("b"), agent("c", caps=("other",))])
    assert spreads == {CAP: Spread(messages=4, largest=200), "other": Spread(2, 200)}
    out = grouped(outgoing(50), 50, spreads)
    assert [len(k) for k in keys(out)] == [12, 12, 12, 12, 2]
    assert [k for ks in keys(out) for k in ks] == [f"t{i}" for i in range(50)]


def test_a_batch_never_holds_more_tasks_than_an_agent_has_slots() -> None:
    """The agent with the fewest slots bounds the batch; draining and down agents count not."""
    spreads = spreads_of(
        [
            agent("a", 3),
            agent("b"),
            agent("c", 1, AgentState.DRAINING),
            agent("d", 1, AgentState.DOWN),
        ]
    )
    assert spreads == {CAP: Spread(messages=4, largest=3)}
    assert {len(k) for k in keys(grouped(outgoing(50), 50, spreads))} == {3, 2}
    many = spreads_of([agent(f"a{i}") for i in range(20)])
    assert many == {CAP: Spread(messages=SPREAD, largest=200)}


class CountingRegistry(MemoryRegistry):
    """A memory registry that counts its listings and can fail them."""

    reads = 0
    fail = False

    async def agents(self, capability: str | None = None) -> list[AgentRecord]:
        self.reads += 1
        if self.fail:
            raise BackendUnavailable("redis is away")
        return await super().agents(capability)


def round_of(n: int, capability: str = CAP) -> list[Any]:
    return [type("T", (), {"capability": capability})() for _ in range(n)]


async def test_spreads_read_the_registry_at_most_once_a_second(clock: FakeClock) -> None:
    """No read for a round too small to batch; then one read per SPREAD_READ_EVERY seconds, the
    last view kept when the registry fails; a capability no agent serves keeps SPREAD."""
    registry = CountingRegistry.from_url("memory://", clock=clock)
    await registry.start()
    await registry.register(agent("a"), ttl=60)
    spreads = Spreads(registry, clock)
    assert await spreads.of(round_of(3)) == {}
    assert registry.reads == 0
    assert await spreads.of(round_of(50)) == {CAP: Spread(2, 200)}
    await registry.register(agent("b"), ttl=60)
    assert await spreads.of(round_of(50)) == {CAP: Spread(2, 200)}  # not read again yet
    assert registry.reads == 1
    clock.advance(SPREAD_READ_EVERY)
    assert await spreads.of(round_of(50)) == {CAP: Spread(4, 200)}
    registry.fail = True
    clock.advance(SPREAD_READ_EVERY)
    assert await spreads.of(round_of(50) + round_of(50, "quiet")) == {CAP: Spread(4, 200)}
    assert registry.reads == 3
    await registry.close()


# ---------------------------------------------------------------------- batching reports


class CountingBus(MemoryBus):
    """A memory bus that counts report publishes and can fail the next ones."""

    fail = 0
    bodies: list[bytes]

    async def publish_report(self, body: bytes, headers: Mapping[str, str]) -> None:
        if not hasattr(self, "bodies"):
            self.bodies = []
        if self.fail:
            self.fail -= 1
            raise BackendUnavailable("RabbitMQ at 127.0.0.1:5672/ is unreachable")
        self.bodies.append(body)
        await super().publish_report(body, headers)


@pytest.fixture
async def bus(clock: FakeClock) -> AsyncIterator[CountingBus]:
    bus = CountingBus.from_url("memory://", clock=clock)
    await bus.start()
    yield bus
    await bus.close()


async def test_reports_ready_in_one_turn_leave_as_one_message(bus: CountingBus) -> None:
    """Ten reports handed over at once: one publish, each caller told when it is confirmed."""
    batcher = ReportBatcher(bus)
    await asyncio.gather(*(batcher.publish(encode(report(f"wf/{i}")), {}) for i in range(10)))
    (body,) = bus.bodies
    assert [i.message.task_id for i in decode_batch(body, Report) if i.message] == [
        f"wf/{i}" for i in range(10)
    ]


async def test_a_lone_report_leaves_alone_at_once(bus: CountingBus) -> None:
    """Nothing waits for a batch to fill: one report is published as itself, that turn."""
    batcher = ReportBatcher(bus)
    sent = asyncio.ensure_future(batcher.publish(encode(report("wf/a")), {"traceparent": "t"}))
    await turns(5)
    assert sent.done()
    assert bus.bodies == [encode(report("wf/a"))]


async def test_a_batch_is_bounded_in_reports(bus: CountingBus) -> None:
    batcher = ReportBatcher(bus, max_reports=4)
    await asyncio.gather(*(batcher.publish(encode(report(f"wf/{i}")), {}) for i in range(10)))
    assert [len(decode_batch(b, Report)) for b in bus.bodies] == [4, 4, 2]


async def test_a_refused_batch_fails_every_report_in_it(bus: CountingBus) -> None:
    """Each caller gets the bus's error, and may try again (its report then goes later)."""
    batcher = ReportBatcher(bus)
    bus.fail = 1
    results = await asyncio.gather(
        *(batcher.publish(encode(report(f"wf/{i}")), {}) for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, BackendUnavailable) for r in results)
    assert not hasattr(bus, "bodies") or bus.bodies == []


# -------------------------------------------------------------------- a shared delivery


@pytest.mark.parametrize(
    ("outcomes", "settled"),
    [
        (["ack", "ack", "ack"], ["ack"]),
        (["ack", "reject", "ack"], ["reject: bad (a batch: every task of it set aside)"]),
        (["reject", "requeue", "ack"], ["requeue"]),
    ],
)
async def test_a_shared_delivery_is_settled_once_when_every_part_is(
    outcomes: list[str], settled: list[str]
) -> None:
    """Nothing settles before the last part; a requeue wins, then a reject, then ack."""
    delivery = RecordedDelivery(b"")
    shared = Shared(delivery, len(outcomes))
    parts = [shared.part(None, b"") for _ in outcomes]
    for i, (part, how) in enumerate(zip(parts, outcomes, strict=True)):
        assert delivery.settled == []
        await (part.reject("bad") if how == "reject" else getattr(part, how)())
        await part.ack()  # a second settle of a part counts for nothing
        assert delivery.settled == ([] if i < len(outcomes) - 1 else settled)


# ------------------------------------------------------------- the worker and a batch


class Env:
    def __init__(self, clock: FakeClock) -> None:
        self.bus = CountingBus.from_url("memory://", clock=clock)
        self.registry = MemoryRegistry.from_url("memory://", clock=clock)
        self.clock = clock
        self.reports: list[Report] = []

    async def collect(self) -> None:
        async for delivery in self.bus.consume_reports():
            self.reports += [i.message for i in decode_batch(delivery.body, Report) if i.message]
            await delivery.ack()


@pytest.fixture
async def env(clock: FakeClock) -> AsyncIterator[Env]:
    environment = Env(clock)
    await environment.bus.start()
    collector = asyncio.create_task(environment.collect())
    yield environment
    collector.cancel()
    await asyncio.gather(collector, return_exceptions=True)
    await environment.bus.close()


async def run_batch(env: Env, body: bytes, handler: Any, concurrency: int = 4) -> Worker:
    worker = Worker(env.bus, env.registry, {CAP: handler}, name="w", clock=env.clock,
                    concurrency=concurrency, started_after=60)  # fmt: skip
    runner = asyncio.create_task(worker.run())
    await env.bus.publish_tasks([OutgoingTask(CAP, body, {})])
    await turns(300)
    await worker.stop(0)
    await runner
    return worker


async def echo_key(ctx: TaskContext) -> Any:
    return ctx.key


async def test_an_agent_runs_every_task_of_a_batch_and_acks_it_once_all_are_reported(
    env: Env,
) -> None:
    """Ten tasks in one message, four slots: all run, ten results, the message acked."""
    body = batch(TaskMessage, [encode(task(f"k{i}")) for i in range(10)])
    worker = await run_batch(env, body, echo_key)
    assert sorted((r.task_id, r.kind, r.output) for r in env.reports) == sorted(
        (f"wf/k{i}", "succeeded", f"k{i}") for i in range(10)
    )
    assert worker.succeeded == 10
    assert waiting(env.bus) == 0  # acked, not given back
    assert len(env.bus.bodies) < 10  # results that were ready together went together


async def test_a_bad_item_fails_its_task_and_sets_the_message_aside_the_others_run(
    env: Env,
) -> None:
    """The malformed item's attempt fails at once; the good ones succeed; dead-lettered."""
    bad = b'{"v":1,"type":"task","task_id":"wf/bad","attempt":2}'
    body = batch(TaskMessage, [encode(task("a")), bad, encode(task("b"))])
    await run_batch(env, body, echo_key)
    by_task = {r.task_id: r for r in env.reports}
    assert by_task["wf/a"].kind == by_task["wf/b"].kind == "succeeded"
    failed = by_task["wf/bad"]
    assert (failed.kind, failed.attempt) == ("failed", 2)
    assert failed.error is not None and failed.error.kind == "malformed"
    assert failed.error.retryable is False
    (letter,) = await env.bus.dead_letters()
    assert "a batch" in letter.reason


async def test_stopping_mid_batch_gives_the_whole_message_back(env: Env) -> None:
    """A shutdown with some tasks of a batch unfinished: the message is requeued."""
    release = asyncio.Event()

    async def slow_b(ctx: TaskContext) -> Any:
        if ctx.key == "b":
            await release.wait()
        return ctx.key

    body = batch(TaskMessage, [encode(task("a")), encode(task("b"))])
    await run_batch(env, body, slow_b)
    assert [r.task_id for r in env.reports] == ["wf/a"]
    assert waiting(env.bus) == 1  # back in the queue: b runs again, a's rerun is stale


async def test_tasks_past_the_slots_wait_without_a_task_and_go_back_unstarted_at_a_stop(
    env: Env,
) -> None:
    """Six tasks in one message, two slots held by handlers that never end: two run, four
    wait as jobs without an asyncio task of their own (all six held); a stop starts none of
    the four, and the whole message goes back once."""
    started: list[str] = []
    never = asyncio.Event()

    async def stuck(ctx: TaskContext) -> Any:
        started.append(ctx.key)
        await never.wait()

    worker = Worker(env.bus, env.registry, {CAP: stuck}, name="w", clock=env.clock,
                    concurrency=2, started_after=60)  # fmt: skip
    runner = asyncio.create_task(worker.run())
    body = batch(TaskMessage, [encode(task(f"k{i}")) for i in range(6)])
    await env.bus.publish_tasks([OutgoingTask(CAP, body, {})])
    await turns(300)
    jobs = [t for t in asyncio.all_tasks() if t.get_name().endswith(":job")]
    assert (len(jobs), worker.in_flight, started) == (2, 6, ["k0", "k1"])
    await worker.stop(0)
    await runner
    assert started == ["k0", "k1"]
    assert env.reports == []
    assert waiting(env.bus) == 1


async def test_a_slot_freed_goes_to_the_task_waiting_longest(env: Env) -> None:
    """One slot, five tasks: they run one after the other in the batch's order."""
    order: list[str] = []

    async def note(ctx: TaskContext) -> Any:
        order.append(ctx.key)
        await asyncio.sleep(0)
        return ctx.key

    body = batch(TaskMessage, [encode(task(f"k{i}")) for i in range(5)])
    worker = await run_batch(env, body, note, concurrency=1)
    assert order == [f"k{i}" for i in range(5)]
    assert worker.succeeded == 5


# ---------------------------------------------------------- the scheduler and a batch


@pytest.fixture
async def scheduler(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Scheduler, Client]]:
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    scheduler = Scheduler(store, bus, registry, clock, node="n1", config=SchedulerConfig())
    yield scheduler, Client(store, clock, poll=0.001)
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


async def dispatched(scheduler: Scheduler, client: Client, n: int) -> list[str]:
    lines = "".join(f"  - {{key: t{i}, capability: echo}}\n" for i in range(n))
    wf = await client.submit(
        parse_spec(f"name: w\ntasks:\n{lines}", fmt="yaml", limits=SpecLimits())
    )
    await scheduler.tick()
    return [f"{wf.id}/t{i}" for i in range(n)]


async def test_a_batch_of_reports_is_applied_and_acked_once_all_are_written(
    scheduler: tuple[Scheduler, Client],
) -> None:
    """One delivery, three results: three tasks succeed, one ack."""
    sched, client = scheduler
    ids = await dispatched(sched, client, 3)
    delivery = RecordedDelivery(batch(Report, [encode(report(t, output=t)) for t in ids]))
    sched._inbox.append(delivery)
    await sched.tick()
    assert delivery.settled == ["ack"]
    for t in ids:
        done = await sched.store.get_task(t)
        assert (done.status, done.output) == (T.SUCCEEDED, t)


async def test_a_batch_redelivered_after_a_crash_changes_nothing_the_second_time(
    scheduler: tuple[Scheduler, Client],
) -> None:
    """The scheduler died after writing, before acking: the copy is acked and ignored."""
    sched, client = scheduler
    ids = await dispatched(sched, client, 2)
    body = batch(Report, [encode(report(t, output=t)) for t in ids])
    sched._inbox.append(RecordedDelivery(body))
    await sched.tick()
    events = [await sched.store.task_events(t) for t in ids]
    again = RecordedDelivery(body, redelivered=True)
    sched._inbox.append(again)
    await sched.tick()
    assert again.settled == ["ack"]
    assert [await sched.store.task_events(t) for t in ids] == events


async def test_a_bad_report_in_a_batch_is_left_out_and_the_rest_applied(
    scheduler: tuple[Scheduler, Client],
) -> None:
    sched, client = scheduler
    (a, b) = await dispatched(sched, client, 2)
    bad = b'{"v":1,"type":"report","kind":"exploded","task_id":"x"}'
    delivery = RecordedDelivery(batch(Report, [encode(report(a)), bad, encode(report(b))]))
    sched._inbox.append(delivery)
    await sched.tick()
    assert delivery.settled == ["ack"]
    assert {(await sched.store.get_task(t)).status for t in (a, b)} == {T.SUCCEEDED}


async def test_the_scheduler_sends_a_lone_task_alone_and_a_crowd_in_batches(
    scheduler: tuple[Scheduler, Client],
) -> None:
    """One task: a plain task message. 500 tasks: batches (the round's batch_size)."""
    sched, client = scheduler
    await dispatched(sched, client, 1)
    await dispatched(sched, client, 500)
    consumer = sched.bus.consume_tasks(["echo"], prefetch=1000)
    bodies = []
    while True:
        try:
            delivery = await asyncio.wait_for(anext(consumer), 0.05)
        except TimeoutError:
            break
        bodies.append(delivery.body)
        await delivery.ack()
    await consumer.aclose()  # type: ignore[attr-defined]
    assert json.loads(bodies[0])["type"] == "task"
    sizes = [len(decode_batch(b, TaskMessage)) for b in bodies[1:]]
    assert sum(sizes) == 500 and max(sizes) == 500 // SPREAD


def test_tasks_per_message_is_a_scheduler_setting() -> None:
    """[scheduler] tasks_per_message reaches the scheduler (1 turns batches off)."""
    from agentdeck.core.settings import Settings
    from agentdeck.tui.wiring import scheduler_config

    settings = Settings.load(config_path=None, scheduler={"tasks_per_message": 1})
    assert scheduler_config(settings).tasks_per_message == 1
    assert SchedulerConfig().tasks_per_message == 50


def test_the_documented_batch_example_decodes_and_its_table_lists_the_envelope() -> None:
    """docs/messages.md's batch section: the example reads as two reports; the table names
    every key :func:`batch` writes."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "messages.md").read_text()
    section = doc[doc.index("## Batches") :]
    (example,) = re.findall(r"```json\n(.*?)```", section, re.S)
    items = decode_batch(example.encode(), Report)
    assert [i.message.task_id for i in items if i.message] == ["3f2a9c1b7d4e/a", "3f2a9c1b7d4e/b"]
    table = section[section.index("| field |") :].splitlines()[2:]
    rows = [line.split("|")[1].strip().strip("`") for line in table if line.startswith("|")]
    body = batch(TaskMessage, [encode(task("a"))], [{"traceparent": "x"}])
    assert rows == list(json.loads(body))


@pytest.mark.parametrize(
    "body",
    [
        batch(Report, [encode(report("wf/a")), encode(report("wf/b"))]),
        batch(TaskMessage, [encode(task("a")), encode(task("b"))], [{"traceparent": "1"}, {}]),
        encode(task("a")),
        encode(task("a").model_copy(update={"input": {"items": [1, 2]}})),
        b'{"v":1,"type":"tasks","items":[{"v":1,"type":"task","task_id":"wf/x","attempt":3}]}',
        b'{"v":1,"type":"reports","items":[{"type":"report","kind":"started","task_id":"t",'
        b'"attempt":1,"agent_id":"a","at":NaN}]}',
    ],
)
def test_the_fast_path_reads_exactly_what_the_careful_path_reads(body: bytes) -> None:
    """decode_batch's one-pass read agrees with the item-by-item reading of the same body."""
    from agentdeck.core import messages

    kind: type[Any] = TaskMessage if b'"task"' in body or b'"tasks"' in body else Report
    fast = decode_batch(body, kind)
    careful = messages._careful(body, kind)
    # repr: a NaN is not equal to itself, its text is
    assert [repr((i.message, i.headers, str(i.error), i.ids)) for i in fast] == [
        repr((i.message, i.headers, str(i.error), i.ids)) for i in careful
    ]


async def test_the_scheduler_s_task_messages_are_valid_task_messages(
    scheduler: tuple[Scheduler, Client],
) -> None:
    """Built without validation, they still decode as the agent reads them, to the field."""
    sched, client = scheduler
    (task_id,) = await dispatched(sched, client, 1)
    consumer = sched.bus.consume_tasks(["echo"], prefetch=10)
    delivery = await asyncio.wait_for(anext(consumer), 1)
    await delivery.ack()
    await consumer.aclose()  # type: ignore[attr-defined]
    (item,) = decode_batch(delivery.body, TaskMessage)
    assert item.message is not None
    assert (item.message.task_id, item.message.attempt, item.message.capability) == (
        task_id,
        1,
        "echo",
    )
    assert json.loads(delivery.body) == json.loads(encode(item.message))


def test_a_part_carries_its_task_s_own_headers_or_else_the_message_s() -> None:
    """A batched task's trace header is its own; a batch without headers lends its message's."""
    shared = Shared(RecordedDelivery(b"", headers={"traceparent": "message"}), 2)
    assert shared.part({"traceparent": "own"}, b"").headers == {"traceparent": "own"}
    assert shared.part(None, b"").headers == {"traceparent": "message"}
