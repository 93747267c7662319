"""Measure the leader's repair sweep on SQLite, or PostgreSQL (``--postgres``).

    .venv/bin/python scripts/repair_bench.py [--workflows 1000] [--tasks 100] [--broken 10]
        [--cancelled 0] [--postgres]   # PostgreSQL: a scratch database on
        # AGENTDECK_TEST_POSTGRES (default 127.0.0.1:5432)

Loads ``workflows`` running workflows of ``tasks`` tasks each in two chains: chain a a
quarter succeeded, one task running, the rest blocked; chain b succeeded, or in every tenth
workflow failed for good at its second task, its dependents skipped. The first ``broken`` were
left by a dead leader instead: chain a done, chain b's second task failed, its dependents
still blocked. Times one sweep that repairs those (skips, then fails each workflow), then
one on the store it left, consistent, page by page as the leader runs it. With
``cancelled``, that many cancelled workflows of ``tasks`` tasks (a quarter succeeded, the rest
cancelled) are loaded too, and a third sweep is timed: the consistent store as the sweep on
taking the lease reads it, cancelled workflows included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.postgres import PostgresStore, testing
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.clock import SystemClock
from agentdeck.core.models import Task, Workflow
from agentdeck.core.ports import Store
from agentdeck.core.scheduler import OPEN_WORKFLOWS, REPAIR_PAGE, Scheduler
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W


def chain(wid: str, prefix: str, n: int, now: float, statuses: list[T]) -> list[Task]:
    """``n`` tasks in a chain, the i-th in ``statuses[i]``."""
    return [
        Task(
            id=f"{wid}/{prefix}{i:04d}",
            workflow_id=wid,
            key=f"{prefix}{i:04d}",
            capability="echo",
            status=statuses[i],
            input={"n": i},
            needs=(f"{prefix}{i - 1:04d}",) if i else (),
            pending=0 if statuses[i] != T.BLOCKED else 1,
            attempt=0 if statuses[i] == T.BLOCKED else 1,
            created_at=now,
            updated_at=now,
        )
        for i in range(n)
    ]


async def build(store: Store, workflows: int, tasks: int, broken: int, cancelled: int) -> None:
    now = time.time()
    for w in range(cancelled):
        wid = f"cx{w:05d}"
        done = tasks // 4
        rows = chain(wid, "a", tasks, now, [T.SUCCEEDED] * done + [T.CANCELLED] * (tasks - done))
        workflow = Workflow(wid, wid, W.CANCELLED, now, now, tasks, finished_at=now)
        await store.load(workflows=[workflow], tasks=rows)
    half = tasks // 2
    for w in range(workflows):
        wid = f"wf{w:05d}"
        done = half // 2  # the first half of chain a succeeded, then one running
        a = [T.SUCCEEDED] * done + [T.RUNNING] + [T.BLOCKED] * (half - done - 1)
        if w < broken:  # a dead leader wrote b's failure, not the follow-up; a is done
            a = [T.SUCCEEDED] * half
            b = [T.SUCCEEDED, T.FAILED] + [T.BLOCKED] * (tasks - half - 2)
        elif w % 10 == 0:  # a failure whose dependents were skipped: consistent
            b = [T.SUCCEEDED, T.FAILED] + [T.SKIPPED] * (tasks - half - 2)
        else:
            b = [T.SUCCEEDED] * (tasks - half)
        rows = chain(wid, "a", half, now, a) + chain(wid, "b", tasks - half, now, b)
        await store.load(workflows=[Workflow(wid, wid, W.RUNNING, now, now, tasks)], tasks=rows)


async def sweep(store: Store, clock: SystemClock) -> list[tuple[str, float, float, int]]:
    """Elect a leader on ``store`` and time its sweeps: (label, total, longest round, rounds)."""
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await bus.start()
    await registry.start()
    leader = Scheduler(store, bus, registry, clock, node="bench")
    assert await leader._ensure_lease()  # elected; the sweep runs in the next tick
    timings = []
    for label in ("repairing", "consistent", "consistent, on taking the lease"):
        if label.endswith("lease"):
            leader._repair_statuses = OPEN_WORKFLOWS | {W.CANCELLED}
        pages = []
        while True:  # one sweep: a page per scheduler round
            started = time.perf_counter()
            await leader._repair()
            pages.append(time.perf_counter() - started)
            if leader._repair_at is None:
                break
        timings.append((label, sum(pages), max(pages), len(pages)))
    await leader.stop()
    await bus.close()
    await registry.close()
    return timings


async def main(workflows: int, tasks: int, broken: int, cancelled: int, postgres: bool) -> None:
    clock = SystemClock()
    async with contextlib.AsyncExitStack() as stack:
        store: Store
        if postgres:  # a scratch database on the test server, dropped at the end
            url = await stack.enter_async_context(testing.scratch_database())
            store = await stack.enter_async_context(PostgresStore.from_url(url, clock=clock))
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            store = await stack.enter_async_context(SqliteStore(Path(tmp) / "a.db", clock=clock))
        await store.migrate()
        await build(store, workflows, tasks, broken, cancelled)
        timings = await sweep(store, clock)
        counts = await store.count_workflows()
        skipped = await store.total_tasks(status=[T.SKIPPED])
    engine = "PostgreSQL" if postgres else "SQLite"
    print(
        f"{engine}: {workflows} running workflows x {tasks} tasks, {broken} left by a dead "
        f"leader; {cancelled} cancelled workflows"
    )
    for label, total, longest, rounds in timings:
        print(
            f"sweep ({label}): {total * 1000:.0f} ms in {rounds} round(s) of up to "
            f"{REPAIR_PAGE} workflows, the longest round {longest * 1000:.0f} ms"
        )
    print("after:", {s.value: n for s, n in counts.items()}, f"skipped tasks: {skipped}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--broken", type=int, default=10)
    parser.add_argument("--cancelled", type=int, default=0)
    parser.add_argument("--postgres", action="store_true", help="on the test PostgreSQL server")
    args = parser.parse_args()
    asyncio.run(main(args.workflows, args.tasks, args.broken, args.cancelled, args.postgres))
