"""Large outputs by reference across processes on the real engines (RabbitMQ, PostgreSQL,
Redis): agent processes keep their outputs in the shared blob store and read their upstream
outputs from it; an agent without a blob store fails a read with one clear error."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from agentdeck.backends.postgres.testing import scratch_database
from agentdeck.core.outputs import is_ref
from tests.conftest import require_service
from tests.e2e.test_distributed import HOST, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

LIMIT = 2000
"""output_inline_limit of every process: bytes of JSON over which an output is a reference."""
PAYLOAD = "p" * 5000


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Processes on a private slice of the services, sharing a blob folder (one host)."""
    for name, port in (("RabbitMQ", 5672), ("PostgreSQL", 5432), ("Redis", 6379)):
        require_service(name, HOST, port)
    async with scratch_database() as store_url:
        node = Cluster(tmp_path, f"e2e-{os.getpid()}-{secrets.token_hex(4)}", store_url)
        node.env["AGENTDECK_BLOB_URL"] = f"file://{tmp_path}/blobs"
        node.env["AGENTDECK_OUTPUT_INLINE_LIMIT"] = str(LIMIT)
        try:
            yield node
        finally:
            node.stop_all()
            async with asyncio.timeout(30):
                await node.remove_broker_and_registry_state()


def wait_registered(node: Cluster, names: set[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        listed = node.cli("agents", "--json")
        assert listed.returncode == 0, listed.stderr
        if {a["name"].partition("@")[0] for a in json.loads(listed.stdout)} >= names:
            return
        assert time.monotonic() < deadline, listed.stdout


def run_chain(node: Cluster, path: Path, steps: int, **task: object) -> dict[str, dict]:
    """Submit a chain of ``steps`` echo tasks (the first carrying PAYLOAD), wait, and return
    the tasks by key."""
    tasks = [
        {
            "key": f"s{i}",
            "capability": "echo",
            "input": {"payload": PAYLOAD} if i == 0 else {"step": i},
            **({"needs": [f"s{i - 1}"]} if i else {}),
            **task,
        }
        for i in range(steps)
    ]
    path.write_text(yaml.safe_dump({"name": path.stem, "tasks": tasks}))
    done = node.cli("submit", str(path), "--wait", "--json", "--timeout", "90", timeout=120)
    assert done.stdout, done.stderr + node.log("daemon")
    return {t["key"]: t for t in json.loads(done.stdout)["tasks"]}


def test_agent_processes_hand_large_outputs_on_by_reference(nodes: Cluster, tmp_path: Path) -> None:
    """A daemon and two agent processes run a chain of echo steps whose outputs are over the
    limit: every output is a reference, and the last one, shown, holds the first step's
    input five levels down."""
    nodes.start("daemon", "--daemon")
    nodes.agent("echo0", "echo")
    nodes.agent("echo1", "echo")
    wait_registered(nodes, {"echo0", "echo1"})
    tasks = run_chain(nodes, tmp_path / "chain.yaml", 6)
    assert {t["status"] for t in tasks.values()} == {"succeeded"}
    assert all(is_ref(t["output"]) for t in tasks.values())
    shown = nodes.cli("show", f"{tasks['s5']['workflow_id']}/s5", "--json")
    assert shown.returncode == 0, shown.stderr
    value = json.loads(shown.stdout)["task"]["output"]
    for i in reversed(range(1, 6)):
        assert value["input"] == {"step": i}
        value = value["upstream"][f"s{i - 1}"]
    assert value["input"] == {"payload": PAYLOAD}


def test_an_agent_process_without_a_blob_store_fails_the_read_saying_why(
    nodes: Cluster, tmp_path: Path
) -> None:
    """An `agentdeck agent` given no blob_url on another machine (its own home, so its own
    default folder) sends its large output inline (the daemon stores it), then cannot read it
    for the next step: that attempt fails as upstream_unreadable, naming the fix."""
    nodes.start("daemon", "--daemon")
    shared = dict(nodes.env)
    del nodes.env["AGENTDECK_BLOB_URL"]
    elsewhere = tmp_path / "another-host"
    elsewhere.mkdir()
    nodes.env["AGENTDECK_HOME"] = str(elsewhere)
    nodes.agent("alone", "echo")
    nodes.env = shared
    wait_registered(nodes, {"alone"})
    tasks = run_chain(nodes, tmp_path / "alone.yaml", 2, retry={"max_attempts": 1})
    assert tasks["s0"]["status"] == "succeeded" and is_ref(tasks["s0"]["output"])
    assert tasks["s1"]["status"] == "failed"
    error = tasks["s1"]["error"]
    assert error["kind"] == "upstream_unreadable" and "blob_url" in error["message"]
