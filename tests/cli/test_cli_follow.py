"""`agentdeck show WF/KEY --follow`: a task's states, progress and streamed output as they come,
ending when the task ends (or on Ctrl-C, cleanly)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agentdeck.backends.memory import MemoryBus
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.clock import FakeClock
from agentdeck.core.messages import Event, encode
from agentdeck.core.models import Change, ErrorInfo
from agentdeck.core.spec import SpecLimits, build, parse_spec
from agentdeck.core.states import TaskStatus as T
from agentdeck.tui.cli import main
from agentdeck.tui.cli.follow import FollowPrinter, follow_task

ROOT = Path(__file__).resolve().parents[2]
AGENTDECK = Path(sys.executable).parent / "agentdeck"
START = 1_700_000_000.0
SPEC = "name: one\ntasks:\n  - {key: a, capability: echo}\n"


async def _walk(store: SqliteStore, task_id: str, steps: list[tuple[T, dict[str, Any]]]) -> None:
    current = (await store.get_task(task_id)).status
    for to, values in steps:
        await store.apply([Change(task_id, to, frozenset({current}), values=values)], START)
        current = to


async def _workflow(store: SqliteStore) -> str:
    await store.migrate()
    workflow, tasks = build(
        parse_spec(SPEC, limits=SpecLimits()), workflow_id="f0110f0110f0", now=START
    )
    await store.create_workflow(workflow, tasks)
    return f"{workflow.id}/a"


def _event(topic: str, task_id: str, attempt: int, **data: Any) -> bytes:
    ids = {"task_id": task_id, "workflow_id": task_id.split("/")[0], "attempt": attempt}
    return encode(Event(topic=topic, at=START, data={**ids, "agent_id": "echo-1", **data}))


async def test_follow_prints_progress_and_output_and_ends_with_the_task(tmp_path: Path) -> None:
    """Progress lines and streamed text of the current attempt are printed as they come (an
    older attempt's are not); the task's end ends the follow, with its output."""
    store = SqliteStore(tmp_path / "agentdeck.db", clock=FakeClock(START))
    bus = MemoryBus(clock=FakeClock(START))
    await bus.start()
    try:
        task_id = await _workflow(store)
        await _walk(
            store, task_id, [(T.DISPATCHED, {"attempt": 2}), (T.RUNNING, {"agent_id": "echo-1"})]
        )
        written: list[str] = []
        follower = asyncio.create_task(
            follow_task(store, bus.subscribe_events, task_id, FollowPrinter(written.append), poll=5)
        )
        for _ in range(5):
            await asyncio.sleep(0)
        await bus.publish_event(_event("progress", task_id, 2, fraction=0.4, message="parsing"))
        await bus.publish_event(_event("output", task_id, 2, text="Hello, "))
        await bus.publish_event(_event("output", task_id, 1, text="stale words"))
        await bus.publish_event(_event("output", task_id, 2, text="world"))
        await bus.publish_event(_event("output", "other/x", 2, text="not ours"))
        await _walk(store, task_id, [(T.SUCCEEDED, {"output": {"n": 1}})])
        await bus.publish_event(_event("task", task_id, 2, status="succeeded", kind="succeeded"))
        ended = await asyncio.wait_for(follower, 10)
    finally:
        await bus.close()
        await store.close()
    assert ended.status == T.SUCCEEDED
    printed = "".join(written)
    assert printed.splitlines() == [
        f"== {task_id} running (attempt 2 on echo-1)",
        "[attempt 2] [████████············]  40% parsing",
        "Hello, world",
        f"== {task_id} succeeded (attempt 2 on echo-1)",
        '{"n": 1}',
    ]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for var in ("AGENTDECK_BUS_URL", "AGENTDECK_STORE_URL", "AGENTDECK_REGISTRY_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _ended(home: Path, status: T) -> str:
    async def go() -> str:
        store = SqliteStore(home / "agentdeck.db", clock=FakeClock(START))
        try:
            task_id = await _workflow(store)
            end: dict[str, Any] = (
                {"output": "done"}
                if status == T.SUCCEEDED
                else {"error": ErrorInfo("ValueError", "bad row", retryable=False)}
            )
            await _walk(
                store,
                task_id,
                [
                    (T.DISPATCHED, {"attempt": 1}),
                    (T.RUNNING, {"agent_id": "echo-1"}),
                    (status, end),
                ],
            )
            return task_id
        finally:
            await store.close()

    return asyncio.run(go())


def test_follow_on_the_embedded_default_follows_the_states_and_says_what_it_cannot(
    home: Path,
) -> None:
    """With a memory:// bus the states come from the Store, a note says progress cannot; a
    task that ended is printed at once, and the exit status says how it ended."""
    task_id = _ended(home, T.FAILED)
    result = CliRunner().invoke(main, ["show", task_id, "--follow"])
    assert result.exit_code == 1
    assert "progress and streamed output are not" in result.stderr
    assert f"== {task_id} failed (attempt 1 on echo-1): ValueError: bad row" in result.stdout


def test_follow_takes_a_task_and_no_json(home: Path) -> None:
    """`--follow` on a workflow, or with --json, is one clear error."""
    task_id = _ended(home, T.SUCCEEDED)
    workflow = CliRunner().invoke(main, ["show", task_id.split("/")[0], "--follow"])
    assert workflow.exit_code == 1
    assert "--follow takes a task (WF/KEY)" in workflow.stderr
    both = CliRunner().invoke(main, ["show", task_id, "--follow", "--json"])
    assert both.exit_code == 2
    assert "does not go with --json" in both.stderr
    done = CliRunner().invoke(main, ["show", task_id, "--follow"])
    assert done.exit_code == 0
    assert done.stdout.splitlines()[-1] == '"done"'


def test_ctrl_c_ends_a_follow_cleanly(home: Path) -> None:
    """A follow of a task that does not end stops on Ctrl-C: exit 130, no traceback."""
    submitted = cli("submit", str(ROOT / "examples" / "a_to_b.yaml"))
    task_id = f"{submitted.output.strip()}/a"
    env = {**os.environ, "AGENTDECK_HOME": str(home)}
    proc = subprocess.Popen(
        [str(AGENTDECK), "show", task_id, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=home,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # (blocks until the follow has begun)
        assert first.startswith(f"== {task_id} ready"), first
        proc.send_signal(signal.SIGINT)
        _out, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Traceback" not in stderr, stderr


REPORTER = """
import asyncio

from agentdeck.agents.decorator import agent


@agent("reporter")
async def report(ctx):
    ctx.progress(0.5, "halfway there")
    ctx.emit("partial te")
    ctx.emit("xt\\n")
    await asyncio.sleep(0.5)
    ctx.progress(1.0, "all done")
    return {"reported": True}
"""
REPORT_SPEC = "name: report\ntasks:\n  - {key: r, capability: reporter}\n"


@pytest.mark.e2e
def test_follow_over_rabbitmq_prints_what_an_agent_in_another_process_reports(
    tmp_path: Path,
) -> None:
    """A daemon and an agent process on RabbitMQ: `show --follow`, started before the agent,
    prints the agent's progress and streamed text as they come and ends when the task does."""
    from tests.e2e.harness import Procs
    from tests.tui.test_attach_e2e import _remove_prefix

    prefix = f"e2e-follow-{os.getpid()}"
    (tmp_path / "reporter_agent.py").write_text(REPORTER)
    (tmp_path / "agentdeck.toml").write_text("")
    env = {
        "AGENTDECK_STORE_URL": f"sqlite:///{tmp_path}/cluster.db",
        "AGENTDECK_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.db",
        "AGENTDECK_BUS_URL": f"amqp://guest:guest@127.0.0.1:5672/?prefix={prefix}",
        "AGENTDECK_CONFIG": str(tmp_path / "agentdeck.toml"),
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    procs = Procs(tmp_path, env)
    spec = tmp_path / "report.yaml"
    spec.write_text(REPORT_SPEC)
    follow: subprocess.Popen[str] | None = None
    try:
        procs.start("daemon", "--daemon")
        workflow_id = procs.cli("submit", str(spec)).stdout.strip()
        assert workflow_id, procs.log("daemon")
        follow = subprocess.Popen(
            [str(AGENTDECK), "show", f"{workflow_id}/r", "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=procs.env,
            cwd=ROOT,
        )
        assert follow.stdout is not None
        first = follow.stdout.readline()
        assert first.startswith((f"== {workflow_id}/r ready", f"== {workflow_id}/r dispatched"))
        procs.start("agent", "agent", "--module", "reporter_agent")
        out, err = follow.communicate(timeout=60)
    finally:
        if follow is not None and follow.poll() is None:
            follow.kill()
            follow.communicate()
        procs.stop_all()
        asyncio.run(_remove_prefix(prefix, ("reporter",)))
    assert follow.returncode == 0, out + err + procs.log("agent")
    lines = (first + out).splitlines()
    assert "[attempt 1] [██████████··········]  50% halfway there" in lines, lines
    assert "partial text" in lines, lines
    assert "[attempt 1] [████████████████████] 100% all done" in lines, lines
    assert lines[-2].startswith(f"== {workflow_id}/r succeeded (attempt 1 on "), lines
    assert lines[-1] == '{"reported": true}', lines
