"""A result the bus cannot take, or that cannot be encoded, still ends its attempt: retried
while the bus is unavailable, replaced by a small failed report when refused, and when
nothing can be sent the task message goes back (or aside) with a log line at error level."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.reports import PUBLISH_RETRY_DELAYS, Reporter
from agentdeck.agents.worker import Worker
from agentdeck.backends.files import FileBlobStore
from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import AgentdeckError, BackendUnavailable, ConfigError
from agentdeck.core.logs import get_logger
from agentdeck.core.messages import Report, TaskMessage, decode
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import OutgoingTask
from tests.unit.test_worker import CAP, Reports, eventually, message, settle


class FlakyBus(MemoryBus):
    """A memory bus whose ``publish_report`` raises ``error`` for the bodies ``failing``
    picks (all of them unless told), ``times`` times (None: for ever; 0 unless told)."""

    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.error: Exception = BackendUnavailable("the broker is restarting")
        self.times: int | None = 0
        self.failing: Callable[[bytes], bool] = lambda body: True
        self.refused: list[str] = []
        """The kind of each report refused, in order."""

    async def publish_report(self, body: bytes, headers: Mapping[str, str]) -> None:
        if self.failing(body) and (self.times is None or len(self.refused) < self.times):
            self.refused.append(decode(body, Report).kind)
            raise self.error
        await super().publish_report(body, headers)


def is_success(body: bytes) -> bool:
    return decode(body, Report).kind == "succeeded"


class Rig:
    """A flaky bus, a registry, a report collector, and workers run on them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.bus = FlakyBus(clock=clock)
        self.registry = MemoryRegistry.from_url("memory://", clock=clock)
        self.reports = Reports()
        self.calls = 0
        self.runs: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, handler: Handler | None = None, **options: Any) -> Worker:
        """Run a worker (no ``started`` reports: only results cross the flaky bus)."""

        async def counted(ctx: TaskContext) -> Any:
            self.calls += 1
            return {"ok": True} if handler is None else await handler(ctx)

        options.setdefault("started_after", 60.0)
        worker = Worker(
            self.bus, self.registry, {CAP: counted}, name="w", clock=self.clock, **options
        )
        self.runs.append((worker, asyncio.create_task(worker.run())))
        await eventually(self.registry.agents, "registration")
        return worker

    async def publish(self, body: bytes | None = None) -> None:
        await self.bus.publish_tasks([OutgoingTask(CAP, body or message(), {})])

    async def advance(self, *steps: float) -> None:
        """Move the clock by each step in turn, letting everything run between."""
        for step in steps:
            await settle()
            self.clock.advance(step)
        await settle()


@pytest.fixture
async def rig(clock: FakeClock) -> AsyncIterator[Rig]:
    """The flaky bus with a report collector; workers are stopped afterwards."""
    made = Rig(clock)
    await made.bus.start()
    collector = asyncio.create_task(made.reports.collect(made.bus))
    yield made
    made.bus.times = 0  # let the workers stop cleanly
    for worker, run in made.runs:
        await worker.stop(0)
        await run
    collector.cancel()
    await asyncio.gather(collector, return_exceptions=True)
    await made.bus.close()


def undeliverable(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == "task_report_undeliverable"]


# ---------------------------------------------------------------------- bus unavailable


async def test_a_bus_unavailable_for_a_moment_gets_the_same_report_again(rig: Rig) -> None:
    """BackendUnavailable twice: the succeeded report is published again after each of the
    retry delays (on the clock), then goes through; the message is acked."""
    rig.bus.times = 2
    worker = await rig.start()
    await rig.publish()
    await settle()
    assert rig.bus.refused == ["succeeded"] and rig.reports.seen == []
    await rig.advance(*PUBLISH_RETRY_DELAYS)
    await eventually(lambda: rig.reports.kinds("wf/a") == ["succeeded"])
    assert rig.bus.refused == ["succeeded", "succeeded"]
    assert rig.reports.final("wf/a").output == {"ok": True}
    assert (worker.succeeded, worker.in_flight, rig.calls) == (1, 0, 1)


async def test_a_bus_that_stays_unavailable_requeues_the_message_loudly(rig: Rig) -> None:
    """Unavailable for ever: after the retries, a small failed report is tried once; when
    that fails too, an error-level line says so and the message goes back to the queue
    (run again here: the memory bus hands it straight back), never dropped."""
    rig.bus.times = None
    with capture_logs() as logs:
        await rig.start()
        await rig.publish()
        await rig.advance(*PUBLISH_RETRY_DELAYS)
        await eventually(lambda: rig.calls == 2, "the requeued message running again")
    assert rig.bus.refused[:4] == ["succeeded", "succeeded", "succeeded", "failed"]
    (line, *_) = undeliverable(logs)
    assert line["log_level"] == "error"
    assert (line["task_id"], line["settle"], line["error_kind"]) == (
        "wf/a",
        "requeue",
        "report_not_sent",
    )
    assert "the broker is restarting" in line["error"]
    assert rig.reports.seen == []


async def test_a_report_the_bus_cannot_take_is_replaced_by_a_retryable_failure(rig: Rig) -> None:
    """Only the large succeeded report keeps failing: after the retries a small failed
    report ``report_not_sent`` (retryable: the policy runs the task again) goes instead."""
    rig.bus.failing, rig.bus.times = is_success, None
    worker = await rig.start()
    await rig.publish()
    await rig.advance(*PUBLISH_RETRY_DELAYS)
    await eventually(lambda: rig.reports.kinds("wf/a") == ["failed"])
    error = rig.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.retryable) == ("report_not_sent", True)
    assert "could not be published (3 tries): the broker is restarting" in error.message
    assert (worker.failed, worker.in_flight, rig.calls) == (1, 0, 1)


# ---------------------------------------------------------------------------- refused


async def test_a_report_the_bus_refuses_is_replaced_at_once_by_malformed(rig: Rig) -> None:
    """A refusal (not BackendUnavailable) is not retried: retrying the same message cannot
    help. The failed report ``malformed``, not retryable, carries the bus's reason, with no
    time passing."""
    rig.bus.failing, rig.bus.times = is_success, None
    rig.bus.error = ConfigError("message size 20000000 is larger than max size 16777216")
    await rig.start()
    await rig.publish()
    await eventually(lambda: rig.reports.kinds("wf/a") == ["failed"])
    error = rig.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.retryable) == ("malformed", False)
    assert error.message.startswith("the bus refused the succeeded report (")
    assert "larger than max size" in error.message
    assert rig.bus.refused == ["succeeded"]


async def test_when_even_the_failure_is_refused_the_message_is_dead_lettered(rig: Rig) -> None:
    """The bus refuses every report: the message is rejected (kept aside for a person; the
    scheduler's dispatch deadline ends the attempt), with an error-level line."""
    rig.bus.error, rig.bus.times = AgentdeckError("channel closed: PRECONDITION_FAILED"), None
    with capture_logs() as logs:
        await rig.start()
        await rig.publish()

        async def dead_lettered() -> bool:
            return len(await rig.bus.dead_letters()) == 1

        await eventually(dead_lettered)
    assert rig.bus.refused == ["succeeded", "failed"]
    (line,) = undeliverable(logs)
    assert (line["log_level"], line["settle"], line["error_kind"]) == (
        "error",
        "reject",
        "malformed",
    )
    assert rig.calls == 1


# ------------------------------------------------------------------------- too large


BIG = {"pages": ["short", "x" * 5000]}


async def test_an_output_over_the_report_limit_fails_as_malformed_saying_where(rig: Rig) -> None:
    """No blob store: an output over ``report_limit`` fails ``malformed`` at once, saying
    its size, the limit, where most of it is, and that a blob_url would keep it."""

    async def big(ctx: TaskContext) -> Any:
        return BIG

    await rig.start(big, report_limit=4096)
    await rig.publish()
    await eventually(lambda: rig.reports.kinds("wf/a") == ["failed"])
    error = rig.reports.final("wf/a").error
    assert error is not None
    assert (error.kind, error.retryable) == ("malformed", False)
    assert error.message.startswith("output is 4.9 KiB of JSON, over the 4.0 KiB a report may")
    assert "most of it is output.pages[1] (5000 characters)" in error.message
    assert "give this agent a blob_url" in error.message


async def test_an_output_kept_inline_by_the_blob_store_limit_says_to_lower_it(
    rig: Rig, tmp_path: Path
) -> None:
    """With a blob store whose limit is over the report limit, the output stays inline and
    is too large: the message names output_inline_limit as the fix."""
    blobs = FileBlobStore(tmp_path / "blobs")
    await blobs.start()

    async def big(ctx: TaskContext) -> Any:
        return BIG

    await rig.start(big, report_limit=4096, outputs=OutputStore(blobs, limit=1 << 20))
    await rig.publish()
    await eventually(lambda: rig.reports.kinds("wf/a") == ["failed"])
    error = rig.reports.final("wf/a").error
    assert error is not None and error.kind == "malformed"
    assert "output_inline_limit is 1.0 MiB: under 4.0 KiB, the blob store keeps" in error.message
    await blobs.close()


async def test_the_same_output_goes_by_reference_when_the_blob_store_takes_it(
    rig: Rig, tmp_path: Path
) -> None:
    """The same output under a blob store limit below the report limit succeeds: the report
    carries the reference, so the report limit does not apply to the output."""
    blobs = FileBlobStore(tmp_path / "blobs")
    await blobs.start()

    async def big(ctx: TaskContext) -> Any:
        return BIG

    await rig.start(big, report_limit=4096, outputs=OutputStore(blobs, limit=1024))
    await rig.publish()
    for _ in range(500):  # the file blob store writes in a thread: real time passes
        if rig.reports.seen:
            break
        await asyncio.sleep(0.01)
    assert rig.reports.kinds("wf/a") == ["succeeded"]
    assert "$blob" in rig.reports.final("wf/a").output
    await blobs.close()


# ------------------------------------------------------------------ what a report says


async def test_a_huge_error_message_with_a_lone_surrogate_still_reports(rig: Rig) -> None:
    """A handler's exception whose text is huge and not valid UTF-8 still ends the attempt:
    the message is cut and escaped so the report encodes, and the log line is cut too (the
    console renderer would take seconds over it, stalling the event loop)."""

    async def angry(ctx: TaskContext) -> Any:
        raise ValueError("\ud800" + "y" * 5000)

    with capture_logs() as logs:
        await rig.start(angry)
        await rig.publish()
        await eventually(lambda: rig.reports.kinds("wf/a") == ["failed"])
    (line,) = [entry for entry in logs if entry["event"] == "task_handler_raised"]
    assert "exc_info" not in line and line["error_type"] == "ValueError"
    assert line["error"].endswith("(4006 more characters)") and "angry" in line["traceback"]
    error = rig.reports.final("wf/a").error
    assert error is not None and error.kind == "ValueError"
    assert error.message.startswith("\\ud800yyy")
    assert error.message.endswith("more characters)") and len(error.message) < 4100


async def test_a_report_that_does_not_encode_goes_out_as_malformed(clock: FakeClock) -> None:
    """The Reporter's own guard: whatever slipped past the output checks and does not
    encode (here an object pydantic cannot write) becomes a failed ``malformed`` report
    saying so, never an exception."""
    bus = MemoryBus.from_url("memory://", clock=clock)
    await bus.start()
    reports = Reports()
    collector = asyncio.create_task(reports.collect(bus))
    reporter = Reporter(bus, clock, "agent-1", get_logger(__name__))
    task = decode(message(), TaskMessage)
    sent = await reporter.result(
        {}, task, output={"x": object()}, error=None, started_at=None, usage=None
    )
    await eventually(lambda: reports.seen)
    assert sent.settle == "ack" and sent.error is not None
    assert (sent.error.kind, sent.error.retryable) == ("malformed", False)
    assert sent.error.message.startswith("the succeeded report cannot be sent: it does not encode")
    carried = reports.final("wf/a").error
    assert carried is not None and carried.to_info() == sent.error
    collector.cancel()
    await asyncio.gather(collector, return_exceptions=True)
    await bus.close()


def test_bad_sending_settings_are_refused_naming_the_value(clock: FakeClock) -> None:
    """A report_limit under 1 KiB or a retry delay out of range is a ConfigError naming it."""
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)

    async def h(ctx: TaskContext) -> Any:
        return None

    with pytest.raises(ConfigError, match=r"report_limit must be .* >= 1024, got 10"):
        Worker(bus, registry, {CAP: h}, name="w", report_limit=10)
    with pytest.raises(ConfigError, match=r"publish_retry_delays .* got -1"):
        Worker(bus, registry, {CAP: h}, name="w", publish_retry_delays=[1, -1])


class BrokenMetrics:
    """Metrics whose ``run_started`` raises: the agent's own machinery failing mid-task."""

    def run_started(self, capability: str, waited: float) -> None:
        raise RuntimeError("metrics registry corrupted")

    def run_finished(self, capability: str, outcome: str, seconds: float) -> None:
        """Nothing to count."""

    def message_rejected(self) -> None:
        """Nothing to count."""

    def log_line_dropped(self, reason: str) -> None:
        """Nothing to count."""


async def test_a_failure_of_the_agent_itself_sets_the_message_aside_and_goes_on(
    rig: Rig,
) -> None:
    """An error in the worker's own code (not the handler's) neither kills the worker nor
    loses the message: it is logged at error level and dead-lettered, and the next message
    is taken as usual."""
    with capture_logs() as logs:
        worker = await rig.start(metrics=BrokenMetrics())
        await rig.publish(message("a"))
        await rig.publish(message("b"))

        async def both_aside() -> bool:
            return len(await rig.bus.dead_letters()) == 2

        await eventually(both_aside)
    crashed = [line for line in logs if line["event"] == "task_attempt_crashed"]
    assert [(line["task_id"], line["log_level"]) for line in crashed] == [
        ("wf/a", "error"),
        ("wf/b", "error"),
    ]
    assert worker.in_flight == 0 and not rig.runs[0][1].done()
    (letter, _) = await rig.bus.dead_letters()
    assert "metrics registry corrupted" in letter.reason
