"""The fault-injection suite: 1,000 tasks in DAG workflows through five faults, no person.

Three ``agentdeck --daemon`` nodes (one leads, two stand by) and three ``agentdeck agent``
processes (two ``sleep``, one ``chaos`` that fails transiently) share private RabbitMQ,
PostgreSQL and Redis servers (``tests/e2e/services.py``), so restarting them disturbs nobody
else. While the workflows run, one fault after another:

1. SIGKILL an agent that is running tasks;
2. SIGKILL the scheduler leader (a standby must take the lease with a larger token; three
   nodes start together, so two face the faults after it);
3. restart RabbitMQ (the whole node);
4. restart Redis (its data is gone: agents, breakers, the lease);
5. restart PostgreSQL (fast shutdown, then start).

For each fault the suite prints how long until work resumed: the first success the scheduler
applied after the fault (for an agent's SIGKILL, the first success of a task that agent was
running), counted from the fault, or from the moment a restarted service accepts connections
again (the outage itself is the test's doing and printed beside it). Then it asserts that
every task ended in the state its spec dictates, none is missing, none was applied as
succeeded twice, and every workflow finished with no command from a person.

Run it: ``.venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e/test_faults.py`` (the
figures are printed past the capture).
``AGENTDECK_FAULTS_REPORT=path.json`` also writes the figures as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agentdeck.backends.postgres import PostgresStore
from agentdeck.backends.redis import RedisRegistry
from agentdeck.core.client import Client
from agentdeck.core.clock import SystemClock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.models import TaskEvent
from agentdeck.core.ports import Lease
from agentdeck.core.states import TaskStatus, WorkflowStatus
from tests.e2e.harness import Procs
from tests.e2e.services import PostgresServer, RabbitServer, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

WORKFLOWS = 20
TASKS_PER_WORKFLOW = 50
#: The longest the whole run may take once its workflows are submitted.
RUN_LIMIT = 120.0
#: The longest one stage (up to the next fault) may take.
STAGE_LIMIT = 60.0
#: Each fault waits until this share of the expected successes is applied.
FAULT_AT = (0.08, 0.22, 0.36, 0.50, 0.64)
#: Successes that must follow one fault before the next is injected.
SPACING = 40
#: Successes that must be left when a fault is injected, for it to have work to interrupt.
RESERVE = 100
#: The scheduler nodes, all started at once: one leads, two stand by.
NODES = ("node-a", "node-b", "node-c")
#: What recovery must stay under for the suite to pass (the plan's bound); the goal, 5 s, is
#: reported beside each figure.
RECOVERY_LIMIT = 60.0
GOAL = 5.0
#: Every tenth task is a sleep this long, so an agent is killed in the middle of one.
LONG = 0.5
#: Retries for tasks meant to succeed: enough attempts that faults (a lost attempt counts)
#: never spend them, short waits so the run stays short.
RETRY = {"max_attempts": 8, "initial_delay": 0.1, "max_delay": 0.5, "jitter": 0.1}
#: A chaos task that fails more often than its attempts allow: failed once they are spent.
EXHAUSTED = {"max_attempts": 2, "initial_delay": 0.1, "max_delay": 0.5, "jitter": 0.1}

T = TaskStatus
W = WorkflowStatus


# ------------------------------------------------------------------------------ workflows


def _block(kind: str, n: int, needs: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Tasks of one DAG shape numbered from ``n``, hanging off ``needs``; and its exits."""
    key = lambda i: f"t{n + i:02d}"  # noqa: E731
    if kind == "chain":
        tasks = [{"key": key(i), "needs": [key(i - 1)] if i else needs} for i in range(6)]
        return tasks, [key(5)]
    if kind == "diamond":
        top, left, right, bottom = (key(i) for i in range(4))
        tasks = [
            {"key": top, "needs": needs},
            {"key": left, "needs": [top]},
            {"key": right, "needs": [top]},
            {"key": bottom, "needs": [left, right]},
        ]
        return tasks, [bottom]
    # fan-out / fan-in: one head, six branches, one tail
    branches = [key(i) for i in range(1, 7)]
    tasks = [
        {"key": key(0), "needs": needs},
        *({"key": b, "needs": [key(0)]} for b in branches),
        {"key": key(7), "needs": branches},
    ]
    return tasks, [key(7)]


def workflow_spec(w: int) -> dict[str, Any]:
    """Workflow ``w``: chains, diamonds and fans in a row, 50 tasks, a third of them chaos
    tasks, half of which fail their first one or two attempts. Workflows 3 and 13 have a task
    that fails for good at once (non-retryable), 7 and 17 one whose attempts run out."""
    tasks: list[dict[str, Any]] = []
    exits: list[str] = []
    for kind in ("chain", "diamond", "fan", "chain", "diamond", "fan", "chain", "fan"):
        block, exits = _block(kind, len(tasks), exits)
        tasks += block
    assert len(tasks) == TASKS_PER_WORKFLOW
    doomed = len(tasks) - 8  # the head of the last fan: its seven descendants are skipped
    for i, task in enumerate(tasks):
        task["timeout"] = 30
        task["retry"] = RETRY
        if i == doomed and w % 10 == 3:
            task.update(capability="chaos", input={"fail_rate": 1, "permanent": True})
        elif i == doomed and w % 10 == 7:
            task.update(capability="chaos", input={"fail_first": 5}, retry=EXHAUSTED)
        elif i % 3 == 1:
            # Half fail their first attempt or two: about 40% of chaos attempts fail.
            fail_first = {0: 1, 1: 2}.get((i + w) % 4, 0)
            task.update(capability="chaos", input={"fail_first": fail_first})
        else:
            seconds = LONG if i % 10 == 0 else 0.05 + 0.05 * ((i + w) % 3)
            task.update(capability="sleep", input={"seconds": seconds})
    return {"name": f"faults-{w}", "tasks": tasks}


def expected_states(spec: dict[str, Any]) -> dict[str, TaskStatus]:
    """What each task's policy dictates: a task that cannot succeed within its attempts (or
    fails non-retryably) is failed, everything downstream of it skipped, the rest succeed."""
    by_key = {t["key"]: t for t in spec["tasks"]}

    def fails(task: dict[str, Any]) -> bool:
        inp = task["input"]
        return (
            bool(inp.get("permanent")) or inp.get("fail_first", 0) >= task["retry"]["max_attempts"]
        )

    states: dict[str, TaskStatus] = {}

    def state(key: str) -> TaskStatus:
        if key not in states:
            upstream = [state(n) for n in by_key[key]["needs"]]
            if any(s != T.SUCCEEDED for s in upstream):
                states[key] = T.SKIPPED
            else:
                states[key] = T.FAILED if fails(by_key[key]) else T.SUCCEEDED
        return states[key]

    for key in by_key:
        state(key)
    return states


# -------------------------------------------------------------------------------- cluster


@dataclass
class Fault:
    """One injected fault and when work resumed after it."""

    name: str
    at: float
    """When it was injected (``time.time()``)."""
    back: float
    """When the broken part was back (a restarted service accepts connections); ``at`` for
    a kill, where nothing comes back and the rest must carry on."""
    scope: set[str] | None = None
    """Only successes of these tasks count as resumed work (the killed agent's tasks)."""
    resumed: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def outage(self) -> float:
        return self.back - self.at


@dataclass
class Services:
    redis: RedisServer
    postgres: PostgresServer
    rabbit: RabbitServer


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Private Redis, PostgreSQL and RabbitMQ on free loopback ports; all stopped after."""
    started: list[Any] = []
    try:
        for cls in (RedisServer, PostgresServer, RabbitServer):
            home = tmp_path / cls.name
            home.mkdir()
            server = cls(home)
            started.append(server)
            server.start()
        yield Services(*started)
    finally:
        for server in started:
            server.close()


@pytest.fixture
def procs(tmp_path: Path, services: Services) -> Iterator[Procs]:
    cluster = Procs(
        tmp_path,
        {
            "AGENTDECK_BUS_URL": services.rabbit.url,
            "AGENTDECK_STORE_URL": services.postgres.url,
            "AGENTDECK_REGISTRY_URL": services.redis.url,
            "AGENTDECK_LOG_FORMAT": "json",
            # The chaos tasks fail about half their first attempts by design; breakers that
            # opened on that would hold the capability for their cool-down and the suite
            # would measure the breaker, not the faults. Only a capability or agent whose
            # every outcome fails is cut off (breakers have their own tests).
            "AGENTDECK_BREAKERS__DEFAULT__FAILURE_THRESHOLD": "1000",
            "AGENTDECK_BREAKERS__DEFAULT__FAILURE_RATE": "1.0",
        },
    )
    try:
        yield cluster
    finally:
        cluster.stop_all()


def start_daemon(procs: Procs, node: str) -> subprocess.Popen[bytes]:
    procs.env["AGENTDECK_NODE"] = node
    try:
        return procs.start(node, "--daemon")
    finally:
        del procs.env["AGENTDECK_NODE"]


async def lease_of(redis_url: str) -> Lease | None:
    registry = RedisRegistry.from_url(redis_url, clock=SystemClock())
    await registry.start()
    try:
        return await registry.get_lease("scheduler")
    finally:
        await registry.close()


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``predicate`` (a backend error counts as not yet) until true; fail after
    ``timeout`` seconds saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(AgentdeckError, OSError):
            if await predicate():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore.from_url(url, clock=SystemClock())
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


async def all_events(store: PostgresStore) -> list[TaskEvent]:
    events: list[TaskEvent] = []
    while page := await store.events_since(events[-1].seq if events else 0, limit=5000):
        events += page
    return events


def broker_noticed(rabbit: RabbitServer, connection: str) -> float | None:
    """When the broker logged the first close of a connection whose name holds
    ``connection`` (``time.time()`` scale), or None."""
    for path in sorted((rabbit.home / "log").glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "closing AMQP connection" in line and connection in line:
                stamp = datetime.fromisoformat(line.split(" [", 1)[0].replace(" ", "T"))
                return stamp.timestamp()
    return None


def publish(
    faults: list[Fault], figures: dict[str, Any], path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    """Print the figures (past pytest's capture: they belong in every run's log, CI's too),
    keep them beside the logs and, when ``AGENTDECK_FAULTS_REPORT`` names a file, write them
    there as JSON; returns the printed text."""
    text = report(faults, figures)
    with capsys.disabled():
        print("\n" + text)
    path.write_text(text)
    if target := os.environ.get("AGENTDECK_FAULTS_REPORT"):
        rows = [
            {
                "fault": f.name,
                "outage": round(f.outage, 3),
                "resumed_after": round(f.resumed - f.back, 3) if f.resumed else None,
                "from_fault": round(f.resumed - f.at, 3) if f.resumed else None,
                **f.notes,
            }
            for f in faults
        ]
        Path(target).write_text(json.dumps({"faults": rows, **figures}, indent=2))
    return text


def report(faults: list[Fault], lines: dict[str, Any]) -> str:
    rows = [
        f"{'fault':<28}{'outage (s)':>12}{'resumed after (s)':>20}{'from the fault (s)':>20}",
    ]
    for f in faults:
        after = f"{f.resumed - f.back:.2f}" if f.resumed else "never"
        total = f"{f.resumed - f.at:.2f}" if f.resumed else "never"
        notes = "  " + ", ".join(f"{k}={v}" for k, v in f.notes.items()) if f.notes else ""
        rows.append(f"{f.name:<28}{f.outage:>12.2f}{after:>20}{total:>20}{notes}")
    rows += [f"{k}: {v}" for k, v in lines.items()]
    return "\n".join(rows)


# ---------------------------------------------------------------------------------- suite


@pytest.mark.timeout(360)
async def test_a_thousand_tasks_finish_as_their_policies_say_through_five_faults(
    services: Services, procs: Procs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    specs = [workflow_spec(w) for w in range(WORKFLOWS)]
    expected = [expected_states(s) for s in specs]
    should_succeed = sum(s == T.SUCCEEDED for e in expected for s in e.values())
    # Three nodes from the start: after the leader's kill a standby is still there for the
    # restarts that follow. (Starting one only then let the whole workload finish under load
    # while it came up, leaving the last faults no work to interrupt.)
    for node in NODES:
        start_daemon(procs, node)
    procs.start("sleep0", "agent", "--kind", "sleep", "--name", "sleep0", "--concurrency", "4")
    procs.start("sleep1", "agent", "--kind", "sleep", "--name", "sleep1", "--concurrency", "4")
    procs.start("chaos", "agent", "--kind", "chaos", "--name", "chaos", "--concurrency", "4")
    clock = SystemClock()
    faults: list[Fault] = []
    async with opened_store(services.postgres.url) as store:
        client = Client(store, clock)
        workflows = [(await client.submit_text(json.dumps(s), "json")).id for s in specs]

        async def succeeded() -> int:
            counts = await store.count_tasks(workflows)
            return sum(c.get(T.SUCCEEDED, 0) for c in counts.values())

        marks: list[int] = []  # successes counted as each fault was about to be injected

        async def reach(share: float, before: str) -> None:
            """Wait for ``share`` of the successes, and for the last fault to be behind us
            (its interrupted tasks done, SPACING successes since), so faults never overlap
            and each is measured alone. Fails at once, saying so, if the work runs out first:
            a fault with nothing left to interrupt measures nothing."""
            goal = max(int(share * should_succeed), marks[-1] + SPACING if marks else 0)
            scope = faults[-1].scope if faults else None
            assert goal < should_succeed - RESERVE, (
                f"the stage before {before} needs {goal} successes, leaving fewer than "
                f"{RESERVE} of the {should_succeed} for the fault to interrupt"
            )

            async def reached() -> bool:
                for task_id in scope or ():
                    if (await store.get_task(task_id)).status != T.SUCCEEDED:
                        return False
                done = await succeeded()
                assert done < should_succeed or done >= goal, (
                    f"the work ran out ({done} successes, all there are) before {before}, "
                    f"which waits for {goal}: the stages took longer than the workload"
                )
                return done >= goal

            await until(reached, STAGE_LIMIT, f"{goal} successes")
            marks.append(await succeeded())

        # 1. SIGKILL an agent that is running tasks.
        await reach(FAULT_AT[0], "an agent's SIGKILL")

        held: set[str] = set()

        async def victim_busy() -> bool:
            # A long task it started a moment ago: the kill is sure to interrupt it.
            running = await store.list_tasks(status=[T.RUNNING], limit=1000)
            held.clear()
            held.update(
                t.id
                for t in running
                if (t.agent_id or "").startswith("sleep0@")
                and t.input == {"seconds": LONG}
                and time.time() - (t.started_at or 0) < LONG * 0.6
            )
            return bool(held)

        await until(victim_busy, STAGE_LIMIT, "sleep0 to start a long task")
        at = time.time()
        procs.procs["sleep0"].send_signal(signal.SIGKILL)
        procs.procs["sleep0"].wait(10)
        pid = procs.procs["sleep0"].pid
        faults.append(Fault("SIGKILL an agent", at, at, scope=set(held)))

        # 2. SIGKILL the leader; the standby takes over with a larger token.
        await reach(FAULT_AT[1], "the leader's SIGKILL")
        before = await lease_of(services.redis.url)
        assert before is not None and before.holder in NODES, before
        at = time.time()
        procs.procs[before.holder].send_signal(signal.SIGKILL)
        procs.procs[before.holder].wait(10)
        fault = Fault("SIGKILL the leader", at, at, notes={"killed": before.holder})
        faults.append(fault)

        async def taken_over() -> bool:
            lease = await lease_of(services.redis.url)
            return lease is not None and lease.holder != before.holder

        await until(taken_over, 60, "the standby to take the scheduler lease")
        after = await lease_of(services.redis.url)
        assert after is not None and after.token > before.token, (before, after)
        fault.notes.update(lease_taken=round(time.time() - at, 2), leader=after.holder)

        # 3.-5. Restart RabbitMQ, Redis (data gone), PostgreSQL.
        for share, name, server in (
            (FAULT_AT[2], "restart RabbitMQ", services.rabbit),
            (FAULT_AT[3], "restart Redis (data lost)", services.redis),
            (FAULT_AT[4], "restart PostgreSQL", services.postgres),
        ):
            await reach(share, name)
            at = server.restart()
            faults.append(Fault(name, at, time.time(), notes={"stop": round(server.stop_took, 2)}))

        async def all_finished() -> bool:
            found = [await store.get_workflow(w) for w in workflows]
            return all(w.status != W.RUNNING for w in found)

        await until(all_finished, RUN_LIMIT, "every workflow to finish")
        elapsed = time.monotonic() - started

        # ------------------------------------------------------------ what must hold
        events = await all_events(store)
        successes = sorted(
            (e.at, e.task_id, e.agent_id or str(e.detail.get("agent", "")))
            for e in events
            if e.kind == "succeeded"
        )
        for f in faults:
            # After an agent's kill, what resumed is its work, done by another agent (a
            # report it sent just before dying may be applied just after).
            f.resumed = next(
                (
                    at
                    for at, task, agent in successes
                    if at > f.back
                    and (f.scope is None or (task in f.scope and not agent.startswith("sleep0@")))
                ),
                None,
            )
        # How long the broker took to see the killed agent's connections close (it gives
        # the agent's unacked tasks to others only then).
        noticed = broker_noticed(services.rabbit, f"-{pid}, vhost")
        if noticed is not None:
            faults[0].notes["broker_noticed"] = round(noticed - faults[0].at, 2)
        tasks = [t for w in workflows for t in await store.list_tasks(workflow_id=w, limit=1000)]
        commands = await store.list_commands(limit=10)
        finished = [await store.get_workflow(w) for w in workflows]
        applied: dict[str, int] = {}
        for _, task_id, _ in successes:
            applied[task_id] = applied.get(task_id, 0) + 1
        by_workflow = {w: {t.key: t for t in tasks if t.workflow_id == w} for w in workflows}
        wrong = [
            (w, key, by_workflow[w][key].status.value if key in by_workflow[w] else None, want)
            for w, want_states in zip(workflows, expected, strict=True)
            for key, want in want_states.items()
            if key not in by_workflow[w] or by_workflow[w][key].status != want
        ]
        duplicates = {t: n for t, n in applied.items() if n > 1}
        lost = (
            WORKFLOWS * TASKS_PER_WORKFLOW
            - len(tasks)
            + sum(1 for t in tasks if t.status not in (T.SUCCEEDED, T.FAILED, T.SKIPPED))
        )
        unattended = sum(1 for w in finished if w.status in (W.SUCCEEDED, W.FAILED)) - len(
            {c.target for c in commands}
        )
        figures = {
            "tasks": len(tasks),
            "tasks lost": lost,
            "duplicate successes": sum(n - 1 for n in duplicates.values()),
            "tasks in a state their policy does not dictate": len(wrong),
            "workflows finished with no operator action": f"{unattended}/{WORKFLOWS}",
            "wall time (s)": round(elapsed, 1),
            "load average": os.getloadavg(),
        }
        text = publish(faults, figures, tmp_path / "faults-report.txt", capsys)
        assert not wrong, wrong[:20]
        assert lost == 0
        assert not duplicates, duplicates
        unrecorded = [t.id for t in tasks if t.status == T.SUCCEEDED and t.id not in applied]
        assert not unrecorded, unrecorded[:20]  # each success is in the history, once
        assert not commands, [(c.action, c.target) for c in commands]
        want_workflows = [
            W.SUCCEEDED if all(s == T.SUCCEEDED for s in e.values()) else W.FAILED for e in expected
        ]
        assert [w.status for w in finished] == want_workflows
        for f in faults:
            assert f.resumed is not None, f"work never resumed after: {f.name}"
            assert f.resumed - f.back < RECOVERY_LIMIT, text
        for name, proc in procs.procs.items():
            if name not in ("sleep0", faults[1].notes["killed"]):
                assert proc.poll() is None, f"{name} died:\n{procs.log(name)[-2000:]}"
