"""Snapshots: the whole state to compressed, checksummed objects and back, refusing bad input
before writing anything."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentdeck.backends.files import FileBlobStore
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core import snapshot
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConfigError, NotFound
from agentdeck.core.models import Change, ErrorInfo, Usage
from agentdeck.core.ports import Store
from agentdeck.core.settings import Settings
from agentdeck.core.snapshot import (
    SnapshotError,
    SnapshotService,
    create_snapshot,
    list_snapshots,
    restore_snapshot,
)
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T

SPEC = """
name: {name}
labels: {{team: ops}}
tasks:
  - {{key: a, capability: echo, input: {{text: "hé ✓", n: 1.5}}}}
  - {{key: b, capability: echo, needs: [a], retry: {{max_attempts: 5}}}}
  - {{key: c, capability: sleep, needs: [a, b], timeout: 12}}
"""


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[FileBlobStore]:
    store = FileBlobStore(tmp_path / "blobs")
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def source(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "source.db", clock=clock) as store:
        await store.migrate()
        yield store


@pytest.fixture
async def target(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "target.db", clock=clock) as store:
        await store.migrate()
        yield store


async def populate(store: Store, clock: FakeClock, workflows: int = 3) -> None:
    """Workflows in several states, with history and an operator's command."""
    client = Client(store, clock, poll=0.001)
    ids = []
    for i in range(workflows):
        spec = parse_spec(SPEC.format(name=f"w{i}"), fmt="yaml", limits=SpecLimits())
        ids.append((await client.submit(spec)).id)
        clock.advance(1)
    first = f"{ids[0]}/a"
    await store.apply(
        [Change(first, T.DISPATCHED, frozenset({T.READY}), attempt=0, values={"attempt": 1})],
        clock.now(),
    )
    await store.apply(
        [
            Change(
                first,
                T.RETRYING,
                frozenset({T.DISPATCHED}),
                attempt=1,
                values={"error": ErrorInfo("lost", "agent gone"), "not_before": clock.now() + 2},
                detail={"delay": 2},
                usage=Usage(10, 2, 3, 4, 0.125, "m"),  # kept: a restored store sums the same
            )
        ],
        clock.now(),
    )
    await client.command("pause", ids[-1], wait=None)


async def state(store: Store) -> tuple[Any, ...]:
    """Everything the store holds, in a comparable form."""
    return (
        await store.dump_workflows(limit=100_000),
        await store.dump_tasks(limit=100_000),
        await store.events_since(0, limit=100_000),
        await store.dump_commands(limit=100_000),
        await store.dump_usage(limit=100_000),
    )


async def test_round_trip_gives_the_same_state(
    source: SqliteStore, target: SqliteStore, blobs: FileBlobStore, clock: FakeClock
) -> None:
    """SQLite -> blobs -> a fresh SQLite: every workflow, task, event and command is equal."""
    await populate(source, clock)
    info = await create_snapshot(source, blobs, clock, node="n1")
    assert dict(info.counts) == {
        "workflows": 3,
        "tasks": 9,
        "events": 11,
        "commands": 1,
        "usage": 1,
    }
    restored = await restore_snapshot(target, blobs, info.id)
    assert restored == info
    assert await state(target) == await state(source)


async def test_objects_are_compressed_with_a_versioned_manifest(
    source: SqliteStore, blobs: FileBlobStore, clock: FakeClock
) -> None:
    """Parts are gzip JSON lines; the manifest names the format version and each sha256."""
    await populate(source, clock)
    info = await create_snapshot(source, blobs, clock)
    keys = [b.key for b in await blobs.list("snapshots/")]
    assert keys == [
        f"snapshots/{info.id}/manifest.json",
        f"snapshots/{info.id}/part-00000.jsonl.gz",
    ]
    manifest = json.loads(await blobs.get(keys[0]))
    assert (manifest["format"], manifest["version"]) == ("agentdeck-snapshot", 1)
    assert len(manifest["parts"][0]["sha256"]) == 64
    lines = gzip.decompress(await blobs.get(keys[1])).decode().splitlines()
    assert [json.loads(line)["t"] for line in lines][:4] == ["workflow"] * 3 + ["task"]


async def test_large_state_splits_into_parts_without_splitting_a_workflow(
    source: SqliteStore,
    target: SqliteStore,
    blobs: FileBlobStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With small parts the snapshot has many; each loads alone and the whole round-trips."""
    monkeypatch.setattr(snapshot, "PART_RECORDS", 4)
    monkeypatch.setattr(snapshot, "PAGE", 2)
    await populate(source, clock, workflows=5)
    info = await create_snapshot(source, blobs, clock)
    manifest = json.loads(await blobs.get(f"snapshots/{info.id}/manifest.json"))
    assert len(manifest["parts"]) > 5
    await restore_snapshot(target, blobs, info.id)
    assert await state(target) == await state(source)


async def test_list_shows_complete_snapshots_oldest_first(
    source: SqliteStore, blobs: FileBlobStore, clock: FakeClock
) -> None:
    """Snapshots are listed with their counts; one without a manifest (interrupted) is not."""
    await populate(source, clock, workflows=1)
    first = await create_snapshot(source, blobs, clock)
    clock.advance(60)
    second = await create_snapshot(source, blobs, clock)
    await blobs.put("snapshots/broken/part-00000.jsonl.gz", b"half")
    assert [s.id for s in await list_snapshots(blobs)] == [first.id, second.id]
    assert first.size > 0 and first.counts["tasks"] == 3


async def test_restore_refuses_a_store_that_is_not_empty(
    source: SqliteStore, blobs: FileBlobStore, clock: FakeClock
) -> None:
    """Restoring over existing state is refused and changes nothing."""
    await populate(source, clock, workflows=1)
    info = await create_snapshot(source, blobs, clock)
    before = await state(source)
    with pytest.raises(SnapshotError, match="not empty"):
        await restore_snapshot(source, blobs, info.id)
    assert await state(source) == before


async def test_restore_refuses_an_unknown_version_before_writing(
    source: SqliteStore, target: SqliteStore, blobs: FileBlobStore, clock: FakeClock
) -> None:
    """A manifest of another format version is refused, naming both versions; nothing written."""
    await populate(source, clock, workflows=1)
    info = await create_snapshot(source, blobs, clock)
    key = f"snapshots/{info.id}/manifest.json"
    manifest = json.loads(await blobs.get(key))
    await blobs.put(key, json.dumps({**manifest, "version": 99}).encode())
    with pytest.raises(SnapshotError, match="format version 99; this agentdeck reads version 1"):
        await restore_snapshot(target, blobs, info.id)
    assert await snapshot.store_is_empty(target)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),
        lambda data: data[: len(data) // 2],
    ],
    ids=["flipped-bit", "truncated"],
)
async def test_restore_refuses_a_damaged_part_before_writing(
    source: SqliteStore,
    target: SqliteStore,
    blobs: FileBlobStore,
    clock: FakeClock,
    damage: Any,
) -> None:
    """A part whose bytes differ from the manifest's checksum is refused; nothing written."""
    await populate(source, clock, workflows=1)
    info = await create_snapshot(source, blobs, clock)
    key = f"snapshots/{info.id}/part-00000.jsonl.gz"
    await blobs.put(key, damage(await blobs.get(key)))
    with pytest.raises(SnapshotError, match=f"part {key} is damaged"):
        await restore_snapshot(target, blobs, info.id)
    assert await snapshot.store_is_empty(target)


async def test_restore_refuses_a_part_that_does_not_decode(
    source: SqliteStore, target: SqliteStore, blobs: FileBlobStore, clock: FakeClock
) -> None:
    """A part with a checksum that matches but records that do not parse is refused."""
    await populate(source, clock, workflows=1)
    info = await create_snapshot(source, blobs, clock)
    key = f"snapshots/{info.id}/manifest.json"
    manifest = json.loads(await blobs.get(key))
    bad = gzip.compress(b'{"t":"task","r":{"id":"x"}}')
    part = manifest["parts"][0]
    await blobs.put(part["key"], bad)
    part.update(size=len(bad), sha256=hashlib.sha256(bad).hexdigest())
    await blobs.put(key, json.dumps(manifest).encode())
    with pytest.raises(SnapshotError, match="does not decode"):
        await restore_snapshot(target, blobs, info.id)
    assert await snapshot.store_is_empty(target)


async def test_unknown_snapshot_is_not_found(target: SqliteStore, blobs: FileBlobStore) -> None:
    """Restoring an id with no manifest raises NotFound naming it."""
    with pytest.raises(NotFound, match="no snapshot 'nope'"):
        await restore_snapshot(target, blobs, "nope")


async def test_service_takes_snapshots_on_its_interval_and_keeps_the_newest(
    source: SqliteStore, blobs: FileBlobStore, clock: FakeClock
) -> None:
    """Every interval of clock time one snapshot; beyond ``keep`` the oldest are deleted."""
    await populate(source, clock, workflows=1)
    service = SnapshotService(source, blobs, clock, interval=60, keep=2)
    runner = asyncio.create_task(service.run())
    for n in range(1, 4):
        await asyncio.sleep(0.01)
        clock.advance(60)
        for _ in range(200):  # the snapshot runs on the store's thread
            if service.taken == n:
                break
            await asyncio.sleep(0.005)
        assert service.taken == n
    await service.stop()
    await asyncio.wait_for(runner, 1)
    assert len(await list_snapshots(blobs)) == 2


async def test_inactive_service_takes_none(
    source: SqliteStore, blobs: FileBlobStore, clock: FakeClock
) -> None:
    """A node that is not the leader does not snapshot."""
    service = SnapshotService(source, blobs, clock, interval=1, active=lambda: False)
    runner = asyncio.create_task(service.run())
    for _ in range(3):
        await asyncio.sleep(0.01)
        clock.advance(1)
    await service.stop()
    await asyncio.wait_for(runner, 1)
    assert service.taken == 0 and await list_snapshots(blobs) == []


def test_snapshot_settings_out_of_range_are_refused(tmp_path: Path) -> None:
    """A negative interval or zero keep is refused at start naming the field."""
    with pytest.raises(ConfigError, match=r"snapshots\.interval"):
        Settings.load(home=tmp_path, snapshots={"interval": -1})
    with pytest.raises(ConfigError, match=r"snapshots\.keep"):
        Settings.load(home=tmp_path, snapshots={"keep": 0})
    assert Settings.load(home=tmp_path).snapshots.interval == 0
