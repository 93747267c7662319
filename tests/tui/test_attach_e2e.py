"""The real ``agentdeck`` attached to a configured cluster in a real terminal (tmux), with the
real ``agentdeck --daemon`` in another process: no leader, then the daemon's, an action from
the keyboard carried out by the daemon, and the warning back when the daemon stops."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from tests.e2e.harness import Procs
from tests.tui.test_tmux_e2e import AGENTDECK, ROOT, Terminal, running

pytestmark = [pytest.mark.tui, pytest.mark.e2e]

STUCK = """
name: stuck
tasks:
  - {key: wait, capability: nobody-serves-this}
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Terminal, Procs, Path]]:
    """A SQLite store and registry named by URL; ``agentdeck`` (attached) in a tmux session."""
    urls = {
        "AGENTDECK_STORE_URL": f"sqlite:///{tmp_path}/cluster.db",
        "AGENTDECK_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.db",
    }
    procs = Procs(tmp_path, {**urls, "AGENTDECK_NODE": "daemon-e2e"})
    (tmp_path / "agentdeck.toml").write_text("")  # the backends come from the environment
    env = " ".join(f"{k}={v}" for k, v in {**urls, "AGENTDECK_NODE": "tui-e2e"}.items())
    try:
        with running(tmp_path, f"{env} {AGENTDECK}") as term:
            yield term, procs, tmp_path
    finally:
        procs.stop_all()


def lease_row(home: Path) -> tuple[str | None, int]:
    """The scheduler lease's holder (None: released) and fencing token, read from the file."""
    with sqlite3.connect(home / "registry.db") as db:
        holder, token = db.execute("SELECT holder, token FROM registry_leases").fetchone()
    return holder, token


def test_attached_tui_with_a_daemon_in_another_process(
    cluster: tuple[Terminal, Procs, Path],
) -> None:
    """Attached and alone it warns; a daemon starts and is named; `x` on a workflow is carried
    out by the daemon; the daemon stops and the warning is back. The lease only ever had one
    holder (its token is still 1): the TUI never took it."""
    term, procs, home = cluster
    term.wait_for("no leader — start `agentdeck --daemon`")
    procs.start("daemon", "--daemon")
    term.wait_for("leader daemon-e2e")
    spec = home / "stuck.yaml"
    spec.write_text(STUCK)
    workflow_id = procs.cli("submit", str(spec)).stdout.strip()
    assert workflow_id, procs.log("daemon")
    term.keys("2")
    term.wait_for(f"{workflow_id}  stuck")
    term.keys("x")
    term.wait_for(f"Cancel workflow {workflow_id}?")
    term.keys("y")
    term.wait_for("cancelled")
    procs.procs["daemon"].terminate()
    procs.procs["daemon"].wait(30)
    term.wait_for("no leader — start `agentdeck --daemon`")
    assert lease_row(home) == (None, 1)
    term.keys("q")


def test_an_attached_tui_shows_the_traces_of_a_daemon_on_rabbitmq(tmp_path: Path) -> None:
    """Attached over RabbitMQ to a daemon in another process, the traces screen shows the
    trace of a workflow that daemon ran (its spans came as events: no other server)."""
    prefix = f"e2e-spans-{uuid.uuid4().hex[:8]}"
    urls = {
        "AGENTDECK_STORE_URL": f"sqlite:///{tmp_path}/cluster.db",
        "AGENTDECK_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.db",
        "AGENTDECK_BUS_URL": f"amqp://guest:guest@127.0.0.1:5672/?prefix={prefix}",
    }
    config = tmp_path / "agentdeck.toml"
    config.write_text('[[agents]]\nkind = "echo"\n')
    procs = Procs(
        tmp_path, {**urls, "AGENTDECK_NODE": "daemon-spans", "AGENTDECK_CONFIG": str(config)}
    )
    env = " ".join(f"{k}='{v}'" for k, v in {**urls, "AGENTDECK_NODE": "tui-spans"}.items())
    try:
        with running(tmp_path, f"{env} {AGENTDECK}") as term:
            term.wait_for("no leader")
            procs.start("daemon", "--daemon")
            term.wait_for("leader daemon-spans")
            done = procs.cli("submit", str(ROOT / "examples" / "a_to_b.yaml"), "--wait")
            assert "a-to-b: succeeded" in done.stdout, done.stdout + procs.log("daemon")
            term.keys("0")
            term.wait_for("agentdeck \u203a Traces")
            shown = term.wait_for("workflow a-to-b")
            assert "workflow a-to-b" in shown
            term.keys("q")
    finally:
        procs.stop_all()
        asyncio.run(_remove_prefix(prefix))


async def _remove_prefix(prefix: str, capabilities: tuple[str, ...] = ("echo",)) -> None:
    """Delete the queues and exchanges the test's prefix made in the shared RabbitMQ: the
    task queues of ``capabilities``, the reports and dead queues, the exchanges."""
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=10)
    try:
        channel = await connection.channel()
        tasks = [f"{prefix}.task.{c}" for c in capabilities]
        for name in (*tasks, f"{prefix}.reports", f"{prefix}.dead"):
            await channel.queue_delete(name)
        for kind in ("events", "control", "dlx"):
            await channel.exchange_delete(f"{prefix}.{kind}")
    finally:
        await connection.close()
