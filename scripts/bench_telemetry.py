"""What metrics and tracing cost per task, measured on the calls the scheduler and worker make.

One task's life makes these calls: the scheduler's dispatch (metrics: dispatched + dispatch
latency; tracing: the attempt's traceparent), its start and its result (metrics: the
transitions; tracing: the attempt span), and the agent's run (metrics: run started/finished;
tracing: the run span). This times them for ``--tasks`` tasks, in batches as the scheduler
makes them, and prints microseconds per task.

    .venv/bin/python scripts/bench_telemetry.py --tasks 20000
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentdeck.core.metrics import Metrics  # noqa: E402 - after the path is set
from agentdeck.core.models import Task  # noqa: E402
from agentdeck.core.states import TaskStatus  # noqa: E402
from agentdeck.core.tracing import Tracing  # noqa: E402

T = TaskStatus


def tasks(n: int) -> list[Task]:
    """``n`` ready echo tasks of 10-task workflows."""
    return [
        Task(
            id=f"wf{i // 10}/t{i}",
            workflow_id=f"wf{i // 10}",
            key=f"t{i}",
            capability=("echo", "sleep", "http")[i % 3],
            status=T.READY,
            input=None,
            needs=(),
            pending=0,
            created_at=1000.0,
            updated_at=1000.0,
            attempt=0,
        )
        for i in range(n)
    ]


def life(ready: list[Task], metrics: Metrics | None, tracing: Tracing | None, batch: int) -> None:
    """Every telemetry call of these tasks' lives, in scheduler-sized batches."""
    for start in range(0, len(ready), batch):
        chunk = ready[start : start + batch]
        dispatched = [dataclasses.replace(t, status=T.DISPATCHED, attempt=1) for t in chunk]
        running = [dataclasses.replace(t, status=T.RUNNING, started_at=1001.0) for t in dispatched]
        done = [dataclasses.replace(t, status=T.SUCCEEDED, finished_at=1002.0) for t in running]
        headers = [tracing.attempt_dispatched(t, 1000.5) if tracing else {} for t in dispatched]
        if metrics:
            metrics.tasks_changed(dispatched, 1000.5)
            metrics.tasks_dispatched(chunk, 1000.5)
            metrics.tasks_changed(running, 1001.0)
        for t, h in zip(running, headers, strict=True):  # the agent side
            span = (
                tracing.start_run(h, f"run {t.capability}", {"task": t.id}, 0) if tracing else None
            )
            if metrics:
                metrics.run_started(t.capability, 0.01)
                metrics.run_finished(t.capability, "succeeded", 0.2)
            if span is not None:
                span.end()
        if metrics:
            metrics.tasks_changed(done, 1002.0)
        if tracing:
            tracing.tasks_changed(done, 1002.0)


def timed(n: int, metrics: bool, tracing: bool, batch: int) -> float:
    """Microseconds per task for one configuration (the copies made above subtracted)."""
    ready = tasks(n)
    m = Metrics() if metrics else None
    tr = Tracing("bench", env={}) if tracing else None
    started = time.perf_counter()
    life(ready, m, tr, batch)
    elapsed = time.perf_counter() - started
    if tr:
        tr.shutdown()
    return elapsed / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500, help="the scheduler's batch_size")
    args = p.parse_args()
    timed(1000, True, True, args.batch)  # warm up imports and caches
    base = min(timed(args.tasks, False, False, args.batch) for _ in range(3))
    for label, metrics, tracing in (
        ("metrics", True, False),
        ("tracing", False, True),
        ("both", True, True),
    ):
        best = min(timed(args.tasks, metrics, tracing, args.batch) for _ in range(3))
        print(f"{label:8} {best - base:7.1f} us/task  (best of 3, {args.tasks} tasks)")


if __name__ == "__main__":
    main()
