"""The embedded default with real processes: a daemon, the CLI beside it, and a SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.clock import SystemClock
from agentdeck.core.states import TaskStatus, WorkflowStatus

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
AGENTDECK = [sys.executable, "-m", "agentdeck.tui.cli"]

CONFIG = """
log_format = "json"
[scheduler]
poll_interval = 0.05
[[agents]]
kind = "echo"
concurrency = 8
[[agents]]
kind = "sleep"
concurrency = 6
"""


class Node:
    """One agentdeck home folder, and the daemon processes started on it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = home / "agentdeck.toml"
        self.config.write_text(CONFIG)
        self.env = {**os.environ, "AGENTDECK_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.env.pop("AGENTDECK_STORE_URL", None)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_daemon(self) -> subprocess.Popen[bytes]:
        with (self.home / f"daemon-{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [*AGENTDECK, "--config", str(self.config), "--daemon"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AGENTDECK, "--config", str(self.config), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def store(self) -> SqliteStore:
        return SqliteStore(self.home / "agentdeck.db", clock=SystemClock())

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.stop_all()


def wide_workflow(path: Path, width: int = 198) -> Path:
    """A root, ``width`` sleep tasks in 10 chains under it, and a join: 200 tasks."""
    tasks: list[dict[str, object]] = [{"key": "root", "capability": "echo"}]
    for i in range(width):
        needs = ["root"] if i < 10 else [f"s-{i - 10:03d}"]
        tasks.append(
            {
                "key": f"s-{i:03d}",
                "capability": "sleep",
                "needs": needs,
                "input": {"seconds": 0.03},
                "timeout": 20,
            }
        )
    tasks.append(
        {
            "key": "join",
            "capability": "echo",
            "needs": [f"s-{i:03d}" for i in range(width - 10, width)],
        }
    )
    path.write_text(yaml.safe_dump({"name": "two-hundred", "tasks": tasks}))
    return path


async def wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Poll an async predicate until true (these are real processes: real time passes)."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


def test_cli_submit_wait_json_runs_on_a_running_daemon(node: Node) -> None:
    """A second process submits to the daemon's SQLite file; the daemon runs A then B."""
    node.start_daemon()
    done = node.cli(
        "submit", str(ROOT / "examples" / "a_to_b.yaml"), "--wait", "--json", "--timeout", "60"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    tasks = {t["key"]: t for t in result["tasks"]}
    assert tasks["a"]["status"] == tasks["b"]["status"] == "succeeded"
    assert tasks["b"]["output"]["upstream"]["a"] == tasks["a"]["output"]
    agents = node.cli("agents", "--json")
    assert agents.returncode == 0, agents.stderr
    assert {"echo", "sleep"} <= {c for a in json.loads(agents.stdout) for c in a["capabilities"]}


async def test_sigkill_mid_workflow_then_restart_finishes_from_sqlite(node: Node) -> None:
    """SIGKILL the daemon mid-way through 200 tasks; a new daemon finishes every one of them."""
    spec = wide_workflow(node.home / "wide.yaml")
    daemon = node.start_daemon()
    submitted = node.cli("submit", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    wf = submitted.stdout.strip()
    store = node.store()
    await store.migrate()
    try:

        async def some_done() -> bool:
            counts = (await store.count_tasks([wf]))[wf]
            return counts.get(TaskStatus.SUCCEEDED, 0) >= 40

        await wait_for(some_done, 60)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        before = (await store.count_tasks([wf]))[wf]
        assert before.get(TaskStatus.SUCCEEDED, 0) < 200

        node.start_daemon()

        async def finished() -> bool:
            return (await store.get_workflow(wf)).status != WorkflowStatus.RUNNING

        await wait_for(finished, 90)
        assert (await store.get_workflow(wf)).status == WorkflowStatus.SUCCEEDED
        tasks = await store.list_tasks(workflow_id=wf, limit=1000)
        assert len(tasks) == 200
        assert {t.status for t in tasks} == {TaskStatus.SUCCEEDED}
        for task in tasks:
            kinds = [e.kind for e in await store.task_events(task.id)]
            assert kinds[0] == "created" and kinds[-1] == "succeeded", (task.id, kinds)
            assert kinds.count("succeeded") == 1, (task.id, kinds)
        redelivered = [
            t.id for t in tasks if "redelivered" in [e.kind for e in await store.task_events(t.id)]
        ]
        # Work that was in flight at the kill was published again by the new daemon.
        assert (
            redelivered
            or before.get(TaskStatus.DISPATCHED, 0) + before.get(TaskStatus.RUNNING, 0) == 0
        )
    finally:
        await store.close()
