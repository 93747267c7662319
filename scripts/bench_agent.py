"""The agent's CPU per no-op task, alone: one Worker in this process on the memory bus.

The scheduler's batches (``--per`` tasks per message, as ``core.scheduler.dispatch``
groups them under load) are queued before the worker starts, so the figure is the worker's
own CPU per task on a full queue (its prefetch: ``--concurrency`` messages), with no broker,
database or other process in it. CPU seconds (``time.process_time``) move far less with the
machine's load than wall time, which makes this the figure to compare on a shared machine
(docs/performance.md, "The agent's CPU per task").

    .venv/bin/python scripts/bench_agent.py                  # 20,000 tasks, 3 runs
    .venv/bin/python scripts/bench_agent.py --tasks 50000 --runs 5
    .venv/bin/python scripts/bench_agent.py --default-gc     # without agents.main.agent_gc
    /work/wt/base/.venv/bin/python scripts/bench_agent.py    # the same script, older code

The handler is the built-in ``sleep`` with 0 s, ``started_after`` 0.05 s and an output store
of limit 0, as ``scripts/bench.py`` runs its agent; uvloop when installed. Each run is a
fresh process (``--child``), so runs do not share a heap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20_000, help="tasks in all")
    p.add_argument("--per", type=int, default=50, help="tasks per message")
    p.add_argument("--concurrency", type=int, default=200, help="the worker's concurrency")
    p.add_argument("--runs", type=int, default=3, help="runs, each in a fresh process")
    p.add_argument("--default-gc", action="store_true", help="Python's collector settings")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        run_loop(args)
        return
    own = ["--tasks", str(args.tasks), "--per", str(args.per)]
    own += ["--concurrency", str(args.concurrency)] + (["--default-gc"] if args.default_gc else [])
    for _ in range(args.runs):
        subprocess.run([sys.executable, __file__, *own, "--child"], check=True)


def run_loop(args: argparse.Namespace) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


async def run(args: argparse.Namespace) -> None:
    from agentdeck.agents.worker import Worker
    from agentdeck.backends.files import FileBlobStore
    from agentdeck.backends.memory import MemoryBus, MemoryRegistry
    from agentdeck.core.clock import SystemClock
    from agentdeck.core.logs import configure_logging
    from agentdeck.core.messages import TaskMessage, batch, encode
    from agentdeck.core.outputs import OutputStore
    from agentdeck.core.ports import OutgoingTask
    from agentdeck.tui.wiring import build_handler

    configure_logging("warning", "json")  # as scripts/bench.py runs its agent
    clock = SystemClock()
    bus = MemoryBus(clock=clock)
    registry = MemoryRegistry(clock=clock)
    await bus.start()
    await registry.start()
    now = clock.now()
    messages = []
    for b in range(args.tasks // args.per):
        bodies = [
            encode(
                TaskMessage(
                    task_id=f"0192f0c2-7a9e-7c1d-{b:04x}-{i:012x}",
                    workflow_id="0192f0c2-7a9e-7c1d-8e4b-000000000000",
                    key=f"t{i}",
                    capability="noop",
                    attempt=1,
                    timeout=300.0,
                    dispatched_at=now,
                )
            )
            for i in range(args.per)
        ]
        messages.append(OutgoingTask("noop", batch(TaskMessage, bodies), {}))
    await bus.publish_tasks(messages)
    n = len(messages) * args.per
    with tempfile.TemporaryDirectory() as folder:
        blobs = FileBlobStore.from_url(f"file://{folder}", clock=clock)
        worker = Worker(
            bus,
            registry,
            {"noop": build_handler("sleep", {"seconds": 0})},
            name="bench",
            concurrency=args.concurrency,
            clock=clock,
            started_after=0.05,
            outputs=OutputStore(blobs, limit=0),
        )
        with contextlib.nullcontext() if args.default_gc else _agent_gc():
            cpu, wall = time.process_time(), time.perf_counter()
            running = asyncio.create_task(worker.run())
            while worker.succeeded + worker.failed < n:
                await asyncio.sleep(0.005)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            await worker.stop(grace=1)
            await running
    print(
        f"{n:,} tasks: {cpu:.3f} s CPU = {cpu / n * 1e6:.1f} us a task, wall {wall:.2f} s, "
        f"failed {worker.failed}, report messages {worker._reporter.batcher.sent}",
        flush=True,
    )


def _agent_gc() -> contextlib.AbstractContextManager[None]:
    """agents.main.agent_gc, or nothing in a tree without it (to compare with older code)."""
    try:
        from agentdeck.agents.main import agent_gc
    except ImportError:
        return contextlib.nullcontext()
    return agent_gc()


if __name__ == "__main__":
    main()
