"""Every kind of output that cannot be sent ends its task, through the real worker and scheduler.

Hypothesis builds outputs: valid JSON with one bad value placed somewhere inside (NaN and
infinities, types JSON has no form for, text UTF-8 cannot encode, a key that is not a string,
nesting past the limit, a list that holds itself, a string too large for a report). A real
:class:`~agents.worker.Worker` runs a handler returning it, on the memory bus, and a real
:class:`~core.scheduler.Scheduler` on SQLite applies what the agent reports. The fake clock
never moves, so the scheduler's dispatch deadline cannot be what ends the task: the agent
itself must report, at once, ``malformed`` with the bad value's path in the message.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentdeck.agents.builtin import echo
from agentdeck.agents.context import TaskContext
from agentdeck.agents.worker import Worker
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.jsoncheck import MAX_DEPTH
from agentdeck.core.models import Task
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TASK_TERMINAL, WORKFLOW_TERMINAL, TaskStatus, WorkflowStatus

CAP = "produce"
LIMIT = 4096
"""The worker's report limit here: small, so outputs too large for a report are cheap."""
ROUNDS = 100
"""Scheduler rounds a task gets to end in; each lets every agent task run to its next wait."""
EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    """A scheduler on SQLite and one worker on the memory bus, sharing a fake clock; the
    worker's handler returns ``outputs[ctx.input["case"]]``."""

    store: SqliteStore
    scheduler: Scheduler
    client: Client
    clock: FakeClock
    outputs: dict[int, Any]

    async def run(self, output: Any) -> Task:
        """Submit a one-task workflow whose handler returns ``output``; the task once it has
        ended. Fails if it has not ended within :data:`ROUNDS` rounds or the clock moved."""
        case = len(self.outputs)
        self.outputs[case] = output
        spec = {"name": f"case-{case}", "tasks": [{"key": "a", "capability": CAP}]}
        spec["tasks"][0]["input"] = {"case": case}  # type: ignore[index]
        text = yaml.safe_dump(spec)
        workflow = await self.client.submit(parse_spec(text, fmt="yaml", limits=SpecLimits()))
        began = self.clock.now()
        task_id = f"{workflow.id}/a"
        for _ in range(ROUNDS):
            await self.scheduler.tick()
            for _ in range(20):
                await asyncio.sleep(0)  # the worker takes, runs and reports
            task = await self.store.get_task(task_id)
            if task.status in TASK_TERMINAL:
                assert self.clock.now() == began  # ended by the agent's report, not a deadline
                return task
        raise AssertionError(f"{task_id} is still {task.status.value} after {ROUNDS} rounds")


@pytest.fixture
async def rig(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Rig]:
    """The scheduler and a worker with a small report limit, running until the test ends."""
    store = SqliteStore(tmp_path / "agentdeck.db", clock=clock)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await store.migrate()
    await bus.start()
    await registry.start()
    scheduler = Scheduler(store, bus, registry, clock, node="node-1", config=SchedulerConfig())
    outputs: dict[int, Any] = {}

    async def produce(ctx: TaskContext) -> Any:
        return outputs[ctx.input["case"]]

    worker = Worker(
        bus,
        registry,
        {CAP: produce, "echo": echo.make()},
        name="w",
        clock=clock,
        report_limit=LIMIT,
    )
    running = asyncio.create_task(worker.run())
    for _ in range(100):
        if await registry.agents():
            break
        await asyncio.sleep(0)
    yield Rig(store, scheduler, Client(store, clock, poll=0.001), clock, outputs)
    await worker.stop(0)
    await running
    await scheduler.stop()
    await bus.close()
    await registry.close()
    await store.close()


# ---------------------------------------------------------------------------- outputs

KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
"""Text UTF-8 can encode: no lone surrogates."""
VALID = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
"""Any JSON document, small."""


class Opaque:
    """A value of a class of the handler's own."""


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _cycle(prefix: list[Any]) -> list[Any]:
    value = list(prefix)
    value.append(value)
    return value


NOT_JSON: list[tuple[str, Callable[[], Any]]] = [
    ("set", lambda: {1, 2}),
    ("frozenset", lambda: frozenset({"a"})),
    ("bytes", lambda: b"\x00\xff"),
    ("bytearray", lambda: bytearray(b"ab")),
    ("datetime", lambda: datetime.datetime(2026, 12, 7, 9, 30)),
    ("date", lambda: datetime.date(2026, 12, 7)),
    ("timedelta", lambda: datetime.timedelta(seconds=3)),
    ("Decimal", lambda: decimal.Decimal("1.5")),
    ("complex", lambda: 1 + 2j),
    ("UUID", lambda: uuid.UUID(int=7)),
    ("Opaque", Opaque),
    ("range", lambda: range(3)),
]


@dataclass(frozen=True)
class Bad:
    """A value that cannot be sent, and a fragment of the message that must name it."""

    value: Any
    says: str

    def __repr__(self) -> str:  # hypothesis prints it for a failing example
        return f"Bad({self.says!r})"


BAD = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]).map(
        lambda f: Bad(f, f"{'NaN' if math.isnan(f) else ('Infinity' if f > 0 else '-Infinity')}")
    ),
    st.sampled_from(NOT_JSON).map(lambda t: Bad(t[1](), f"{t[0]} is not JSON")),
    st.builds(
        lambda head, bad, tail: Bad(head + bad + tail, "lone surrogate"),
        TEXT,
        st.characters(categories=("Cs",)),
        TEXT,
    ),
    st.builds(lambda value: Bad({(1, 2): value}, "JSON object keys are strings"), VALID),
    st.integers(MAX_DEPTH + 1, MAX_DEPTH + 20).map(
        lambda depth: Bad(_nested(depth), f"nested more than {MAX_DEPTH} levels deep")
    ),
    st.lists(VALID, max_size=2).map(lambda prefix: Bad(_cycle(prefix), "contains itself")),
    st.integers(2 * LIMIT, 3 * LIMIT).map(lambda n: Bad("x" * n, "a report may carry")),
)


@dataclass(frozen=True)
class Placed:
    """An output with one bad value inside it, and the path to that value."""

    output: Any
    path: str
    bad: Bad


@st.composite
def placed(draw: st.DrawFn) -> Placed:
    """A bad value wrapped in up to four levels of valid JSON: dicts and lists with valid
    siblings around it."""
    bad = draw(BAD)
    steps = draw(
        st.lists(
            st.tuples(
                st.booleans(), KEYS, st.dictionaries(KEYS, VALID, max_size=2), st.integers(0, 2)
            ),
            max_size=4,
        )
    )
    value: Any = bad.value
    parts: list[str] = []
    for keyed, key, siblings, index in reversed(steps):
        if keyed:
            value = {**siblings, key: value}
            parts.append(f".{key}")
        else:
            items: list[Any] = list(siblings.values())
            at = min(index, len(items))
            items.insert(at, value)
            value = items
            parts.append(f"[{at}]")
    return Placed(value, "output" + "".join(reversed(parts)), bad)


# ------------------------------------------------------------------------------ tests


@EXAMPLES
@given(case=placed())
async def test_an_output_that_cannot_be_sent_fails_its_task_as_malformed_naming_where(
    rig: Rig, case: Placed
) -> None:
    """Whatever is wrong and wherever it sits, the task ends failed ``malformed``, not
    retried, at once, with the bad value's path and what is wrong in its error."""
    task = await rig.run(case.output)
    assert task.status is TaskStatus.FAILED
    assert task.error is not None
    assert (task.error.kind, task.error.retryable) == ("malformed", False)
    assert case.bad.says in task.error.message
    if case.bad.says == "a report may carry":  # the size of the whole; the path: most of it
        assert f"most of it is {case.path} (" in task.error.message
    else:
        assert task.error.message.startswith(case.path)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(output=VALID)
async def test_every_valid_json_output_succeeds_unchanged(rig: Rig, output: Any) -> None:
    """The checks refuse nothing JSON can carry: a valid output succeeds, stored as it was."""
    task = await rig.run(output)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.output == output


async def test_a_pipeline_whose_outputs_grow_each_step_stops_failed_at_the_limit(rig: Rig) -> None:
    """The issue's story: ``echo`` outputs hold their upstream, 2 levels deeper each step. A
    chain of 101 runs its first 100 steps (200 levels), and the 101st fails ``malformed``
    naming the path, at once; the workflow ends failed instead of stalling."""
    tasks: list[dict[str, Any]] = [
        {"key": f"c{i:03d}", "capability": "echo", **({"needs": [f"c{i - 1:03d}"]} if i else {})}
        for i in range(101)
    ]
    text = yaml.safe_dump({"name": "growing", "tasks": tasks})
    workflow = await rig.client.submit(parse_spec(text, fmt="yaml", limits=SpecLimits()))
    began = rig.clock.now()
    for _ in range(10 * len(tasks)):
        await rig.scheduler.tick()
        for _ in range(20):
            await asyncio.sleep(0)
        if (await rig.store.get_workflow(workflow.id)).status in WORKFLOW_TERMINAL:
            break
    assert (await rig.store.get_workflow(workflow.id)).status is WorkflowStatus.FAILED
    assert rig.clock.now() == began  # no deadline ended it: the agent's own report did
    last = await rig.store.get_task(f"{workflow.id}/c100")
    assert last.status is TaskStatus.FAILED and last.error is not None
    assert last.error.kind == "malformed"
    assert last.error.message.startswith("output.upstream.c099.upstream.c098.upstream.c097")
    assert last.error.message.endswith(": nested more than 200 levels deep")
    assert (await rig.store.get_task(f"{workflow.id}/c099")).status is TaskStatus.SUCCEEDED
