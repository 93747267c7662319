"""What recording usage costs the scheduler's write path: ``Store.apply`` of a batch of
successes with and without each attempt's usage, alternately, on SQLite (a temp file) and, when
reachable, PostgreSQL (a scratch database).

    .venv/bin/python scripts/bench_usage.py [--tasks 1000] [--rounds 16] [--no-postgres]

Prints the median wall time of one ``apply`` of ``--tasks`` successes for each variant, and the
difference per task. Each round builds a fresh workflow of dispatched tasks, so both variants do
the same work but for the usage rows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from agentdeck.backends.postgres import PostgresStore, testing
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.clock import SystemClock
from agentdeck.core.models import Change, Task, Usage, Workflow, new_id
from agentdeck.core.ports import Store
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W

USAGE = Usage(1_200, 350, 0, 8_000, 0.0093, "claude-sonnet")


async def one_round(store: Store, tasks: int, with_usage: bool) -> float:
    """Seconds one ``apply`` of ``tasks`` successes took."""
    now = time.time()
    wf = new_id()
    rows = [
        Task(f"{wf}/t{i}", wf, f"t{i}", "llm", T.DISPATCHED, {}, (), 0, now, now, attempt=1)
        for i in range(tasks)
    ]
    await store.create_workflow(Workflow(wf, "bench", W.RUNNING, now, now, tasks), rows)
    changes = [
        Change(
            t.id,
            T.SUCCEEDED,
            frozenset({T.DISPATCHED}),
            attempt=1,
            values={"output": {"n": 1}},
            usage=USAGE if with_usage else None,
        )
        for t in rows
    ]
    start = time.perf_counter()
    await store.apply(changes, now)
    return time.perf_counter() - start


async def measure(name: str, store: Store, tasks: int, rounds: int) -> None:
    await store.migrate()
    await one_round(store, tasks, True)  # warm up
    times: dict[bool, list[float]] = {False: [], True: []}
    for n in range(rounds):
        # Alternately, and each first in turn, so drifts (load, table growth) hit both alike.
        for with_usage in (False, True) if n % 2 else (True, False):
            times[with_usage].append(await one_round(store, tasks, with_usage))
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"{name:<10} apply of {tasks:,} successes, median of {rounds}: "
        f"{without * 1e3:7.1f} ms without usage, {with_ * 1e3:7.1f} ms with "
        f"(+{(with_ - without) / without:.0%}, {(with_ - without) / tasks * 1e6:+.1f} µs a task)"
    )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--no-postgres", action="store_true")
    args = p.parse_args()
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteStore(Path(tmp) / "bench.db", clock=clock)
        try:
            await measure("sqlite", sqlite, args.tasks, args.rounds)
        finally:
            await sqlite.close()
    if not args.no_postgres:
        async with testing.scratch_database() as url:
            pg = PostgresStore.from_url(url, clock=clock)
            try:
                await measure("postgres", pg, args.tasks, args.rounds)
            finally:
                await pg.close()


if __name__ == "__main__":
    asyncio.run(main())
