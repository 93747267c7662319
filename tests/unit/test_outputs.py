"""Large outputs by reference: kept in the blob store, resolved for upstream inputs and show."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from backends.files import FileBlobStore
from backends.memory import MemoryBus, MemoryRegistry
from backends.sqlite.store import SqliteStore
from core.client import Client
from core.clock import FakeClock
from core.errors import AgentdeckError
from core.messages import Report, TaskMessage, decode, encode
from core.models import Change
from core.outputs import OutputStore, is_ref
from core.scheduler import Scheduler
from core.spec import SpecLimits, parse_spec
from core.states import TaskStatus as T
from tui.cli import main

BIG = {"rows": ["x" * 50] * 20}  # about 1 kB of JSON


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
    assert await outputs.resolve_all({"a": ref, "b": 3}) == {"a": BIG, "b": 3}


async def test_a_damaged_or_missing_object_is_an_error(blobs: FileBlobStore) -> None:
    """Resolving a reference whose object changed or vanished names the object."""
    outputs = OutputStore(blobs, limit=10)
    ref = await outputs.offload("w/a", 1, BIG)
    await blobs.put(ref["$blob"], gzip.compress(b'{"other": 1}'))
    with pytest.raises(AgentdeckError, match="damaged"):
        await outputs.resolve(ref)
    await blobs.delete(ref["$blob"])
    with pytest.raises(AgentdeckError, match="missing"):
        await outputs.resolve(ref)


async def test_scheduler_keeps_large_output_by_reference_and_hands_it_downstream(
    tmp_path: Path, clock: FakeClock, blobs: FileBlobStore
) -> None:
    """A's large output is a reference in the Store; B still receives the whole of it."""
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
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
        assert stored.status is T.SUCCEEDED and is_ref(stored.output)
        b = await take()
        assert b.upstream == {"a": BIG}
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
