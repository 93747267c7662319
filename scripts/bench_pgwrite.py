"""PostgreSQL's cost of a batch of transitions, on its own: the fenced ``UPDATE ... FROM``
the batch's rows (with its events) of ``--batch`` tasks in a table of ``--rows``.

Each repetition writes a fresh set of ``--rows`` ready tasks (workflows of ``--batch``
independent tasks, through the Store as a submit does), then takes each workflow in turn
through the two transitions a saturated run makes: ``dispatched`` (the scheduler's values)
and ``succeeded`` (a report's values, ``started`` skipped), each one ``Store.apply`` with a
fencing token. For the write statement (the ``UPDATE`` and its events) it records the wall
time seen by the client and the CPU time of the server process that ran it (its
``/proc/<pid>/schedstat``, in nanoseconds: the figure a busy machine disturbs least); for the
whole apply (lock, write, commit) the server's CPU too. It prints every repetition's medians
and the medians over all batches.

Run it with the venv of the tree to measure (it imports that tree's ``agentdeck``), so one
copy of this script compares two trees (A/B):

    .venv/bin/python scripts/bench_pgwrite.py --reps 5
    /work/wt/base/.venv/bin/python scripts/bench_pgwrite.py --reps 5

``--sql`` runs statements after the migrations (``--sql 'DROP INDEX tasks_capability'``): a
variant tried before it becomes a migration; ``--option name=value`` sets a setting of the
store's sessions (``--option enable_hashjoin=off``). The store keeps one connection, so the
server process measured is the one that wrote. The database is a scratch one, dropped at the
end (``AGENTDECK_TEST_POSTGRES`` names the server, as for the tests). The server must be on
this machine (its processes' ``/proc`` is read).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentdeck.backends.postgres import PostgresStore, testing, transitions
from agentdeck.core.clock import FakeClock
from agentdeck.core.models import Change, Task, Workflow, task_id
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W

IN_FLIGHT = frozenset({T.DISPATCHED, T.RUNNING})


def cpu_ns(pid: int) -> int:
    """CPU time of process ``pid`` so far, in nanoseconds (the scheduler's own account)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


class Timed:
    """A connection that records, per statement kind, wall and server CPU nanoseconds."""

    def __init__(self, conn: Any, seen: dict[str, list[tuple[int, int]]]) -> None:
        self._conn = conn
        self._seen = seen
        self._pid = conn.get_server_pid()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def _timed(self, method: str, sql: str, *args: Any) -> Any:
        kind = "write" if "UPDATE tasks" in sql else "lock" if "FOR UPDATE" in sql else "other"
        wall, cpu = time.perf_counter_ns(), cpu_ns(self._pid)
        try:
            return await getattr(self._conn, method)(sql, *args)
        finally:
            self._seen.setdefault(kind, []).append(
                (time.perf_counter_ns() - wall, cpu_ns(self._pid) - cpu)
            )

    async def fetch(self, sql: str, *args: Any) -> Any:
        return await self._timed("fetch", sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._timed("fetchval", sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        return await self._timed("execute", sql, *args)


def workflow(clock: FakeClock, name: str, size: int) -> tuple[Workflow, list[Task]]:
    """A running workflow of ``size`` independent ready tasks."""
    now = clock.now()
    tasks = [
        Task(
            id=task_id(name, f"t{i}"),
            workflow_id=name,
            key=f"t{i}",
            capability="echo",
            status=T.READY,
            input={"i": i},
            needs=(),
            pending=0,
            created_at=now,
            updated_at=now,
        )
        for i in range(size)
    ]
    wf = Workflow(
        id=name, name=name, status=W.RUNNING, created_at=now, updated_at=now, task_count=size
    )
    return wf, tasks


def dispatched(tasks: Sequence[Task], now: float) -> list[Change]:
    """What the scheduler's dispatch writes (core/scheduler/dispatch.py)."""
    return [
        Change(
            t.id,
            T.DISPATCHED,
            frozenset({T.READY}),
            attempt=0,
            values={
                "attempt": 1,
                "agent_id": None,
                "deadline": now + 30.0,
                "not_before": None,
                "error": None,
            },
            detail={"node": "bench"},
        )
        for t in tasks
    ]


def succeeded(tasks: Sequence[Task], now: float) -> list[Change]:
    """What a report of success writes (core/scheduler/reports.py, ``started`` skipped)."""
    return [
        Change(
            t.id,
            T.SUCCEEDED,
            IN_FLIGHT,
            attempt=1,
            values={
                "output": {"echo": t.key},
                "agent_id": "agent-1",
                "finished_at": now,
                "deadline": None,
                "error": None,
                "started_at": now - 0.001,
            },
            detail={"agent": "agent-1"},
        )
        for t in tasks
    ]


async def repetition(
    store: PostgresStore, clock: FakeClock, rows: int, batch: int, rep: int, measure: Any
) -> dict[str, list[tuple[int, int]]]:
    """One fresh table of ``rows`` tasks taken through dispatched and succeeded by batches."""
    pool = store._pool
    assert pool is not None
    await pool.execute("TRUNCATE tasks, task_events, task_deps, workflows, fence")
    flows = []
    for w in range(rows // batch):
        clock.advance(0.5)  # workflows submitted one after the other, as in a run
        wf, tasks = workflow(clock, f"r{rep}w{w}", batch)
        await store.create_workflow(wf, tasks)
        flows.append(tasks)
    await pool.execute("VACUUM ANALYZE tasks")
    await pool.execute("VACUUM ANALYZE task_events")
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
    results: dict[str, list[tuple[int, int]]] = {}
    for tasks in flows:
        for step, make in (("dispatched", dispatched), ("succeeded", succeeded)):
            clock.advance(0.01)
            seen: dict[str, list[tuple[int, int]]] = {}
            measure["seen"] = seen
            changes = make(tasks, clock.now())
            wall, cpu = time.perf_counter_ns(), cpu_ns(pid)
            applied = await store.apply(changes, clock.now(), fence=1)
            total = (time.perf_counter_ns() - wall, cpu_ns(pid) - cpu)
            assert len(applied.tasks) == batch, (step, len(applied.tasks))
            [write] = seen["write"]
            results.setdefault(f"{step} write", []).append(write)
            results.setdefault(f"{step} apply", []).append(total)
    return results


def patch_apply(measure: dict[str, Any]) -> None:
    """Wrap ``transitions.apply`` so its statements are timed into ``measure['seen']``."""
    original: Callable[..., Awaitable[Any]] = transitions.apply

    async def apply(conn: Any, *args: Any) -> Any:
        return await original(Timed(conn, measure["seen"]), *args)

    transitions.apply = apply  # type: ignore[assignment]  # the store looks it up per call


def ms(values: list[int]) -> str:
    return f"{statistics.median(values) / 1e6:7.2f}"


async def main(args: argparse.Namespace) -> None:
    clock = FakeClock()
    measure: dict[str, Any] = {"seen": {}}
    patch_apply(measure)
    everything: dict[str, list[tuple[int, int]]] = {}
    async with testing.scratch_database() as url:
        # One connection: the server process whose CPU is read is the one that wrote.
        url += ("&" if "?" in url else "?") + "&".join(["max_size=1", *args.option])
        await measure_database(url, clock, measure, everything, args)
    summary(everything, args)


async def measure_database(
    url: str,
    clock: FakeClock,
    measure: dict[str, Any],
    everything: dict[str, list[tuple[int, int]]],
    args: argparse.Namespace,
) -> None:
    """Every repetition on the database at ``url``, its results added to ``everything``."""
    async with PostgresStore.from_url(url, clock=clock) as store:
        await store.migrate()
        pool = store._pool
        assert pool is not None
        for statement in args.sql:
            await pool.execute(statement)
        for table in ("tasks", "task_events"):
            indexes = await pool.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = $1 ORDER BY indexname", table
            )
            print(f"{table}' indexes ({len(indexes)}): {', '.join(r[0] for r in indexes)}")
        print(
            "median ms per batch: wall of the write statement / server CPU of it"
            " / server CPU of the whole apply (BEGIN to COMMIT)"
        )
        for rep in range(args.reps):
            results = await repetition(store, clock, args.rows, args.batch, rep, measure)
            line = []
            for key, values in results.items():
                everything.setdefault(key, []).extend(values)
            for step in ("dispatched", "succeeded"):
                write = results[f"{step} write"]
                total = results[f"{step} apply"]
                line.append(
                    f"{step} {ms([w for w, _ in write])} / {ms([c for _, c in write])}"
                    f" / {ms([c for _, c in total])}"
                )
            print(f"rep {rep}: " + "   ".join(line), flush=True)


def summary(everything: dict[str, list[tuple[int, int]]], args: argparse.Namespace) -> None:
    """The medians over every batch of every repetition."""
    print("all batches:")
    for step in ("dispatched", "succeeded"):
        write = everything[f"{step} write"]
        total = everything[f"{step} apply"]
        n = len(write)
        print(
            f"  {step:10s} write wall {ms([w for w, _ in write])} ms, server CPU "
            f"{ms([c for _, c in write])} ms; the apply's server CPU "
            f"{ms([c for _, c in total])} ms ({n} batches)"
        )
    per_task = sum(
        statistics.median([c for _, c in everything[f"{s} apply"]])
        for s in ("dispatched", "succeeded")
    )
    print(f"  server CPU per task, both transitions: {per_task / args.batch / 1e3:.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sql", action="append", default=[], help="run after migrating")
    parser.add_argument(
        "--option", action="append", default=[], help="name=value: a setting of the sessions"
    )
    asyncio.run(main(parser.parse_args()))
