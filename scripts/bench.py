"""End-to-end benchmark: no-op tasks through RabbitMQ + PostgreSQL + Redis.

The scheduler (``agentdeck --daemon`` with no agents) and the agents (``agentdeck agent --kind
echo``) run as separate processes, exactly as in production; this process only submits
workflows (through the Store, like ``agentdeck submit``) and reads the results. Everything
lives under a random RabbitMQ prefix, a fresh PostgreSQL database and a random Redis prefix,
all removed at the end.

Two phases:

- **light**: one single-task workflow at a time, the next submitted once the last finished:
  the overhead a lone task pays (nothing to batch with).
- **saturated**: ``--workflows`` workflows of ``--tasks`` independent tasks, submitted at once:
  throughput with both cores busy.

Latency is the task's ``created`` event (written by the submitting client) to its
``succeeded`` event (written by the scheduler when it applied the agent's result), both from
the Store, so how quickly this script notices a finished task does not count. Throughput is
tasks succeeded over the time from the first submit to the last ``succeeded``.

    .venv/bin/python scripts/bench.py                       # defaults: 200 light, 20 x 1,000
    .venv/bin/python scripts/bench.py --light 50 --workflows 5   # a quick look

The scenarios of issue 16 run one workload each on the same processes (the agent is the
built-in ``sleep`` for 0 s, whose output stays small along a chain) and print one line:

- ``lone``: ``--light`` lone tasks, one after the other: created -> succeeded p50/p95/p99;
- ``chain``: one workflow of ``--steps`` tasks, each needing the one before: ms a step;
- ``wide``: one workflow of ``--size`` (10,000) independent tasks: submit -> finished;
- ``layers``: ``--layers`` (100) x ``--width`` (100) tasks, task j of layer i needing tasks
  j and j+1 (mod width) of layer i-1: submit -> finished;
- ``rss``: ``--size`` x 10 (100,000) tasks run and stored, then the daemon's resident memory
  (``VmRSS``, and its peak ``VmHWM``, from ``/proc``).

``--scenario pipeline-refs`` measures instead what crosses the bus in a pipeline of large
outputs (``--steps`` x ``--output-kb``) on the embedded default, in this process
(:func:`pipeline_refs`); it needs none of the services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentdeck.backends.postgres import PostgresStore  # noqa: E402 - after the path is set
from agentdeck.core.client import Client  # noqa: E402
from agentdeck.core.clock import SystemClock  # noqa: E402
from agentdeck.core.spec import SpecLimits, WorkflowSpec  # noqa: E402
from agentdeck.core.states import TaskStatus, WorkflowStatus  # noqa: E402

AGENTDECK = [sys.executable, "-m", "agentdeck.tui.cli"]
SCENARIOS = ("lone", "chain", "wide", "layers", "rss")
"""The one-workload scenarios of issue 16 (see the module's docstring)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``parse_args([])`` gives the defaults (scripts/bench_peers.py reads
    them)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scenario",
        choices=("services", *SCENARIOS, "pipeline-refs"),
        default="services",
        help="services: the end-to-end run above; lone, chain, wide, layers, rss: one "
        "workload of issue 16 each (above); pipeline-refs: bytes over the bus in a "
        "pipeline of large outputs, on the embedded default",
    )
    p.add_argument("--steps", type=int, default=100, help="chain, pipeline-refs: steps")
    p.add_argument("--size", type=int, default=10_000, help="wide, rss: tasks per workflow")
    p.add_argument("--layers", type=int, default=100, help="layers: layers")
    p.add_argument("--width", type=int, default=100, help="layers: tasks per layer")
    p.add_argument(
        "--analyze",
        action="store_true",
        help="wide, layers, rss: ANALYZE the database once the work is submitted, as "
        "autovacuum would soon after (a server with autovacuum off keeps the statistics of "
        "the empty tables, and PostgreSQL then plans the ready-tasks query for a few rows)",
    )
    p.add_argument("--output-kb", type=int, default=200, help="pipeline-refs: KB per output")
    p.add_argument(
        "--inline-limit",
        type=int,
        default=65_536,
        help="pipeline-refs: output_inline_limit in bytes (the default setting too)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="pipeline-refs: the agent keeps no cache, as on another host: it reads every "
        "upstream output from the blob store",
    )
    p.add_argument("--light", type=int, default=200, help="lone tasks, one after the other")
    p.add_argument("--workflows", type=int, default=20, help="saturated: workflows")
    p.add_argument("--tasks", type=int, default=1000, help="saturated: tasks per workflow")
    p.add_argument("--agents", type=int, default=1, help="agent processes")
    p.add_argument("--concurrency", type=int, default=200, help="each agent's concurrency")
    p.add_argument("--batch-size", type=int, default=1000, help="scheduler batch size")
    p.add_argument("--started-after", type=float, default=0.05, help="agents' --started-after")
    p.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--keep-logs", action="store_true", help="print where the process logs are")
    p.add_argument(
        "--telemetry",
        action="store_true",
        help="tracing on and /metrics served by every process (default: both off)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=19400,
        help="with --telemetry: the daemon's port; agent i gets this + 1 + i",
    )
    return p.parse_args(argv)


@dataclass(frozen=True)
class AgentKind:
    """What the agent processes run: a built-in kind, the capability it serves, its options."""

    kind: str = "echo"
    capability: str = "echo"
    options: tuple[str, ...] = ()


ECHO = AgentKind()
NOOP = AgentKind(kind="sleep", capability="noop", options=("seconds=0",))
"""A no-op whose output stays the same size along a chain (``echo`` returns its upstream
outputs, which would grow with every step)."""


def spec(name: str, tasks: int, capability: str = "echo") -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {"name": name, "tasks": [{"key": f"t{i}", "capability": capability} for i in range(tasks)]}
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(label: str, latencies: list[float], extra: str = "") -> str:
    ms = [v * 1000 for v in latencies]
    return (
        f"{label:<10} n={len(ms):<6} p50={pct(ms, 0.5):7.2f} ms  p99={pct(ms, 0.99):7.2f} ms  "
        f"mean={statistics.fmean(ms):7.2f} ms{extra}"
    )


async def latencies(
    store: PostgresStore,
    workflow_ids: list[str],
    split: list[float] | None = None,
    ends: list[float] | None = None,
) -> tuple[list[float], float]:
    """Per task, created -> succeeded (seconds), and the last ``succeeded`` time; ``split``
    gets each task's created -> dispatched, ``ends`` each task's ``succeeded`` time."""
    pool = store._pool  # a bench may look behind the port: one query instead of 20,000
    assert pool is not None
    rows = await pool.fetch(
        "SELECT task_id, kind, at FROM task_events WHERE workflow_id = ANY($1::text[]) "
        "AND kind IN ('created', 'dispatched', 'succeeded')",
        workflow_ids,
    )
    at: dict[str, dict[str, float]] = {"created": {}, "dispatched": {}, "succeeded": {}}
    for r in rows:
        at[r["kind"]][r["task_id"]] = r["at"]
    created, done = at["created"], at["succeeded"]
    if split is not None:
        split += [at["dispatched"][t] - created[t] for t in done]
    if ends is not None:
        ends += done.values()
    return [done[t] - created[t] for t in done], max(done.values(), default=0.0)


async def wait_done(store: PostgresStore, workflow_id: str, poll: float) -> None:
    while (await store.get_workflow(workflow_id)).status == WorkflowStatus.RUNNING:
        await asyncio.sleep(poll)


@dataclass(frozen=True)
class Saturated:
    """The saturated phase's outcome: per-task latencies, tasks succeeded, seconds from the
    first submit to the last ``succeeded``, seconds spent submitting, and seconds from the
    first ``succeeded`` to the last."""

    latencies: list[float]
    succeeded: int
    elapsed: float
    submitted: float
    first_to_last: float


async def warm_up(client: Client, store: PostgresStore, capability: str = "echo") -> None:
    """Every process connected and the queues declared before anything is measured."""
    warm = await client.submit(spec("warm-up", 10, capability))
    await asyncio.wait_for(wait_done(store, warm.id, 0.05), 60)


async def run_light(
    client: Client, store: PostgresStore, n: int, capability: str = "echo", timeout: float = 30
) -> tuple[list[float], list[float]]:
    """``n`` single-task workflows, each submitted once the last one finished: per task,
    created -> succeeded and created -> dispatched (seconds)."""
    ids = []
    for i in range(n):
        wf = await client.submit(spec(f"light-{i}", 1, capability))
        await asyncio.wait_for(wait_done(store, wf.id, 0.001), timeout)
        ids.append(wf.id)
    to_dispatch: list[float] = []
    lat, _ = await latencies(store, ids, to_dispatch) if ids else ([], 0.0)
    return lat, to_dispatch


async def run_saturated(
    client: Client,
    store: PostgresStore,
    workflows: int,
    tasks: int,
    capability: str = "echo",
    timeout: float = 600,
) -> Saturated:
    """``workflows`` workflows of ``tasks`` independent tasks, submitted at once."""
    started = time.time()
    ids = [(await client.submit(spec(f"load-{i}", tasks, capability))).id for i in range(workflows)]
    submitted = time.time() - started
    for wf_id in ids:
        await asyncio.wait_for(wait_done(store, wf_id, 0.05), timeout)
    ends: list[float] = []
    lat, last = await latencies(store, ids, ends=ends)
    ok = sum(c.get(TaskStatus.SUCCEEDED, 0) for c in (await store.count_tasks(ids)).values())
    return Saturated(lat, ok, last - started, submitted, last - min(ends, default=last))


@contextlib.asynccontextmanager
async def open_client(
    store_url: str, max_tasks: int
) -> AsyncIterator[tuple[Client, PostgresStore]]:
    """A Client submitting through the benchmark's Store, and the Store to read results from."""
    store = PostgresStore.from_url(store_url, clock=SystemClock())
    await store.migrate()
    try:
        yield (
            Client(store, SystemClock(), limits=SpecLimits(max_tasks=max(max_tasks, 10_000))),
            store,
        )
    finally:
        await store.close()


async def bench(args: argparse.Namespace, store_url: str) -> None:
    async with open_client(store_url, args.tasks) as (client, store):
        await warm_up(client, store)
        if args.light:
            lat, to_dispatch = await run_light(client, store, args.light)
            print(line("light", lat, "   (one task at a time)"))
            print(line("  of which", to_dispatch, "   (created -> dispatched)"))
        if args.workflows:
            sat = await run_saturated(client, store, args.workflows, args.tasks)
            print(
                line(
                    "saturated",
                    sat.latencies,
                    f"\n           {sat.succeeded} tasks in {sat.elapsed:.2f} s = "
                    f"{sat.succeeded / sat.elapsed:,.0f} tasks/s "
                    f"({args.workflows} x {args.tasks}; submitting took {sat.submitted:.2f} s)",
                )
            )


async def cleanup(args: argparse.Namespace, prefix: str, database: str, capability: str) -> None:
    connection = await aio_pika.connect(args.amqp)
    try:
        channel = await connection.channel()
        for queue in (f"task.{capability}", "reports", "dead"):
            await channel.queue_delete(f"{prefix}.{queue}")
        for exchange in ("events", "control", "dlx"):
            await channel.exchange_delete(f"{prefix}.{exchange}")
    finally:
        await connection.close()
    r = aioredis.Redis.from_url(args.redis)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()
    conn = await asyncpg.connect(args.postgres)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_database(admin: str, name: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def stack(
    args: argparse.Namespace, agent: AgentKind = ECHO, pids: list[int] | None = None
) -> Iterator[str]:
    """The scheduler and ``args.agents`` agent processes on a fresh database, RabbitMQ prefix
    and Redis prefix; yields the Store URL (``pids`` gets the daemon's pid, then the
    agents'). On leaving (also on an error or Ctrl-C) the
    processes are stopped (SIGTERM, SIGKILL after 15 s) and everything is removed."""
    prefix = f"bench-{secrets.token_hex(4)}"
    database = f"agentdeck_bench_{secrets.token_hex(4)}"
    store_url = asyncio.run(create_database(args.postgres, database))
    logs = Path(tempfile.mkdtemp(prefix="agentdeck-bench-"))
    env: dict[str, Any] = {
        **os.environ,
        "AGENTDECK_HOME": str(logs),
        "AGENTDECK_BUS_URL": f"{args.amqp}?prefix={prefix}",
        "AGENTDECK_STORE_URL": store_url,
        "AGENTDECK_REGISTRY_URL": f"{args.redis}?prefix={prefix}",
        "AGENTDECK_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"),
        "AGENTDECK_LOG_FORMAT": "json",
        # Spans go to the in-process buffer (and to OTLP when OTEL_* says so).
        "AGENTDECK_TRACING": "true" if args.telemetry else "false",
        "AGENTDECK_METRICS_PORT": str(args.metrics_port if args.telemetry else 0),
        "AGENTDECK_SCHEDULER__BATCH_SIZE": str(args.batch_size),
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *cmd: str) -> None:
        with (logs / f"{name}.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [*AGENTDECK, *cmd], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            )
            if pids is not None:
                pids.append(procs[-1].pid)

    options = [arg for option in agent.options for arg in ("--option", option)]
    try:
        start("daemon", "--daemon")
        for i in range(args.agents):
            port = args.metrics_port + 1 + i if args.telemetry else 0
            start(f"agent{i}", "agent", "--kind", agent.kind, "--name", f"bench{i}",
                  "--capability", agent.capability, *options,
                  "--concurrency", str(args.concurrency),
                  "--started-after", str(args.started_after),
                  "--metrics-port", str(port))  # fmt: skip
        yield store_url
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        asyncio.run(cleanup(args, prefix, database, agent.capability))
        if args.keep_logs:
            print(f"process logs: {logs}")


async def pipeline_refs(args: argparse.Namespace) -> None:
    """A chain of ``--steps`` tasks, each reading the whole output of the one before and
    returning ``--output-kb`` KB of text, on the embedded default (memory bus, SQLite, blob
    store in a local folder) in this process. The bus is wrapped to count the messages and
    bytes published by kind; an output crosses the bus at most once when every kind's bytes
    stay far below steps x output size."""
    import collections

    from agentdeck.agents.context import TaskContext
    from agentdeck.agents.worker import Worker
    from agentdeck.core.logs import configure_logging
    from agentdeck.core.models import JSON
    from agentdeck.core.outputs import OutputCache, OutputStore
    from agentdeck.core.settings import Settings
    from agentdeck.tui.wiring import build_runtime

    home = Path(tempfile.mkdtemp(prefix="agentdeck-bench-refs-"))
    os.environ["AGENTDECK_HOME"] = str(home)
    for var in ("AGENTDECK_BLOB_URL", "AGENTDECK_STORE_URL", "AGENTDECK_BUS_URL"):
        os.environ.pop(var, None)
    settings = Settings.load(
        config_path=None,
        output_inline_limit=args.inline_limit,
        log_level="warning",
        scheduler={"poll_interval": 0.05},
    )
    configure_logging("warning")
    size = args.output_kb * 1000
    # Prose, as a model writes it (it compresses as text does): the docs, from a different
    # place for each step.
    corpus = "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    corpus *= size // len(corpus) + 2

    async def step(ctx: TaskContext) -> JSON:
        seen = sum(len(json.dumps(v)) for v in ctx.upstream.values())  # reads every input
        start = int(ctx.key[1:]) * 7919 % (len(corpus) - size)
        return {"step": ctx.key, "read": seen, "text": corpus[start : start + size]}

    runtime = build_runtime(settings, clock=SystemClock(), with_agents=False)
    outputs = runtime.scheduler.outputs
    assert outputs is not None
    if args.cold:  # the agent's own store over the same folder, caching nothing
        outputs = OutputStore(runtime.blobs, limit=args.inline_limit, cache=OutputCache(0))
    runtime.services.append(
        Worker(runtime.bus, runtime.registry, {"step": step}, name="bench", concurrency=4,
               clock=runtime.clock, outputs=outputs)
    )  # fmt: skip
    sent: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    bus: Any = runtime.bus
    publish_tasks, publish_report, publish_event = (
        bus.publish_tasks, bus.publish_report, bus.publish_event
    )  # fmt: skip

    async def tasks(messages: Any) -> None:
        for m in messages:
            sent["task"] += len(m.body)
            count["task"] += 1
        await publish_tasks(messages)

    async def report(body: bytes, headers: Any) -> None:
        sent["report"] += len(body)
        count["report"] += 1
        await publish_report(body, headers)

    async def event(body: bytes) -> None:
        sent["event"] += len(body)
        count["event"] += 1
        await publish_event(body)

    bus.publish_tasks, bus.publish_report, bus.publish_event = tasks, report, event
    chain = WorkflowSpec.model_validate(
        {
            "name": "pipeline-refs",
            "tasks": [
                {"key": f"s{i:03d}", "capability": "step",
                 **({"needs": [f"s{i - 1:03d}"]} if i else {})}
                for i in range(args.steps)
            ],
        }
    )  # fmt: skip
    async with runtime:
        started, cpu = time.perf_counter(), time.process_time()
        wf = await runtime.client.submit(chain)
        wf = await runtime.client.wait(wf.id, 600)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        done = await runtime.store.list_tasks(workflow_id=wf.id, limit=args.steps)
    # What the outputs weigh as JSON: a reference says it, an inline output is measured.
    outputs_bytes = sum(
        t.output["size"] if isinstance(t.output, dict) and "$blob" in t.output
        else len(json.dumps(t.output, separators=(",", ":")))
        for t in done
    )  # fmt: skip
    total = sum(sent.values())
    print(
        f"pipeline-refs: {args.steps} steps x {outputs_bytes / args.steps / 1e3:,.0f} kB "
        "of JSON each, "
        f"output_inline_limit {args.inline_limit:,} B{', cold agent' if args.cold else ''}; "
        f"workflow {wf.status.value} "
        f"in {elapsed:.2f} s ({elapsed / args.steps * 1000:.1f} ms a step; CPU of this "
        f"process {cpu / args.steps * 1000:.1f} ms a step)"
    )
    for kind in ("task", "report", "event"):
        print(
            f"  {kind:<7} {count[kind]:>6} messages {sent[kind] / 1e6:>10.3f} MB "
            f"({sent[kind] / max(1, count[kind]) / 1e3:,.1f} kB each)"
        )
    print(
        f"  all     {sum(count.values()):>6} messages {total / 1e6:>10.3f} MB = "
        f"{total / outputs_bytes:.3f} x the outputs' size; "
        f"blob reads {outputs.fetched}, cache hits {outputs.cache.hits}, "
        f"objects written {outputs.offloaded}"
    )


def chain_spec(steps: int, capability: str = NOOP.capability) -> WorkflowSpec:
    """One workflow of ``steps`` tasks, each needing the one before."""
    tasks = [
        {"key": f"t{i}", "capability": capability, **({"needs": [f"t{i - 1}"]} if i else {})}
        for i in range(steps)
    ]
    return WorkflowSpec.model_validate({"name": f"chain-{steps}", "tasks": tasks})


def layers_spec(layers: int, width: int, capability: str = NOOP.capability) -> WorkflowSpec:
    """``layers`` x ``width`` tasks; task j of layer i needs tasks j and j+1 (mod ``width``)
    of layer i-1, so a layer starts as the one before it finishes."""
    tasks = []
    for i in range(layers):
        for j in range(width):
            needs = sorted({f"l{i - 1}.{j}", f"l{i - 1}.{(j + 1) % width}"}) if i else []
            tasks.append({"key": f"l{i}.{j}", "capability": capability, "needs": needs})
    return WorkflowSpec.model_validate({"name": f"layers-{layers}x{width}", "tasks": tasks})


def memory_kb(pid: int) -> tuple[int, int]:
    """A process's resident memory and its peak (``VmRSS``, ``VmHWM``), in kB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def analyze(store: PostgresStore) -> None:
    """What autovacuum does after a large insert: fresh planner statistics."""
    pool = store._pool  # a bench may look behind the port
    assert pool is not None
    await pool.execute("ANALYZE")


async def time_finished(
    client: Client,
    store: PostgresStore,
    workflow: WorkflowSpec,
    fresh: bool = False,
    timeout: float = 600,
) -> tuple[float, str, float]:
    """Submit ``workflow`` and wait for it (``timeout`` s at most): seconds from just before
    the submit to the workflow's ``finished_at`` (written by the scheduler), its status, and
    the seconds the submit call took. ``fresh``: ANALYZE once it is submitted."""
    started = time.time()
    wf = await client.submit(workflow)
    if fresh:
        await analyze(store)
    submitted = time.time() - started
    await asyncio.wait_for(wait_done(store, wf.id, 0.01), timeout)
    done = await store.get_workflow(wf.id)
    assert done.finished_at is not None
    return done.finished_at - started, done.status.value, submitted


async def run_finished(
    client: Client, store: PostgresStore, workflow: WorkflowSpec, fresh: bool = False
) -> str:
    """:func:`time_finished`, as a line."""
    seconds, status, submitted = await time_finished(client, store, workflow, fresh)
    return (
        f"{seconds:.3f} s submit -> finished ({status}; "
        f"the submit call{' and ANALYZE' if fresh else ''} took {submitted:.3f} s)"
    )


async def scenario(args: argparse.Namespace, store_url: str, pids: list[int]) -> str:
    """Run ``args.scenario`` (one of :data:`SCENARIOS`); its result line."""
    size = max(args.size, args.steps, args.layers * args.width)
    async with open_client(store_url, size) as (client, store):
        await warm_up(client, store, NOOP.capability)
        if args.scenario == "lone":
            lat, to_dispatch = await run_light(client, store, args.light, NOOP.capability)
            ms = [v * 1000 for v in lat]
            return (
                f"lone n={len(ms)} p50={pct(ms, 0.5):.2f} p95={pct(ms, 0.95):.2f} "
                f"p99={pct(ms, 0.99):.2f} ms (created -> dispatched p50 "
                f"{pct(to_dispatch, 0.5) * 1000:.2f} ms)"
            )
        if args.scenario == "chain":
            wf = await client.submit(chain_spec(args.steps))
            await asyncio.wait_for(wait_done(store, wf.id, 0.01), 600)
            lat, _ = await latencies(store, [wf.id])
            if len(lat) != args.steps:
                return f"chain FAILED: {len(lat)} of {args.steps} steps succeeded"
            # Every step was created at the submit: the longest is submit -> the last step.
            return f"chain {args.steps} steps: {max(lat) / args.steps * 1000:.2f} ms a step"
        if args.scenario == "wide":
            return f"wide {args.size}: " + await run_finished(
                client, store, spec("wide", args.size, NOOP.capability), args.analyze
            )
        if args.scenario == "layers":
            return f"layers {args.layers}x{args.width}: " + await run_finished(
                client, store, layers_spec(args.layers, args.width), args.analyze
            )
        before = memory_kb(pids[0])
        ids = [
            (await client.submit(spec(f"rss-{i}", args.size, NOOP.capability))).id
            for i in range(10)
        ]
        if args.analyze:
            await analyze(store)
        for wf_id in ids:
            await asyncio.wait_for(wait_done(store, wf_id, 0.1), 1200)
        total = await store.total_tasks()
        rss, peak = memory_kb(pids[0])
        return (
            f"rss: {total:,} tasks stored; daemon VmRSS {rss / 1024:.0f} MB, peak VmHWM "
            f"{peak / 1024:.0f} MB (after the warm-up: {before[0] / 1024:.0f} MB)"
        )


def main() -> None:
    args = parse_args()
    if args.scenario == "pipeline-refs":
        asyncio.run(pipeline_refs(args))
        return
    if args.scenario in SCENARIOS:
        pids: list[int] = []
        load = Path("/proc/loadavg").read_text().split()[:3]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with stack(args, NOOP, pids) as store_url:
            result = asyncio.run(scenario(args, store_url, pids))
        print(f"{when} UTC load {' '.join(load)}: {result}")
        return
    print(
        f"agentdeck bench: scheduler + {args.agents} agent process(es) x concurrency "
        f"{args.concurrency}, batch {args.batch_size}, started-after {args.started_after}, "
        f"telemetry {'on' if args.telemetry else 'off'}; "
        f"{os.cpu_count()} CPU(s)"
    )
    with stack(args) as store_url:
        asyncio.run(bench(args, store_url))


if __name__ == "__main__":
    main()
