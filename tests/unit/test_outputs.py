"""Large outputs by reference: kept in the blob store (by the agent, else the scheduler),
handed to dependents as references, resolved by the agents that read them and by show."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agentdeck.agents.context import TaskContext
from agentdeck.agents.worker import Worker
from agentdeck.backends.files import FileBlobStore
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import AgentdeckError, BackendUnavailable
from agentdeck.core.messages import Event, Report, TaskMessage, decode, encode
from agentdeck.core.models import JSON, Change
from agentdeck.core.outputs import OutputCache, OutputStore, is_ref
from agentdeck.core.ports import OutgoingTask
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.settings import Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TASK_TERMINAL
from agentdeck.core.states import TaskStatus as T
from agentdeck.tui.cli import main
from agentdeck.tui.wiring import agent_outputs

BIG = {"rows": ["x" * 50] * 20}  # about 1 kB of JSON
TERMINAL = {s.value for s in TASK_TERMINAL}
LIMIT = 10.0
"""Seconds of real time a test waits for work done in a thread (it takes milliseconds)."""


class BrokenBlobs(FileBlobStore):
    """A blob store whose writes fail (S3 unreachable); reads still work."""

    async def put(self, key: str, data: bytes) -> None:
        raise BackendUnavailable(f"cannot reach S3 to put {key}")


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[FileBlobStore]:
    store = FileBlobStore(tmp_path / "blobs")
    await store.start()
    yield store
    await store.close()


async def test_small_outputs_stay_inline_and_large_ones_become_references(
    blobs: FileBlobStore,
) -> None:
    """Under the limit the output is returned as is; over it, a reference to a gzip object."""
    outputs = OutputStore(blobs, limit=200)
    assert await outputs.offload("w/a", 1, {"ok": True}) == {"ok": True}
    assert await outputs.offload("w/a", 1, BIG, size_hint=100) == BIG  # hint says small
    ref = await outputs.offload("w/a", 2, BIG)
    assert is_ref(ref) and ref["$blob"] == "outputs/w/a/attempt-2.json.gz"
    assert ref["size"] == len(json.dumps(BIG, separators=(",", ":")))
    assert json.loads(gzip.decompress(await blobs.get(ref["$blob"]))) == BIG
    assert await outputs.resolve(ref) == BIG
    assert await outputs.resolve(3) == 3


async def test_limit_zero_stores_nothing_but_still_resolves(blobs: FileBlobStore) -> None:
    """A scheduler set to keep outputs inline still resolves the references agents made."""
    ref = await OutputStore(blobs, limit=10).offload("w/a", 1, BIG)
    inline = OutputStore(blobs, limit=0)
    assert await inline.offload("w/b", 1, BIG) == BIG
    assert await inline.resolve(ref) == BIG
    with pytest.raises(ValueError, match="got -1"):
        OutputStore(blobs, limit=-1)


async def test_a_damaged_or_missing_object_is_an_error(blobs: FileBlobStore) -> None:
    """Resolving a reference whose object changed or vanished names the object."""
    ref = await OutputStore(blobs, limit=10).offload("w/a", 1, BIG)
    reader = OutputStore(blobs, limit=10)  # another process: nothing cached
    await blobs.put(ref["$blob"], gzip.compress(b'{"other": 1}'))
    with pytest.raises(AgentdeckError, match="damaged"):
        await reader.resolve(ref)
    await blobs.delete(ref["$blob"])
    with pytest.raises(AgentdeckError, match="missing"):
        await reader.resolve(ref)


async def test_a_store_reads_each_object_once_and_remembers_what_it_wrote(
    blobs: FileBlobStore,
) -> None:
    """The second read of an output is a cache hit, not a blob store read; an output this
    store wrote for its agent is in its cache already (a pipeline's next step reads it)."""
    writer = OutputStore(blobs, limit=10)
    ref = await writer.offload("w/a", 1, BIG)
    assert await writer.resolve(ref) == BIG and writer.fetched == 0
    reader = OutputStore(blobs, limit=10)
    assert await reader.resolve(ref) == BIG and await reader.resolve(ref) == BIG
    assert reader.fetched == 1 and (reader.cache.hits, reader.cache.misses) == (1, 1)
    assert await reader.read(ref) == json.dumps(BIG, separators=(",", ":")).encode()
    assert reader.fetched == 2  # read() always goes to the blob store


async def test_readers_asking_at_once_share_one_read(blobs: FileBlobStore) -> None:
    """A fan-out's dependents starting together read the object once between them; a failed
    read is not remembered, so the next reader tries again."""
    ref = await OutputStore(blobs, limit=10).offload("w/a", 1, BIG)
    reader = OutputStore(blobs, limit=10)
    texts = await asyncio.gather(*(reader.text(ref) for _ in range(5)))
    assert len(set(texts)) == 1 and reader.fetched == 1
    gone = await OutputStore(blobs, limit=10).offload("w/b", 1, BIG)
    await blobs.delete(gone["$blob"])
    for _ in range(2):
        with pytest.raises(AgentdeckError, match="missing"):
            await reader.text(gone)


async def test_the_scheduler_safety_net_does_not_fill_its_cache(blobs: FileBlobStore) -> None:
    """What the scheduler stores for an agent without a blob store is not cached by it: the
    scheduler never reads outputs, and its agents may live elsewhere."""
    outputs = OutputStore(blobs, limit=10)
    assert is_ref(await outputs.keep("w/a", 1, BIG))
    assert len(outputs.cache) == 0


def test_the_cache_drops_the_least_recently_used_output_to_stay_within_its_bytes() -> None:
    """Bounded by bytes of JSON, least recently used first; an output larger than the whole
    cache is not kept; a negative bound is refused, naming it."""
    cache = OutputCache(max_bytes=10)
    a, b, c = ({"$blob": f"k/{n}", "sha256": n} for n in "abc")
    cache.put(a, b"aaaa")
    cache.put(b, b"bbbb")
    assert cache.get(a) == b"aaaa"  # a is now the most recent
    cache.put(c, b"cccc")  # 12 bytes: b goes
    assert (cache.get(b), cache.get(a), cache.get(c)) == (None, b"aaaa", b"cccc")
    assert (cache.bytes, cache.evicted, cache.hits, cache.misses) == (8, 1, 3, 1)
    cache.put({"$blob": "k/huge", "sha256": "h"}, b"x" * 11)
    assert cache.get({"$blob": "k/huge", "sha256": "h"}) is None and cache.bytes == 8
    same_key_other_object = {"$blob": "k/a", "sha256": "changed"}
    assert cache.get(same_key_other_object) is None
    with pytest.raises(ValueError, match="got -1"):
        OutputCache(max_bytes=-1)


@pytest.mark.parametrize("s3_down", [False, True], ids=["stored", "blob-store-down"])
async def test_scheduler_keeps_large_output_by_reference_and_hands_it_downstream(
    tmp_path: Path, clock: FakeClock, blobs: FileBlobStore, s3_down: bool
) -> None:
    """A's large output, sent inline by its agent, is a reference in the Store (or, with the
    blob store down, kept inline there rather than lost); B's message carries what the Store
    holds (the reference, or the output itself), and the scheduler reads no object."""
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    if s3_down:
        blobs = BrokenBlobs(tmp_path / "broken")
        await blobs.start()
    outputs = OutputStore(blobs, limit=200)
    scheduler = Scheduler(store, bus, registry, clock, node="n", outputs=outputs)

    async def settle() -> None:
        for _ in range(20):
            for _ in range(5):
                await asyncio.sleep(0)
            if not await scheduler.tick() and not scheduler._inbox:
                return

    async def take() -> TaskMessage:
        it = bus.consume_tasks(["echo"], prefetch=10)
        delivery = await asyncio.wait_for(anext(it), 2)
        await delivery.ack()
        await it.aclose()  # type: ignore[attr-defined]
        return decode(delivery.body, TaskMessage)

    try:
        spec = (
            "name: w\ntasks: [{key: a, capability: echo}, {key: b, capability: echo, needs: [a]}]"
        )
        wf = await Client(store, clock).submit(parse_spec(spec, fmt="yaml", limits=SpecLimits()))
        await settle()
        a = await take()
        for kind, output in (("started", None), ("succeeded", BIG)):
            report = Report(
                kind=kind,  # type: ignore[arg-type]
                task_id=a.task_id,
                attempt=a.attempt,
                agent_id="agent-1",
                at=clock.now(),
                output=output,
            )
            await bus.publish_report(encode(report), {})
        await settle()
        stored = await store.get_task(f"{wf.id}/a")
        assert stored.status is T.SUCCEEDED
        assert stored.output == BIG if s3_down else is_ref(stored.output)
        b = await take()
        if s3_down:
            assert b.upstream == {"a": BIG}
        else:
            assert b.upstream == {"a": stored.output} and outputs.fetched == 0
            assert await OutputStore(blobs, limit=0).resolve(b.upstream["a"]) == BIG
    finally:
        await scheduler.stop()
        await store.close()


def test_show_resolves_a_referenced_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`agentdeck show WF/KEY --json` prints the whole output, not the reference."""
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for var in ("AGENTDECK_STORE_URL", "AGENTDECK_BLOB_URL"):
        monkeypatch.delenv(var, raising=False)
    spec = tmp_path / "one.yaml"
    spec.write_text("name: one\ntasks: [{key: a, capability: echo}]\n")
    runner = CliRunner()
    wf = runner.invoke(main, ["submit", str(spec)], catch_exceptions=False).output.strip()

    async def finish_with_big_output() -> None:
        blobs = FileBlobStore(tmp_path / "blobs")
        await blobs.start()
        ref = await OutputStore(blobs, limit=10).offload(f"{wf}/a", 1, BIG)
        async with SqliteStore(tmp_path / "agentdeck.db", clock=FakeClock()) as store:
            tid = f"{wf}/a"
            await store.apply(
                [Change(tid, T.DISPATCHED, frozenset({T.READY}), values={"attempt": 1})], 1
            )
            await store.apply(
                [Change(tid, T.SUCCEEDED, frozenset({T.DISPATCHED}), values={"output": ref})], 2
            )

    asyncio.run(finish_with_big_output())
    shown = runner.invoke(main, ["show", f"{wf}/a", "--json"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["task"]["output"] == BIG


# --------------------------------------------------------------- offloaded by the agent


@dataclass
class Wire:
    """The reports an agent publishes, with the size of each message on the bus."""

    reports: list[tuple[Report, int]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once a final (succeeded or failed) report is in."""

    async def publish_report(self, body: bytes, headers: Mapping[str, str]) -> None:
        report = decode(body, Report)
        self.reports.append((report, len(body)))
        if report.kind != "started":
            self.ended.set()

    def final(self, task_id: str) -> tuple[Report, int]:
        (last,) = [(r, n) for r, n in self.reports if r.task_id == task_id and r.kind != "started"]
        return last


async def run_one(
    clock: FakeClock, outputs: OutputStore, output: JSON, **options: Any
) -> tuple[Report, int]:
    """Run task ``wf/a`` (attempt 1) returning ``output`` on a worker keeping its outputs in
    ``outputs``; its final report and the size of that report on the bus."""
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    wire = Wire()
    bus.publish_report = wire.publish_report  # type: ignore[method-assign]
    await bus.start()

    async def handler(ctx: TaskContext) -> JSON:
        return output

    worker = Worker(
        bus, registry, {"make": handler}, name="w", clock=clock, outputs=outputs, **options
    )
    message = TaskMessage(
        task_id="wf/a",
        workflow_id="wf",
        key="a",
        capability="make",
        attempt=1,
        timeout=60,
        dispatched_at=0.0,
    )
    await bus.publish_tasks([OutgoingTask("make", encode(message), {})])
    running = asyncio.create_task(worker.run())
    try:
        # The offload compresses in a thread, so the fake clock alone cannot bring the report.
        await asyncio.wait_for(wire.ended.wait(), LIMIT)
        return wire.final("wf/a")
    finally:
        await worker.stop(0)
        await running
        await bus.close()


async def test_the_agent_reports_only_the_reference_to_a_large_output(
    clock: FakeClock, blobs: FileBlobStore
) -> None:
    """Over the limit, the agent stores the output itself under the scheduler's key scheme and
    its report on the bus is small; under it, the output travels in the report."""
    report, size = await run_one(clock, OutputStore(blobs, limit=200), BIG)
    assert report.kind == "succeeded" and is_ref(report.output)
    assert report.output["$blob"] == "outputs/wf/a/attempt-1.json.gz"
    assert size < len(json.dumps(BIG)) / 2
    assert await OutputStore(blobs, limit=200).resolve(report.output) == BIG
    small, _ = await run_one(clock, OutputStore(blobs, limit=200), {"ok": True})
    assert small.output == {"ok": True}


async def test_a_failed_blob_write_sends_an_output_the_bus_takes_inline(
    clock: FakeClock, tmp_path: Path
) -> None:
    """S3 down: an output the bus can carry goes inside the report (the scheduler stores it
    in its turn) rather than failing work that succeeded."""
    broken = BrokenBlobs(tmp_path / "broken")
    await broken.start()
    report, size = await run_one(clock, OutputStore(broken, limit=200), BIG, inline_fallback=4096)
    assert report.kind == "succeeded" and report.output == BIG
    assert size > len(json.dumps(BIG, separators=(",", ":")))


async def test_a_failed_blob_write_of_an_output_too_large_for_the_bus_fails_the_attempt(
    clock: FakeClock, tmp_path: Path
) -> None:
    """S3 down and the output over what the bus takes: the attempt fails, retryable, saying
    why; the retry policy reruns it (bounded by its attempts), as after a lost result."""
    broken = BrokenBlobs(tmp_path / "broken")
    await broken.start()
    report, _ = await run_one(clock, OutputStore(broken, limit=200), BIG, inline_fallback=500)
    assert report.kind == "failed" and report.output is None and report.error is not None
    assert (report.error.kind, report.error.retryable) == ("output_not_stored", True)
    assert "cannot reach S3" in report.error.message and "over 500 bytes" in report.error.message


@dataclass
class Run:
    """A workflow ``a -> b`` run by one agent and the scheduler on the memory bus."""

    agent_outputs: OutputStore
    scheduler_outputs: OutputStore
    workflow_id: str
    seen: list[TaskContext]
    """The contexts the handler was called with, in order."""
    final: dict[str, dict[str, Any]]
    """The last task event of each task, by key, once both ended."""


async def run_a_then_b(
    tmp_path: Path, clock: FakeClock, agent_blobs: FileBlobStore, scheduler_blobs: FileBlobStore
) -> Run:
    """Run ``a`` (a large output) then ``b`` (the size of ``a``'s output as it got it), no
    retries, until ``b`` has ended."""
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    scheduler_outputs = OutputStore(scheduler_blobs, limit=200)
    config = SchedulerConfig(default_retry=RetryPolicy(max_attempts=1))
    scheduler = Scheduler(
        store, bus, registry, clock, node="n", outputs=scheduler_outputs, config=config
    )
    seen: list[TaskContext] = []

    async def make(ctx: TaskContext) -> JSON:
        seen.append(ctx)
        return BIG if ctx.key == "a" else {"got": len(json.dumps(ctx.upstream["a"]))}

    agent_outputs = OutputStore(agent_blobs, limit=200)
    worker = Worker(bus, registry, {"make": make}, name="w", clock=clock, outputs=agent_outputs)
    events = bus.subscribe_events()
    running = asyncio.create_task(worker.run())
    leading = asyncio.create_task(scheduler.run())
    final: dict[str, dict[str, Any]] = {}

    async def b_ended() -> None:
        async for body in events:
            event = decode(body, Event)
            if event.topic == "task":
                final[str(event.data["key"])] = event.data
                if event.data["key"] == "b" and event.data["status"] in TERMINAL:
                    return

    try:
        spec = (
            "name: w\ntasks: [{key: a, capability: make}, {key: b, capability: make, needs: [a]}]"
        )
        client = Client(store, clock, on_submit=scheduler.wake)
        wf = await client.submit(parse_spec(spec, fmt="yaml", limits=SpecLimits()))
        # The SQLite store works in a thread: wait in real time, bounded.
        await asyncio.wait_for(b_ended(), LIMIT)
        return Run(agent_outputs, scheduler_outputs, wf.id, seen, final)
    finally:
        await worker.stop(0)
        await running
        await scheduler.stop()
        leading.cancel()
        await asyncio.gather(leading, return_exceptions=True)
        await bus.close()
        await store.close()


async def test_an_agents_reference_reaches_the_store_and_the_next_task_gets_the_value(
    tmp_path: Path, clock: FakeClock, blobs: FileBlobStore
) -> None:
    """The whole path on the memory bus: agent A stores its large output and reports the
    reference; the scheduler keeps the reference as it is; B's upstream holds the value."""
    run = await run_a_then_b(tmp_path, clock, blobs, blobs)
    assert run.final["a"]["status"] == run.final["b"]["status"] == "succeeded"
    assert (run.agent_outputs.offloaded, run.scheduler_outputs.offloaded) == (1, 0)
    assert [c.key for c in run.seen] == ["a", "b"] and run.seen[1].upstream == {"a": BIG}
    async with SqliteStore(tmp_path / "agentdeck.db", clock=clock) as store:
        a = await store.get_task(f"{run.workflow_id}/a")
        b = await store.get_task(f"{run.workflow_id}/b")
    assert is_ref(a.output) and b.output == {"got": len(json.dumps(BIG))}


async def test_a_reference_to_an_object_the_scheduler_cannot_read_fails_the_attempt(
    tmp_path: Path, clock: FakeClock, blobs: FileBlobStore
) -> None:
    """An agent whose blob_url is not the daemon's: its success cannot be used downstream, so
    the attempt fails as output_missing (naming the key and the fix) and B never runs with an
    input nobody can read."""
    elsewhere = FileBlobStore(tmp_path / "agent-only")
    await elsewhere.start()
    run = await run_a_then_b(tmp_path, clock, elsewhere, blobs)
    assert run.final["a"]["status"] == "failed"
    error = run.final["a"]["error"]
    assert error["kind"] == "output_missing" and error["retryable"] is True
    assert "outputs/" in error["message"] and "blob_url" in error["message"]
    assert run.final["b"]["status"] == "skipped" and [c.key for c in run.seen] == ["a"]


def test_an_agent_process_keeps_outputs_only_in_a_configured_blob_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default blob_url is a folder on the agent's own machine, which a scheduler
    elsewhere cannot read: only in a configured one (and not with the limit at 0) does the
    agent keep its outputs; otherwise it sends them inline and only reads references from its
    folder (which a daemon on the same machine shares)."""
    monkeypatch.chdir(tmp_path)  # no agentdeck.toml here
    for var in ("AGENTDECK_BLOB_URL", "AGENTDECK_OUTPUT_INLINE_LIMIT"):
        monkeypatch.delenv(var, raising=False)
    clock = FakeClock()
    blobs, outputs = agent_outputs(Settings(home=tmp_path), clock)
    assert isinstance(blobs, FileBlobStore) and outputs.limit == 0
    configured = Settings(home=tmp_path, blob_url=f"file://{tmp_path}/shared")
    blobs, outputs = agent_outputs(configured, clock)
    assert outputs.limit == configured.output_inline_limit and outputs.blobs is blobs
    inline = Settings(home=tmp_path, blob_url=f"file://{tmp_path}/shared", output_inline_limit=0)
    assert agent_outputs(inline, clock)[1].limit == 0
