"""Measure snapshot create and restore on the embedded backends (SQLite + a local folder).

    .venv/bin/python scripts/snapshot_bench.py [--workflows 100] [--tasks 100]

Builds ``workflows x tasks`` tasks (chains, each task with a small input and, for half of
them, a finished attempt with an output and its events) in a temporary SQLite file, then
times a snapshot into a temporary folder and a restore into a fresh SQLite file, and checks
that the restored state equals the original.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from agentdeck.backends.files import FileBlobStore
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.clock import SystemClock
from agentdeck.core.models import Change, Task, Workflow
from agentdeck.core.snapshot import create_snapshot, restore_snapshot
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W


async def build(store: SqliteStore, workflows: int, tasks: int) -> None:
    now = time.time()
    for w in range(workflows):
        wid = f"wf{w:05d}"
        rows = [
            Task(
                id=f"{wid}/t{i:04d}",
                workflow_id=wid,
                key=f"t{i:04d}",
                capability="echo",
                status=T.BLOCKED if i else T.READY,
                input={"n": i, "text": "x" * 40},
                needs=(f"t{i - 1:04d}",) if i else (),
                pending=1 if i else 0,
                created_at=now,
                updated_at=now,
            )
            for i in range(tasks)
        ]
        await store.create_workflow(Workflow(wid, wid, W.RUNNING, now, now, tasks), rows)
        for i in range(tasks // 2):  # finish the first half of the chain
            tid = f"{wid}/t{i:04d}"
            await store.apply(
                [Change(tid, T.DISPATCHED, frozenset({T.READY}), values={"attempt": 1})], now
            )
            await store.apply(
                [Change(tid, T.SUCCEEDED, frozenset({T.DISPATCHED}), values={"output": {"i": i}})],
                now,
            )


async def main(workflows: int, tasks: int) -> None:
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        blobs = FileBlobStore(root / "blobs")
        await blobs.start()
        async with SqliteStore(root / "a.db", clock=clock) as source:
            await source.migrate()
            await build(source, workflows, tasks)
            started = time.perf_counter()
            info = await create_snapshot(source, blobs, clock)
            created = time.perf_counter() - started
            async with SqliteStore(root / "b.db", clock=clock) as target:
                await target.migrate()
                started = time.perf_counter()
                await restore_snapshot(target, blobs, info.id)
                restored = time.perf_counter() - started
                same = all(
                    [
                        await source.dump_tasks(limit=10**7)
                        == await target.dump_tasks(limit=10**7),
                        await source.events_since(0, limit=10**7)
                        == await target.events_since(0, limit=10**7),
                    ]
                )
        print(f"records: {dict(info.counts)}")
        print(f"snapshot size: {info.size / 1e6:.2f} MB")
        print(f"create: {created:.2f} s   restore: {restored:.2f} s   equal: {same}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.workflows, args.tasks))
