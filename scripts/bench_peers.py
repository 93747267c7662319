"""agentdeck, Dramatiq and Celery side by side on one RabbitMQ, in one run (issue 16).

Each repetition gives every system a turn, one system at a time (the order rotates from one
repetition to the next), and each turn runs three no-op workloads:

- **saturated**: ``--workflows`` x ``--tasks`` tasks on a full queue; tasks/s between the
  first task done and the last.
- **latency**: ``--light`` lone tasks, each submitted once the last one was done; submit ->
  done per task (p50/p95/p99).
- **chain**: one chain of ``--chain`` tasks, each started by the end of the one before; submit
  -> the last one done, divided by the steps (ms per step).

agentdeck's turns then run issue 16's workloads that no peer has (``0`` skips one): **wide**,
one workflow of ``--wide`` independent tasks, and **layers**, ``--layers`` x 100 tasks, each
timed submit -> the workflow finished; and **rss**, the daemon's resident memory once the
store holds ``--stored`` tasks, all done. The page ends with each target of the issue, the
figure of this run and whether it is met.

agentdeck runs its real persisted path, as scripts/bench.py does (its functions, reused): the
scheduler (``agentdeck --daemon``) and one agent process on RabbitMQ + PostgreSQL + Redis,
every transition and result written. Dramatiq (2 processes x 8 threads) and Celery (prefork,
-c 2) run with no result backend, their workers started for their turn and stopped after it;
see scripts/peers/. Dramatiq and Celery live in a venv of their own (``--venv``, the
``bench`` extra of pyproject.toml, with matplotlib): this script makes it the first time and
runs itself again inside it.

It writes ``peers-<UTC time>.md`` (the table), ``.png`` (the plot) and ``.json`` (every
sample) under ``--out``, with the load (/proc/loadavg) before and after each turn and the
versions of everything. Every wait has a deadline (``--timeout`` a workload); the worker
processes are stopped on any exit, Ctrl-C and SIGTERM included, and the queues, database and
keys of the run are removed.

    .venv/bin/python scripts/bench_peers.py --quick            # a smoke run, a few minutes
    .venv/bin/python scripts/bench_peers.py --reps 3           # the full sizes, three turns each
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

import bench  # noqa: E402 - scripts/ is on the path from here on
from peers.report import SYSTEMS, Turn, markdown, plot, plot_title, turn_from_dict  # noqa: E402

from agentdeck.core.spec import WorkflowSpec  # noqa: E402

FULL = {"light": 200, "chain": 1000, "workflows": 20, "tasks": 1000}
QUICK = {"light": 30, "chain": 100, "workflows": 2, "tasks": 1000}
BIG_FULL = {"wide": 10_000, "layers": 100, "stored": 100_000}
BIG_QUICK = {"wide": 1000, "layers": 10, "stored": 10_000}
"""agentdeck's own workloads of issue 16 (no peer runs them): one workflow of ``wide``
independent tasks; ``layers`` x :data:`LAYER_WIDTH`; the daemon's memory once the store holds
``stored`` tasks. 0 skips one."""
LAYER_WIDTH = 100
RSS_WORKFLOW = 10_000
"""The RSS workload submits workflows of this many tasks until the store holds ``stored``."""
NOOP = bench.AgentKind(kind="sleep", capability="noop", options=("seconds=0",))
"""agentdeck's no-op: ``sleep`` for 0 s, whose output stays the same size along a chain
(``echo`` returns its upstream outputs, which would grow with every step)."""

VERSIONED = ("dramatiq", "pika", "celery", "kombu", "amqp", "billiard", "aio-pika", "asyncpg")


class BenchError(Exception):
    """A workload failed or ran past its deadline; the message says which and why."""


# ---------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, validated: sizes resolved (``--quick`` or the full ones, then any
    size given), ``systems`` a list. One error naming the bad value and what is allowed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--reps", type=int, default=2, help="turns per system (default 2)")
    p.add_argument("--light", type=int, help="lone tasks (200; quick 30)")
    p.add_argument("--chain", type=int, help="chain steps (1000; quick 100)")
    p.add_argument("--workflows", type=int, help="saturated: agentdeck workflows (20; quick 2)")
    p.add_argument("--tasks", type=int, help="saturated: tasks per workflow (1000)")
    p.add_argument("--wide", type=int, help="agentdeck: one workflow of N tasks (10000; 0 skips)")
    p.add_argument(
        "--layers", type=int, help=f"agentdeck: N layers x {LAYER_WIDTH} tasks (100; 0 skips)"
    )
    p.add_argument(
        "--stored",
        type=int,
        help="agentdeck: daemon RSS once the store holds N tasks (100000; 0 skips)",
    )
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, from {', '.join(SYSTEMS)} (default: all)",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds for one workload (default 300)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench", help="results folder")
    p.add_argument("--venv", type=Path, default=ROOT / ".bench-venv", help="the peers' venv")
    p.add_argument(
        "--no-venv", action="store_true", help="run in this interpreter (it has the extra)"
    )
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="run nothing: write the page and plot of an earlier run again from its .json",
    )
    p.add_argument("--keep-logs", action="store_true", help="print where the process logs are")
    p.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, default in sizes.items():
        value = getattr(args, name)
        if value is None:
            setattr(args, name, default)
        elif value < 1:
            p.error(f"--{name} must be at least 1, got {value}")
    for name, default in (BIG_QUICK if args.quick else BIG_FULL).items():
        value = getattr(args, name)
        if value is None:
            setattr(args, name, default)
        elif value < 0:
            p.error(f"--{name} must be 0 (skip) or more, got {value}")
    if args.reps < 1:
        p.error(f"--reps must be at least 1, got {args.reps}")
    if args.timeout <= 0:
        p.error(f"--timeout must be more than 0 seconds, got {args.timeout:g}")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        p.error(
            f"--systems {args.systems!r}: unknown {', '.join(map(repr, unknown)) or 'empty'}; "
            f"choose from {', '.join(SYSTEMS)}"
        )
    args.systems = list(dict.fromkeys(systems))
    return args


def turn_order(systems: list[str], rep: int) -> list[str]:
    """The systems in repetition ``rep``'s order (1-based): rotated by one each repetition, so
    no system always runs first, on a machine still busy with the last one's clean-up."""
    k = (rep - 1) % len(systems)
    return systems[k:] + systems[:k]


# ---------------------------------------------------------------------------- the venv


def in_venv(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def ensure_venv(venv: Path) -> None:
    """Makes ``venv`` with agentdeck and the ``bench`` extra (pinned by requirements.lock where
    it pins), unless its stamp is newer than pyproject.toml and requirements.lock."""
    stamp = venv / ".installed-stamp"
    inputs = [ROOT / "pyproject.toml", ROOT / "requirements.lock"]
    if stamp.exists() and all(stamp.stat().st_mtime >= f.stat().st_mtime for f in inputs):
        return
    print(f"installing Dramatiq, Celery and matplotlib into {venv} (once) ...", flush=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "-c", "requirements.lock", "-e", ".[bench]"],
        cwd=ROOT,
        check=True,
    )
    stamp.touch()


# ---------------------------------------------------------------------------- the machine


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def git_revision() -> str:
    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{git('rev-parse', '--short', 'HEAD') or 'unknown'}{dirty}"


async def server_versions(args: argparse.Namespace) -> dict[str, str]:
    """Versions the servers report; "unknown" for one that did not say."""
    import aio_pika
    import asyncpg
    import redis.asyncio as aioredis

    found: dict[str, str] = {}
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(args.amqp)
        try:
            props = connection.transport.connection.server_properties  # type: ignore[union-attr]
            found["RabbitMQ"] = str(props.get("version", "unknown"))
        finally:
            await connection.close()
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(args.postgres)
        try:
            found["PostgreSQL"] = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    with contextlib.suppress(Exception):
        r = aioredis.Redis.from_url(args.redis)
        try:
            found["Redis"] = str((await r.info("server"))["redis_version"])
        finally:
            await r.aclose()
    return {k: found.get(k, "unknown") for k in ("RabbitMQ", "PostgreSQL", "Redis")}


def describe(args: argparse.Namespace, versions: dict[str, str]) -> dict[str, str]:
    """The page's header: command, machine, versions, setups and sizes."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    packages = ", ".join(f"{name} {version(name)}" for name in VERSIONED)
    return {
        "command": "`" + " ".join(["scripts/bench_peers.py", *sys.argv[1:]]) + "`",
        "machine": f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}",
        "code": f"agentdeck {version('agentdeck')} at {git_revision()}",
        "servers": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "Python": f"{platform.python_version()}; {packages}",
        "agentdeck": "scheduler (`agentdeck --daemon`) + 1 agent process (`sleep` 0 s, "
        f"concurrency {bench.parse_args([]).concurrency}); RabbitMQ quorum queues, every "
        "transition and result in PostgreSQL",
        "Dramatiq": "2 processes x 8 threads, no result backend, default middleware; classic queue",
        "Celery": "prefork -c 2, no results, acks before running (its default); classic queue",
        "sizes": f"saturated {args.workflows} x {args.tasks} tasks, {args.light} lone tasks, a "
        f"chain of {args.chain}; {args.reps} turn(s) per system; {args.timeout:g} s a workload",
    }


# ---------------------------------------------------------------------------- agentdeck


def chain_spec(steps: int) -> WorkflowSpec:
    """One workflow of ``steps`` no-op tasks, each needing the one before."""
    tasks = [{"key": "t0", "capability": NOOP.capability}] + [
        {"key": f"t{i}", "capability": NOOP.capability, "needs": [f"t{i - 1}"]}
        for i in range(1, steps)
    ]
    return WorkflowSpec.model_validate({"name": f"chain-{steps}", "tasks": tasks})


async def agentdeck_workloads(
    args: argparse.Namespace, store_url: str, turn: Turn, daemon_pid: int
) -> None:
    cap, timeout = NOOP.capability, args.timeout
    async with bench.open_client(store_url, max(args.tasks, args.chain)) as (client, store):
        await bench.warm_up(client, store, cap)
        with record_failure(turn, "saturated"):
            sat = await asyncio.wait_for(
                bench.run_saturated(client, store, args.workflows, args.tasks, cap, timeout),
                timeout,
            )
            turn.saturated_tasks, turn.saturated_seconds = sat.succeeded, sat.first_to_last
        with record_failure(turn, "latency"):
            lat, _ = await asyncio.wait_for(
                bench.run_light(client, store, args.light, cap, timeout), timeout
            )
            turn.latency = lat
        with record_failure(turn, "chain"):
            wf = await client.submit(chain_spec(args.chain))
            await asyncio.wait_for(bench.wait_done(store, wf.id, 0.01), timeout)
            lat, _ = await bench.latencies(store, [wf.id])
            if len(lat) != args.chain:
                raise BenchError(f"{len(lat)} of {args.chain} chain steps succeeded")
            # Every step was created at the submit: the longest is submit -> the last step.
            turn.chain_steps, turn.chain_seconds = args.chain, max(lat)
        await big_workloads(args, client, store, turn, daemon_pid)


async def big_workloads(
    args: argparse.Namespace, client: Any, store: Any, turn: Turn, daemon_pid: int
) -> None:
    """agentdeck's own workloads of issue 16, after the shared ones, on the same processes
    (``daemon_pid``: the scheduler's, whose memory the last one reads)."""
    timeout = args.timeout
    if args.wide:
        with record_failure(turn, "wide"):
            seconds, status, _ = await bench.time_finished(
                client, store, bench.spec("wide", args.wide, NOOP.capability), timeout=timeout
            )
            if status != "succeeded":
                raise BenchError(f"the wide workflow ended {status}")
            turn.wide_tasks, turn.wide_seconds = args.wide, seconds
    if args.layers:
        with record_failure(turn, "layers"):
            spec = bench.layers_spec(args.layers, LAYER_WIDTH, NOOP.capability)
            seconds, status, _ = await bench.time_finished(client, store, spec, timeout=timeout)
            if status != "succeeded":
                raise BenchError(f"the layers workflow ended {status}")
            turn.layers, turn.layers_seconds = (args.layers, LAYER_WIDTH), seconds
    if args.stored:
        with record_failure(turn, "rss"):
            await asyncio.wait_for(fill_store(args.stored, client, store), timeout)
            rss, peak = bench.memory_kb(daemon_pid)
            turn.stored_tasks = await store.total_tasks()
            turn.rss_mb = (rss / 1024, peak / 1024)


async def fill_store(stored: int, client: Any, store: Any) -> None:
    """Submit workflows of :data:`RSS_WORKFLOW` no-op tasks until the store holds ``stored``
    tasks or more, and wait until every one of them is done."""
    ids = []
    while await store.total_tasks() < stored:
        size = min(RSS_WORKFLOW, stored - await store.total_tasks())
        ids.append((await client.submit(bench.spec(f"rss-{len(ids)}", size, NOOP.capability))).id)
    for wf_id in ids:
        await bench.wait_done(store, wf_id, 0.1)


def agentdeck_turn(args: argparse.Namespace, turn: Turn) -> None:
    opts = bench.parse_args(
        ["--amqp", args.amqp, "--postgres", args.postgres, "--redis", args.redis]
    )
    opts.keep_logs = args.keep_logs
    pids: list[int] = []  # the daemon's first, then the agent's
    with bench.stack(opts, NOOP, pids) as store_url:
        asyncio.run(agentdeck_workloads(args, store_url, turn, pids[0]))


# ---------------------------------------------------------------------------- the peers


def worker_command(system: str, queue: str) -> list[str]:
    """How the issue ran each peer's workers."""
    if system == "dramatiq":
        return [sys.executable, "-m", "dramatiq", "peers.dramatiq_app",
                "--processes", "2", "--threads", "8", "--path", str(SCRIPTS)]  # fmt: skip
    return [sys.executable, "-m", "celery", "-A", "peers.celery_app", "worker",
            "-P", "prefork", "-c", "2", "-Q", queue, "-l", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip


@contextlib.contextmanager
def workers(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """The worker processes, in a process group of their own, running while inside; on leaving
    the group gets SIGTERM, then SIGKILL after 20 s."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=SCRIPTS, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        # Stragglers of the group (a worker child still draining) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def drive(system: str, workload: str, n: int, env: dict[str, str], timeout: float) -> Any:
    """Runs one workload of a peer's driver (scripts/peers/driver.py); its JSON result."""
    cmd = [sys.executable, "-m", f"peers.{system}_app", workload, str(n), "--timeout", str(timeout)]
    try:
        done = subprocess.run(
            cmd, cwd=SCRIPTS, env=env, capture_output=True, text=True, timeout=timeout + 30
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{workload}: no answer within {timeout + 30:g} s") from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"{workload}: exit {done.returncode}: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_turn(args: argparse.Namespace, system: str, turn: Turn, logs: Path) -> None:
    token = secrets.token_hex(4)
    queue = f"bench-peers-{token}"
    env = {
        **os.environ,
        "PYTHONPATH": str(SCRIPTS),
        "PEERS_AMQP_URL": args.amqp,
        "PEERS_REDIS_URL": args.redis,
        "PEERS_QUEUE": queue,
        "PEERS_PREFIX": f"bench-peers-{token}",
    }
    total = args.workflows * args.tasks
    try:
        # The queue is filled before the workers start: the saturated figure is the workers'
        # pace on a full queue, not the pace of one client process sending.
        with record_failure(turn, "saturated fill"):
            drive(system, "fill", total, env, args.timeout)
        with workers(worker_command(system, queue), env, logs / f"{system}.log"):
            with record_failure(turn, "saturated"):
                drained = drive(system, "drain", total, env, args.timeout)
                turn.saturated_tasks = total
                turn.saturated_seconds = drained["last"] - drained["first"]
            with record_failure(turn, "latency"):
                turn.latency = drive(system, "latency", args.light, env, args.timeout)["samples"]
            with record_failure(turn, "chain"):
                chain = drive(system, "chain", args.chain, env, args.timeout)
                turn.chain_steps, turn.chain_seconds = args.chain, chain["elapsed"]
    finally:
        asyncio.run(asyncio.wait_for(peer_cleanup(args, system, queue, env["PEERS_PREFIX"]), 60))


async def peer_cleanup(args: argparse.Namespace, system: str, queue: str, prefix: str) -> None:
    """Deletes the turn's queues (Dramatiq's delay and dead-letter queues too), Celery's
    exchange and the completion counters."""
    import aio_pika
    import redis.asyncio as aioredis

    connection = await aio_pika.connect(args.amqp)
    try:
        channel = await connection.channel()
        names = [queue, f"{queue}.DQ", f"{queue}.XQ"] if system == "dramatiq" else [queue]
        for name in names:
            await channel.queue_delete(name)
        if system == "celery":
            await channel.exchange_delete(queue)
    finally:
        await connection.close()
    r = aioredis.Redis.from_url(args.redis)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


# ---------------------------------------------------------------------------- the run


@contextlib.contextmanager
def record_failure(turn: Turn, workload: str) -> Iterator[None]:
    """A workload that fails or times out is written down and the turn goes on."""
    try:
        yield
    except Exception as exc:  # a benchmark reports what broke and carries on
        turn.errors.append(f"{workload}: {type(exc).__name__}: {exc}")
        print(f"  {turn.system} {workload} failed: {exc}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def broker_watch(url: str, turn: Turn) -> Iterator[None]:
    """Holds a connection to RabbitMQ across the turn and writes down, in the turn, if the
    broker dropped it: RabbitMQ restarted (on a shared machine, other test suites restart it)
    and the turn's figures include the outage and the reconnections."""
    try:
        import pika
    except ImportError:  # --no-venv in an interpreter without the extra: no watch
        yield
        return
    params = pika.URLParameters(url)
    params.heartbeat = 0  # nothing reads the connection during the turn: no heartbeats due
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        turn.disturbances.append(f"RabbitMQ refused a connection at the start: {exc!r}")
        yield
        return
    try:
        yield
    finally:
        try:
            connection.process_data_events(0)
            lost = connection.is_closed
        except pika.exceptions.AMQPError:
            lost = True
        if lost:
            turn.disturbances.append("RabbitMQ closed its connections during the turn (a restart)")
        else:
            connection.close()


def run(args: argparse.Namespace, turns: list[Turn]) -> None:
    """Every turn of every repetition, each appended to ``turns`` once it is over."""
    logs = Path(tempfile.mkdtemp(prefix="agentdeck-bench-peers-"))
    try:
        for rep in range(1, args.reps + 1):
            for system in turn_order(args.systems, rep):
                turn = Turn(system, rep, now_utc(), loadavg())
                print(f"rep {rep}: {system} (load {turn.load_before[0]:.2f}) ...", flush=True)
                started = time.monotonic()
                with broker_watch(args.amqp, turn), record_failure(turn, "turn"):
                    if system == "agentdeck":
                        agentdeck_turn(args, turn)
                    else:
                        peer_turn(args, system, turn, logs)
                turn.load_after = loadavg()
                turns.append(turn)
                print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if args.keep_logs:
            print(f"peer worker logs: {logs}")


def write_results(base: Path, turns: list[Turn], meta: dict[str, str]) -> Path:
    """Writes ``base`` + ``.md`` (the page), ``.png`` (the plot) and ``.json`` (meta and every
    sample, which ``--render`` reads back); the page's path."""
    base.parent.mkdir(parents=True, exist_ok=True)
    png = base.with_suffix(".png")
    plot(turns, png, plot_title(turns, meta))
    page = base.with_suffix(".md")
    page.write_text(markdown(turns, meta, png.name))
    raw = {"meta": meta, "turns": [asdict(t) for t in turns]}
    base.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    return page


def new_base(args: argparse.Namespace) -> Path:
    stem = "peers-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return args.out / (stem + ("-quick" if args.quick else ""))


def render(path: Path) -> Path:
    """Writes the page and the plot of a run again from its ``.json`` (the same samples)."""
    if path.suffix != ".json" or not path.is_file():
        raise SystemExit(f"--render {str(path)!r}: not a .json file written by this script")
    raw = json.loads(path.read_text())
    return write_results(
        path.with_suffix(""), [turn_from_dict(t) for t in raw["turns"]], raw["meta"]
    )


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every clean-up on the way out


def main() -> None:
    args = parse_args()
    if not args.no_venv and not in_venv(args.venv):
        ensure_venv(args.venv)
        python = str(args.venv / "bin" / "python")
        os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])
    if args.render:
        print(f"written: {render(args.render)} (+ .png)")
        return
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    meta = describe(args, asyncio.run(asyncio.wait_for(server_versions(args), 60)))
    for key, value in meta.items():
        print(f"{key}: {value}")
    turns: list[Turn] = []
    try:
        run(args, turns)
    except (KeyboardInterrupt, SystemExit):
        # The turns that ended are kept, and the page says the run was cut short.
        meta["stopped"] = f"interrupted at {now_utc()} UTC, after {len(turns)} turn(s)"
        raise
    finally:
        if turns:
            page = write_results(new_base(args), turns, meta)
            print(page.read_text())
            print(f"written: {page} (+ .png, .json)")


if __name__ == "__main__":
    main()
