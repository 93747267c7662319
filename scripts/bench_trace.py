"""Trace lone tasks or a chain's steps through the scheduler, in one process, on RabbitMQ +
PostgreSQL + Redis: every SQL statement (asyncpg's query logger), every publish and every
scheduler round, with timestamps; then the counts per task (or per step, or per layer).

Counts do not depend on the machine's load, which makes them the figure to compare on a
shared machine (docs/performance.md, "Levers (issue 16)"); ``--show`` prints the timeline.

    .venv/bin/python scripts/bench_trace.py lone 20         # statements per lone task
    .venv/bin/python scripts/bench_trace.py chain 50        # statements per chain step
    .venv/bin/python scripts/bench_trace.py chain 6 --show --agent-process
    .venv/bin/python scripts/bench_trace.py layers 20 --width 100  # per layer of 20 x 100

The scheduler and a no-op agent share this process (``--agent-process``: the agent is
``agentdeck agent --kind sleep`` in a process of its own, as deployed); a fresh database and
a random RabbitMQ and Redis prefix are used, and its queues, keys and database are removed
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentdeck.agents.context import TaskContext  # noqa: E402 - after the path is set
from agentdeck.agents.worker import Worker  # noqa: E402
from agentdeck.core.clock import SystemClock  # noqa: E402
from agentdeck.core.logs import configure_logging  # noqa: E402
from agentdeck.core.models import JSON  # noqa: E402
from agentdeck.core.scheduler import Scheduler  # noqa: E402
from agentdeck.core.settings import Settings  # noqa: E402
from agentdeck.core.spec import WorkflowSpec  # noqa: E402
from agentdeck.tui.wiring import build_runtime  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cleanup  # noqa: E402 - scripts/bench.py: the queues, keys and database

LOG: list[tuple[float, str]] = []


def mark(what: str) -> None:
    LOG.append((time.perf_counter(), what))


def log_queries() -> None:
    """Every pool connection logs its statements (asyncpg's query logger) into LOG."""
    create_pool = asyncpg.create_pool

    def logged(*args: Any, **kwargs: Any) -> Any:
        def logger(q: Any) -> None:
            text = " ".join(q.query.split())[:70]
            LOG.append((time.perf_counter(), f"SQL {q.elapsed * 1000:.2f}ms {text}"))

        async def init(conn: asyncpg.Connection) -> None:
            conn.add_query_logger(logger)

        return create_pool(*args, **{**kwargs, "init": init})

    asyncpg.create_pool = logged


def spec(n: int, chain: bool) -> WorkflowSpec:
    tasks = [
        {"key": f"t{i}", "capability": "noop", **({"needs": [f"t{i - 1}"]} if chain and i else {})}
        for i in range(n)
    ]
    return WorkflowSpec.model_validate({"name": "trace", "tasks": tasks})


def layers_spec(layers: int, width: int) -> WorkflowSpec:
    """``layers`` x ``width`` tasks, each needing two of the layer before (as bench.py's)."""
    tasks: list[dict[str, Any]] = []
    for layer in range(layers):
        for i in range(width):
            task: dict[str, Any] = {"key": f"l{layer}t{i}", "capability": "noop"}
            if layer:
                task["needs"] = [f"l{layer - 1}t{i}", f"l{layer - 1}t{(i + 1) % width}"]
            tasks.append(task)
    return WorkflowSpec.model_validate({"name": "trace", "tasks": tasks})


PARTS = (
    "_apply_reports",
    "_run_commands",
    "_dispatch",
    "_handle_due",
    "_recover_lost_agents",
    "_repair",
)
"""The scheduler's steps marked in LOG (with the Registry's calls): what a round spent on."""


def _marked(original: Any, name: str) -> Any:
    """``original`` (an async callable) with its start and end marked in LOG."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        # A refresh started ahead (core/ahead.py) runs beside the path, not on it.
        label = "ahead." + name if task and task.get_name().startswith("ahead-") else name
        mark(f"{label} >")
        try:
            return await original(*args, **kwargs)
        finally:
            mark(f"{label} <")

    return call


def instrument(runtime: Any) -> None:
    """Rounds, publishes and reports taken in, marked in LOG."""
    tick = Scheduler.tick

    async def timed(self: Scheduler) -> bool:
        mark("round start")
        busy = await tick(self)
        mark(f"round end busy={busy}")
        return busy

    Scheduler.tick = timed  # type: ignore[method-assign]
    # The round's parts and the Registry's calls, so that a slow task shows what it waited on.
    for part in PARTS:
        setattr(Scheduler, part, _marked(getattr(Scheduler, part), part))
    registry = runtime.registry
    for name in ("acquire_lease", "breakers", "get_breaker", "put_breaker", "agents"):
        setattr(registry, name, _marked(getattr(registry, name), f"registry.{name}"))
    bus = runtime.bus
    for name in ("publish_tasks", "publish_report", "publish_event"):
        original = getattr(bus, name)

        def wrap(original: Any = original, name: str = name) -> Any:
            async def publish(*args: Any, **kwargs: Any) -> Any:
                mark(f"{name} >")
                result = await original(*args, **kwargs)
                mark(f"{name} <")
                return result

            return publish

        setattr(bus, name, wrap())
    consume = bus.consume_reports

    async def reports() -> AsyncIterator[Any]:
        async for delivery in consume():
            mark("report in")
            yield delivery

    bus.consume_reports = reports


async def trace(args: argparse.Namespace) -> None:
    database = "agentdeck_trace_" + secrets.token_hex(4)
    admin = await asyncpg.connect(args.postgres)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    prefix = "trace-" + secrets.token_hex(3)
    settings = Settings.load(
        config_path=None,
        log_level="warning",
        bus_url=f"{args.amqp}?prefix={prefix}",
        store_url=args.postgres.rsplit("/", 1)[0] + f"/{database}",
        registry_url=f"{args.redis}?prefix={prefix}",
    )
    configure_logging("warning")
    runtime = build_runtime(settings, clock=SystemClock(), with_agents=False)
    agent = None
    if args.agent_process:
        env = {
            **os.environ,
            "AGENTDECK_BUS_URL": settings.bus_url,
            "AGENTDECK_STORE_URL": settings.store_url,
            "AGENTDECK_REGISTRY_URL": settings.registry_url,
            "AGENTDECK_LOG_LEVEL": "warning",
            "AGENTDECK_TRACING": "false",
        }
        agent = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
            [sys.executable, "-m", "agentdeck.tui.cli", "agent", "--kind", "sleep",
             "--option", "seconds=0", "--capability", "noop", "--concurrency", "200",
             "--started-after", "0.05", "--metrics-port", "0"],
            env=env,
        )  # fmt: skip
    else:

        async def noop(ctx: TaskContext) -> JSON:
            mark("agent runs")
            return {}

        runtime.services.append(
            Worker(runtime.bus, runtime.registry, {"noop": noop}, name="trace",
                   concurrency=200, started_after=0.05, clock=runtime.clock,
                   outputs=runtime.scheduler.outputs)
        )  # fmt: skip
    instrument(runtime)
    chain = args.workload == "chain"
    try:
        async with runtime:
            for _ in range(3):  # connections opened, queues declared
                wf = await runtime.client.submit(spec(1, False))
                await runtime.client.wait(wf.id, 60)
            LOG.clear()
            if chain:
                mark("submit")
                wf = await runtime.client.submit(spec(args.n, True))
                await runtime.client.wait(wf.id, 600)
            elif args.workload == "layers":
                mark("submit")
                wf = await runtime.client.submit(layers_spec(args.n, args.width))
                await runtime.client.wait(wf.id, 1200)
            else:
                for i in range(args.n):
                    mark(f"submit {i}")
                    wf = await runtime.client.submit(spec(1, False))
                    await runtime.client.wait(wf.id, 60)
            mark("done")
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait()
        # The run's queues (quorum queues: each an idle Raft group in the broker if left
        # behind), its Registry keys and its database go.
        await cleanup(args, prefix, database, "noop")
    report(args)


def per_task(slowest: int) -> None:
    """Lone tasks: submit -> the end of the report's round (the result written), p50/p95/p99,
    and for the ``slowest`` what ran between (time in each marked part, in ms)."""
    starts = [i for i, (_, w) in enumerate(LOG) if w.startswith("submit ")]
    rows: list[tuple[float, dict[str, float]]] = []
    for k, first in enumerate(starts):
        last = starts[k + 1] if k + 1 < len(starts) else len(LOG)
        window = LOG[first:last]
        t0, end, seen_report = window[0][0], None, False
        for at, what in window:
            seen_report |= what == "report in"
            if seen_report and what == "_apply_reports <":
                end = at
                break
        if end is None:
            continue
        open_at: dict[str, float] = {}
        spent: dict[str, float] = {}
        for at, what in window:
            if at > end:
                break
            name, _, edge = what.rpartition(" ")
            if edge == ">":
                open_at[name] = at
            elif edge == "<" and name in open_at:
                spent[name] = spent.get(name, 0.0) + (at - open_at.pop(name)) * 1000
        rows.append(((end - t0) * 1000, spent))
    ms = sorted(r[0] for r in rows)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))]

    print(f"submit -> result written: p50 {pct(0.5):.2f} p95 {pct(0.95):.2f} p99 {pct(0.99):.2f}")
    for prefix in (
        "registry.",
        "ahead.registry.",
        "_handle_due",
        "_recover_lost_agents",
        "_run_commands",
        "_repair",
    ):
        hit = [sum(v for n, v in spent.items() if n.startswith(prefix)) for _, spent in rows]
        hit = [v for v in hit if v > 0]
        if hit:
            print(
                f"  {prefix:<22} on the path of {len(hit)} of {len(rows)} tasks, "
                f"{sum(hit) / len(hit):.2f} ms each (max {max(hit):.2f})"
            )
    for total, spent in sorted(rows, key=lambda r: -r[0])[:slowest]:
        parts = ", ".join(
            f"{n} {v:.2f}" for n, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.05
        )
        print(f"  {total:7.2f} ms: {parts}")


def report(args: argparse.Namespace) -> None:
    if args.workload == "lone" and args.slowest:
        per_task(args.slowest)
    if args.show:
        start = previous = LOG[0][0]
        for at, what in LOG:
            print(f"{(at - start) * 1000:9.2f} +{(at - previous) * 1000:6.2f}  {what}")
            previous = at
    sql = [w for _, w in LOG if w.startswith("SQL")]
    # This process's own waiting (Client.wait reads the workflow) is not the scheduler's.
    polls = sum(1 for w in sql if "SELECT id, name, status, created_at" in w and "FOR" not in w)
    n = args.n

    def count(what: str) -> float:
        return sum(1 for _, w in LOG if w == what) / n

    commits = sum(1 for w in sql if w.endswith("COMMIT;")) / n
    marks = {w: at for at, w in LOG}
    # Wall time depends on the load: shown, not the figure to compare.
    wall = (marks["done"] - LOG[0][0]) * 1000 / n
    unit = {"chain": "step", "lone": "task", "layers": f"layer of {args.width}"}[args.workload]
    print(
        f"per {unit} ({n}): {(len(sql) - polls) / n:.1f} statements "
        f"(of which {commits:.1f} COMMIT), {count('publish_tasks >'):.1f} task publishes, "
        f"{count('round start'):.1f} rounds, {wall:.1f} ms; "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workload", choices=("lone", "chain", "layers"))
    p.add_argument("n", type=int, help="lone tasks, chain steps, or layers")
    p.add_argument("--width", type=int, default=100, help="layers: tasks per layer")
    p.add_argument("--show", action="store_true", help="print the timeline")
    p.add_argument("--slowest", type=int, default=0, help="lone: the N slowest tasks' parts")
    p.add_argument("--agent-process", action="store_true", help="the agent in its own process")
    p.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = p.parse_args()
    log_queries()
    asyncio.run(trace(args))


if __name__ == "__main__":
    main()
