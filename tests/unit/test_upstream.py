"""Upstream outputs on the agent side: references fetched only when a handler reads them,
through the process's cache; an unreadable one fails the attempt with one error kind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentdeck.agents.builtin._template import render, template_values
from agentdeck.agents.builtin.anthropic_api import request_of
from agentdeck.agents.builtin.claude import prompt_of
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.testing import make_context
from agentdeck.agents.upstream import UNREADABLE, Upstream, named_in
from agentdeck.agents.worker import Worker
from agentdeck.backends.files import FileBlobStore
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, TaskFailed
from agentdeck.core.logs import get_logger
from agentdeck.core.messages import Report, TaskMessage, decode, encode
from agentdeck.core.models import JSON
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import OutgoingTask

BIG = {"rows": ["x" * 50] * 20}  # about 1 kB of JSON
OTHER = {"rows": ["y" * 50] * 20}
LIMIT = 10.0
"""Seconds of real time a test waits for work done in a thread (it takes milliseconds)."""


class CountingBlobs(FileBlobStore):
    """A file blob store that counts its reads, and on which event loop each ran."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def get(self, key: str) -> bytes:
        self.loops.append(asyncio.get_running_loop())
        return await super().get(key)


class DownBlobs(FileBlobStore):
    """A blob store that cannot be reached."""

    async def get(self, key: str) -> bytes:
        raise BackendUnavailable(f"cannot reach S3 to get {key}")


@pytest.fixture
async def blobs(tmp_path: Path) -> CountingBlobs:
    store = CountingBlobs(tmp_path / "blobs")
    await store.start()
    return store


async def refs(blobs: FileBlobStore) -> dict[str, JSON]:
    """References to BIG (task a) and OTHER (task b), written by another process."""
    writer = OutputStore(blobs, limit=10)
    return {"a": await writer.offload("w/a", 1, BIG), "b": await writer.offload("w/b", 1, OTHER)}


async def test_a_reference_is_fetched_only_when_read(blobs: CountingBlobs) -> None:
    """Listing, counting and `in` read nothing; reading `a` fetches `a` alone, once; small
    outputs are handed over as they came."""
    outputs = OutputStore(blobs, limit=10)
    up = Upstream({**await refs(blobs), "c": {"small": True}}, outputs)
    assert (list(up), len(up), "a" in up, "z" in up) == (["a", "b", "c"], 3, True, False)
    assert up["c"] == {"small": True} and blobs.loops == []
    assert up["a"] == BIG and up["a"] is up["a"]
    assert len(blobs.loops) == 1 and (up.fetched, outputs.fetched) == (1, 1)
    assert "a=ref* b=ref c=inline" in repr(up)
    with pytest.raises(KeyError):
        up["z"]


async def test_a_synchronous_read_runs_the_fetch_off_the_handlers_loop(
    blobs: CountingBlobs,
) -> None:
    """`ctx.upstream["a"]` from a coroutine works (the fetch runs on a loop of its own);
    `load` fetches on the handler's own loop, so nothing waits on it."""
    outputs = OutputStore(blobs, limit=10)
    up = Upstream(await refs(blobs), outputs)
    assert up["a"] == BIG
    await up.load("b")
    here = asyncio.get_running_loop()
    assert [loop is here for loop in blobs.loops] == [False, True]
    assert up["b"] == OTHER and len(blobs.loops) == 2


async def test_the_cache_serves_the_next_attempt_each_with_its_own_copy(
    blobs: CountingBlobs,
) -> None:
    """A second task reading the same output is a cache hit, not a blob store read; a handler
    that changes what it got changes nothing for the next one."""
    outputs = OutputStore(blobs, limit=10)
    message_upstream = await refs(blobs)
    first = Upstream(message_upstream, outputs)
    first["a"]["rows"].clear()  # type: ignore[index,union-attr]
    second = Upstream(message_upstream, outputs)
    await second.load()
    assert second["a"] == BIG and second["b"] == OTHER
    assert outputs.fetched == 2 and outputs.cache.hits == 1  # a from the cache, b read


async def test_load_names_a_key_that_is_not_upstream(blobs: CountingBlobs) -> None:
    """Asking for an upstream task the task does not need is a KeyError listing the ones
    it has, as from the context too."""
    up = Upstream(await refs(blobs), OutputStore(blobs, limit=10))
    with pytest.raises(KeyError, match=r"'z' is not an upstream task.*'a', 'b'"):
        await up.load("z")
    plain = make_context(upstream={"a": 1})  # a plain dict, as tests give handlers
    await plain.load_upstream("a")
    with pytest.raises(KeyError, match="'z'"):
        await plain.load_upstream("z")


@pytest.mark.parametrize("why", ["no-blob-store", "missing", "damaged", "store-down"])
async def test_an_unreadable_reference_is_one_error_kind_naming_it(
    blobs: CountingBlobs, tmp_path: Path, why: str
) -> None:
    """Whatever keeps the output from the handler, reading it raises TaskFailed of kind
    upstream_unreadable (retryable: another agent or the store once back may read it),
    naming the upstream task, the object and the reason; sync and async alike."""
    values = await refs(blobs)
    key = values["a"]["$blob"]  # type: ignore[index,call-overload]
    outputs: OutputStore | None = OutputStore(blobs, limit=10)
    reason = {
        "no-blob-store": "no blob store",
        "missing": "missing",
        "damaged": "damaged",
        "store-down": "cannot reach S3",
    }[why]
    if why == "no-blob-store":
        outputs = None
    elif why == "missing":
        await blobs.delete(key)
    elif why == "damaged":
        await blobs.put(key, b"not what it was")
    else:
        down = DownBlobs(tmp_path / "down")
        outputs = OutputStore(down, limit=10)
    with pytest.raises(TaskFailed) as by_read:
        Upstream(values, outputs)["a"]
    with pytest.raises(TaskFailed) as by_load:
        await Upstream(values, outputs).load("a")
    for error in (by_read.value, by_load.value):
        assert (error.kind, error.non_retryable) == (UNREADABLE, False)
        assert "'a'" in error.message and key in error.message and reason in error.message
        assert "blob_url" in error.message or why != "no-blob-store"


def test_templates_in_the_input_name_the_upstream_outputs_to_fetch() -> None:
    """Names in `{a}`, `{a.field}` and `{a[0]}` anywhere in the input count; escaped braces,
    strings that are no template and keys not asked about do not."""
    task_input: JSON = {
        "prompt": "Review {a.result} against {b[0]}",
        "messages": [{"content": "and {c}"}],
        "note": "{{a}} is literal; {broken",
    }
    assert named_in(task_input, ["c", "b", "a", "d"]) == ["c", "b", "a"]
    assert named_in({"x": "{{a}} {broken"}, ["a"]) == []
    assert named_in("plain {d}", ["a"]) == []


def test_template_values_read_only_what_the_template_names() -> None:
    """A prompt over the upstream outputs reads the outputs it names and no other; the task's
    own input wins over an upstream output of the same name."""
    read: list[str] = []

    class Watched(dict[str, JSON]):
        def __getitem__(self, key: str) -> JSON:
            read.append(key)
            return super().__getitem__(key)

    values = template_values(Watched(a={"result": "A"}, b="B", c="C"), {"c": "input c"})
    assert render("{a.result} and {c}", values, kind="k", what="prompt") == "A and input c"
    assert read == ["a"] and list(values) == ["a", "b", "c"] and len(values) == 3


# ------------------------------------------------------------------------ through the worker


@dataclass
class Reports:
    """The final reports an agent publishes."""

    final: list[Report] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish_report(self, body: bytes, headers: Mapping[str, str]) -> None:
        report = decode(body, Report)
        if report.kind != "started":
            self.final.append(report)
            self.ended.set()


async def run_task(
    clock: FakeClock,
    handler: Handler,
    upstream: dict[str, JSON],
    outputs: OutputStore | None,
    task_input: JSON = None,
) -> Report:
    """Run one task needing ``upstream`` on a worker reading through ``outputs``; its final
    report."""
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    reports = Reports()
    bus.publish_report = reports.publish_report  # type: ignore[method-assign]
    await bus.start()
    worker = Worker(bus, registry, {"make": handler}, name="w", clock=clock, outputs=outputs)
    message = TaskMessage(
        task_id="wf/t",
        workflow_id="wf",
        key="t",
        capability="make",
        attempt=1,
        input=task_input,
        upstream=upstream,
        timeout=60,
        dispatched_at=0.0,
    )
    await bus.publish_tasks([OutgoingTask("make", encode(message), {})])
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(reports.ended.wait(), LIMIT)  # the fetch runs in a thread
        (report,) = reports.final
        return report
    finally:
        await worker.stop(0)
        await running
        await bus.close()


async def test_a_handler_reading_one_upstream_output_fetches_that_one_alone(
    clock: FakeClock, blobs: CountingBlobs
) -> None:
    """The worker hands its blob store to the context: the handler sees the whole output of
    `a`, as before references, and `b`, never read, is never fetched."""
    outputs = OutputStore(blobs, limit=10_000)  # its own outputs inline

    async def size_of_a(ctx: TaskContext) -> JSON:
        return len(json.dumps(ctx.upstream["a"]))

    report = await run_task(clock, size_of_a, await refs(blobs), outputs)
    assert (report.kind, report.output) == ("succeeded", len(json.dumps(BIG)))
    assert outputs.fetched == 1 and len(blobs.loops) == 1


async def test_the_outputs_a_prompt_template_names_are_fetched_before_the_handler(
    clock: FakeClock, blobs: CountingBlobs
) -> None:
    """A task whose input names `{a.rows[0]}` gets `a` fetched on the worker's own loop
    before its handler runs (not by a blocking read), and `b` not at all."""
    outputs = OutputStore(blobs, limit=10_000)  # its own outputs inline

    async def prompt(ctx: TaskContext) -> JSON:
        assert isinstance(ctx.input, dict)
        values = template_values(ctx.upstream, ctx.input)
        return render(ctx.input["prompt"], values, kind="test", what="prompt")

    here = asyncio.get_running_loop()
    task_input = {"prompt": "first row: {a.rows[0]}"}
    report = await run_task(clock, prompt, await refs(blobs), outputs, task_input)
    assert (report.kind, report.output) == ("succeeded", "first row: " + "x" * 50)
    assert blobs.loops == [here]


async def test_an_agent_without_a_blob_store_fails_the_attempt_saying_so(
    clock: FakeClock, blobs: CountingBlobs
) -> None:
    """Reading a reference on an agent with no blob store fails the attempt as
    upstream_unreadable, retryable, with the fix in the message."""

    async def read_a(ctx: TaskContext) -> JSON:
        return ctx.upstream["a"]

    report = await run_task(clock, read_a, await refs(blobs), None)
    assert report.kind == "failed" and report.error is not None
    assert (report.error.kind, report.error.retryable) == (UNREADABLE, True)
    assert "blob_url" in report.error.message


async def test_a_handler_that_reads_nothing_runs_without_a_blob_store(
    clock: FakeClock, blobs: CountingBlobs
) -> None:
    """References a handler never reads cost nothing, even on an agent that could not read
    them."""

    async def ignore(ctx: TaskContext) -> Any:
        return sorted(ctx.upstream)

    report = await run_task(clock, ignore, await refs(blobs), None)
    assert (report.kind, report.output) == ("succeeded", ["a", "b"])


@pytest.mark.parametrize("kind", ["claude", "anthropic"])
async def test_the_ai_agents_prompts_read_only_the_outputs_they_name(
    blobs: CountingBlobs, kind: str
) -> None:
    """The claude and anthropic prompts fill `{a.rows[1]}` from a referenced output and
    fetch nothing else."""
    outputs = OutputStore(blobs, limit=10)
    message = TaskMessage(
        task_id="wf/t",
        workflow_id="wf",
        key="t",
        capability=kind,
        attempt=1,
        input={"prompt": "row: {a.rows[1]}"},
        upstream=await refs(blobs),
        timeout=60,
        dispatched_at=0.0,
    )
    ctx = TaskContext.for_message(
        message, agent_id="agent", now=0.0, log=get_logger("test"), outputs=outputs
    )
    if kind == "claude":
        prompt = prompt_of(ctx)
    else:
        ((prompt_message,), _) = request_of(ctx)
        prompt = prompt_message["content"]
    assert prompt == "row: " + "x" * 50
    assert outputs.fetched == 1 and isinstance(ctx.upstream, Upstream)
    assert ctx.upstream.fetched == 1
