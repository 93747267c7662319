"""agentdeck as a distributed system: a daemon and agent processes that share nothing but the
RabbitMQ, PostgreSQL and Redis URLs, through an agent's SIGKILL and a broker restart.

Each test works on a random RabbitMQ prefix, a fresh PostgreSQL database and a random Redis
key prefix, and removes all three afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
import redis.asyncio as aioredis
import yaml

from agentdeck.backends.postgres import PostgresStore
from agentdeck.backends.postgres.testing import scratch_database
from agentdeck.core.clock import SystemClock
from agentdeck.core.states import TaskStatus, WorkflowStatus
from tests.conftest import IN_CI, require_service
from tests.e2e.harness import AGENTDECK, ROOT, Procs, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

HOST = "127.0.0.1"
BROKER = f"amqp://guest:guest@{HOST}:5672/"
REDIS = f"redis://{HOST}:6379/0"
CAPABILITIES = ("echo", "sleep")
#: The longest a whole fault run may take once its workflows are submitted.
RUN_LIMIT = 120.0
#: ``e2e-<pid>-<hex>``: a run killed before its clean-up is recognised (its pid is gone) and
#: swept by the next run on this host, so leftovers never pile up.
PREFIX_RE = re.compile(r"(e2e-(\d+)-[0-9a-f]+)[.:]")
_swept: list[bool] = []


class Cluster(Procs):
    """Processes on one private slice of the three services."""

    def __init__(self, home: Path, prefix: str, store_url: str) -> None:
        self.prefix = prefix
        self.store_url = store_url
        super().__init__(
            home,
            {
                "AGENTDECK_BUS_URL": f"{BROKER}?prefix={prefix}",
                "AGENTDECK_STORE_URL": store_url,
                "AGENTDECK_REGISTRY_URL": f"{REDIS}?prefix={prefix}",
                "AGENTDECK_LOG_FORMAT": "json",
                "AGENTDECK_SCHEDULER__POLL_INTERVAL": "0.1",
                "AGENTDECK_SCHEDULER__HEARTBEAT_INTERVAL": "0.5",
            },
        )

    def agent(self, name: str, kind: str, concurrency: int = 4) -> subprocess.Popen[bytes]:
        """Start ``agentdeck agent`` (no config file: the URLs are all it gets)."""
        return self.start(
            name, "agent", "--kind", kind, "--name", name, "--concurrency", str(concurrency)
        )

    async def store(self) -> PostgresStore:
        store = PostgresStore.from_url(self.store_url, clock=SystemClock())
        await store.migrate()
        return store

    async def remove_broker_and_registry_state(self) -> None:
        """Delete this prefix's queues and exchanges, and its Redis keys."""
        await remove_prefixes([self.prefix])


async def remove_prefixes(prefixes: list[str]) -> None:
    """Delete the queues, exchanges and Redis keys of every prefix given."""
    connection = await aio_pika.connect(BROKER, timeout=10)
    try:
        channel = await connection.channel()
        for prefix in prefixes:
            queues = [f"{prefix}.task.{c}" for c in CAPABILITIES]
            for name in [*queues, f"{prefix}.reports", f"{prefix}.dead"]:
                await channel.queue_delete(name)
            for kind in ("events", "control", "dlx"):
                await channel.exchange_delete(f"{prefix}.{kind}")
    finally:
        await connection.close()
    client = aioredis.Redis.from_url(REDIS)
    try:
        for prefix in prefixes:
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


async def sweep_killed_runs() -> None:
    """Once per process: remove what runs on this host that were killed left behind."""
    if _swept or shutil.which("rabbitmqctl") is None:
        return
    _swept.append(True)
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *("list_queues", "-q", "--no-table-headers", "name"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(60):
        listed = (await process.communicate())[0].decode()
    client = aioredis.Redis.from_url(REDIS)
    try:
        keys = [k.decode() async for k in client.scan_iter(match="e2e-*", count=1000)]
    finally:
        await client.aclose()
    found = {m[1]: int(m[2]) for m in PREFIX_RE.finditer("\n".join([*listed.split(), *keys]))}
    dead = [prefix for prefix, pid in found.items() if not _alive(pid)]
    if dead:
        await remove_prefixes(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    for name, port in (("RabbitMQ", 5672), ("PostgreSQL", 5432), ("Redis", 6379)):
        require_service(name, HOST, port)
    await sweep_killed_runs()
    async with scratch_database() as store_url:
        node = Cluster(tmp_path, f"e2e-{os.getpid()}-{secrets.token_hex(4)}", store_url)
        try:
            yield node
        finally:
            node.stop_all()
            async with asyncio.timeout(30):
                await node.remove_broker_and_registry_state()


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` (bounded); skip where it is missing, except in CI."""
    path = shutil.which("rabbitmqctl")
    if path is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is not installed")
        pytest.skip("rabbitmqctl is not installed")
    done = subprocess.run([path, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def consumers(prefix: str) -> dict[str, int]:
    """Consumers per queue of ``prefix``, as the broker sees them."""
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name", "consumers")
    rows = (line.split() for line in out.splitlines())
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[0].startswith(f"{prefix}.")}


def chains_spec(path: Path, name: str, chains: int, length: int, seconds: float) -> Path:
    """A workflow of ``chains`` independent chains of ``length`` sleep tasks each."""
    tasks = [
        {
            "key": f"c{c}-{i}",
            "capability": "sleep",
            "input": {"seconds": seconds},
            "timeout": 30,
            **({"needs": [f"c{c}-{i - 1}"]} if i else {}),
        }
        for c in range(chains)
        for i in range(length)
    ]
    path.write_text(yaml.safe_dump({"name": name, "tasks": tasks}))
    return path


def test_daemon_and_three_agent_processes_run_a_to_b_with_nothing_but_the_urls(
    cluster: Cluster,
) -> None:
    """A daemon with no agents and three `agentdeck agent` processes run A then B."""
    cluster.start("daemon", "--daemon")
    for i in range(3):
        cluster.agent(f"echo{i}", "echo")

    def registered() -> set[str]:
        listed = cluster.cli("agents", "--json")
        assert listed.returncode == 0, listed.stderr
        return {a["name"].partition("@")[0] for a in json.loads(listed.stdout)}

    deadline = time.monotonic() + 30
    while registered() != {"echo0", "echo1", "echo2"}:
        assert time.monotonic() < deadline, registered()
        time.sleep(0.2)
    done = cluster.cli(
        "submit", str(ROOT / "examples" / "a_to_b.yaml"), "--wait", "--json", "--timeout", "60"
    )
    assert done.returncode == 0, done.stderr + cluster.log("daemon")
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    tasks = {t["key"]: t for t in result["tasks"]}
    assert tasks["b"]["output"]["upstream"]["a"] == tasks["a"]["output"]
    assert tasks["a"]["agent_id"].startswith("echo")


@pytest.mark.timeout(240)
async def test_500_tasks_survive_an_agent_sigkill_and_a_broker_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    """500 tasks in 5 workflows on 3 agent processes: one agent is SIGKILLed mid-task and the
    broker restarts mid-run; every task succeeds exactly once and no consumer stays dead."""
    rabbitmqctl("status")  # skip early where the broker cannot be driven
    cluster.start("daemon", "--daemon")
    for i in range(3):
        cluster.agent(f"ag{i}", "sleep", concurrency=4)
    workflows = []
    for w in range(5):
        spec = chains_spec(tmp_path / f"wf{w}.yaml", f"wf{w}", chains=10, length=10, seconds=0.15)
        submitted = cluster.cli("submit", str(spec))
        assert submitted.returncode == 0, submitted.stderr
        workflows.append(submitted.stdout.strip())
    store = await cluster.store()
    restarted = False
    try:

        async def succeeded() -> int:
            counts = await store.count_tasks(workflows)
            return sum(c.get(TaskStatus.SUCCEEDED, 0) for c in counts.values())

        async def victim_busy() -> bool:
            running = await store.list_tasks(status=[TaskStatus.RUNNING], limit=1000)
            return any((t.agent_id or "").startswith("ag0@") for t in running) and (
                await succeeded() >= 30
            )

        async with asyncio.timeout(RUN_LIMIT):
            await wait_for(victim_busy, RUN_LIMIT)
            cluster.procs["ag0"].send_signal(signal.SIGKILL)
            cluster.procs["ag0"].wait(10)

            async def half_done() -> bool:
                return await succeeded() >= 200

            await wait_for(half_done, RUN_LIMIT)
            try:
                rabbitmqctl("stop_app")
                restarted = True
                await asyncio.sleep(1)
            finally:
                rabbitmqctl("start_app")

            async def all_finished() -> bool:
                found = [await store.get_workflow(w) for w in workflows]
                return all(w.status != WorkflowStatus.RUNNING for w in found)

            await wait_for(all_finished, RUN_LIMIT)
        assert restarted
        for wf in workflows:
            assert (await store.get_workflow(wf)).status == WorkflowStatus.SUCCEEDED
        tasks = [t for wf in workflows for t in await store.list_tasks(workflow_id=wf, limit=200)]
        assert len(tasks) == 500
        assert {t.status for t in tasks} == {TaskStatus.SUCCEEDED}
        started_on_victim = set()
        for task in tasks:
            events = await store.task_events(task.id)
            kinds = [e.kind for e in events]
            assert kinds.count("succeeded") == 1, (task.id, kinds)
            if any((e.agent_id or "").startswith("ag0@") for e in events):
                started_on_victim.add(task.id)
        # What the killed agent held was redelivered and finished elsewhere: a task it had
        # started finished on another agent. (Which ones it held at the kill is not known from
        # a look before it: on a busy machine every task seen running then had finished on it
        # before the signal landed, and the check failed; ag0 never comes back, so a task of
        # its that finished elsewhere was taken from it.)
        assert started_on_victim
        by_id = {t.id: t for t in tasks}
        assert any(not (by_id[i].agent_id or "").startswith("ag0@") for i in started_on_victim)
        # Both surviving agents and the scheduler consume again after the restart.
        expected = {f"{cluster.prefix}.task.sleep": 2, f"{cluster.prefix}.reports": 1}
        deadline = time.monotonic() + 30
        while (seen := {q: n for q, n in consumers(cluster.prefix).items() if q in expected}) != (
            expected
        ):
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.5)
        for name in ("ag1", "ag2", "daemon"):
            assert cluster.procs[name].poll() is None, cluster.log(name)[-2000:]
    finally:
        await store.close()


# ------------------------------------------------------------- unreachable backends


UNREACHABLE = {
    # backend: (env, command, the name the error must give)
    "RabbitMQ": (
        {"AGENTDECK_BUS_URL": "amqp://agent:s3cret-pw@127.0.0.1:1/"},
        ["agent", "--kind", "echo"],
        "RabbitMQ at 127.0.0.1:1",
    ),
    "Redis": (
        {
            "AGENTDECK_BUS_URL": "amqp://agent:s3cret-pw@127.0.0.1:1/",
            "AGENTDECK_REGISTRY_URL": "redis://agent:s3cret-pw@127.0.0.1:1/0",
        },
        ["agents"],
        "Redis at 127.0.0.1:1",
    ),
    "PostgreSQL": (
        {"AGENTDECK_STORE_URL": "postgresql://agent:s3cret-pw@127.0.0.1:1/agentdeck"},
        ["--daemon"],
        "PostgreSQL at 127.0.0.1:1",
    ),
    "S3": (
        {
            "AGENTDECK_BLOB_URL": "s3://bucket/deck?endpoint_url=http://127.0.0.1:1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "s3cret-pw",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        },
        ["--daemon"],
        "http://127.0.0.1:1",
    ),
}


@pytest.fixture(scope="module")
def unreachable_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every backend's unreachable start-up, run side by side (each retries for seconds)."""
    started = {}
    for backend, (env, args, _) in UNREACHABLE.items():
        home = tmp_path_factory.mktemp(backend)
        procs = Procs(home, {"AGENTDECK_LOG_FORMAT": "json", **env})
        started[backend] = subprocess.Popen(
            [*AGENTDECK, *args],
            cwd=ROOT,
            env=procs.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    try:
        for backend, proc in started.items():
            out, err = proc.communicate(timeout=90)
            results[backend] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        yield results
    finally:
        for proc in started.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


@pytest.mark.parametrize("backend", sorted(UNREACHABLE))
def test_an_unreachable_backend_fails_start_up_with_one_line_naming_the_host(
    backend: str, unreachable_runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    """After bounded retries the process exits non-zero with one `error:` line that names the
    host and never the password."""
    done = unreachable_runs[backend]
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and UNREACHABLE[backend][2] in lines[0], lines[0]
    assert "attempt" in lines[0], lines[0]  # it retried, and says how often
    assert "s3cret" not in done.stderr + done.stdout
