"""Demo traffic: a steady stream of the example workflows, a simulated AI agent to run the
Claude example, and a live log of what happens.

The simulated agent (:mod:`agents.builtin.simulated`: no network, no API key, every answer
says ``[simulated]``) serves the ``claude`` capability, so ``claude_review.yaml`` runs in the
demo and its usage (tokens, model, cost) flows through the product's own path (``ctx.usage``,
the reports, the Store, the ``usage`` events): the ``spent`` columns and the overview's cost
sparkline fill as they would for a real fleet. A node whose config runs an agent serving
``claude`` itself gets no simulated one: made-up spending never mixes with real spending.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TextIO

import structlog

from agentdeck.agents.builtin import simulated
from agentdeck.agents.worker import Worker
from agentdeck.core.client import Client
from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.messages import Event, decode
from agentdeck.core.ports import Bus
from agentdeck.core.runtime import Runtime
from agentdeck.core.settings import Settings
from agentdeck.core.spec import WorkflowSpec, load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
log = structlog.get_logger(__name__)

SIMULATED_CAPABILITY = "claude"
"""What the simulated agent serves: the capability of ``examples/claude_review.yaml``."""
SIMULATED_NAME = "claude-simulated"
"""Its name in the agents screen, the logs and the usage records' agent ids."""
SIMULATED_SECONDS = (0.5, 2.0)
"""How long one of its calls takes, drawn between these (kept short: stopping the demo waits
for the calls under way)."""
FEED_INTERVAL = 2.0
"""Seconds between two example workflows the demo submits."""


def simulated_agent(
    runtime: Runtime,
    settings: Settings,
) -> Worker | None:
    """The demo's simulated AI agent for ``runtime`` (each call taking
    :data:`SIMULATED_SECONDS`), or None when a configured agent serves
    :data:`SIMULATED_CAPABILITY`."""
    if any(SIMULATED_CAPABILITY in spec.capabilities for spec in settings.agents):
        log.info("demo_simulated_agent_skipped", capability=SIMULATED_CAPABILITY)
        return None
    least, most = SIMULATED_SECONDS
    options = {"min_seconds": least, "max_seconds": most}
    return Worker(
        runtime.bus,
        runtime.registry,
        {SIMULATED_CAPABILITY: simulated.make(options, clock=runtime.clock)},
        name=f"{SIMULATED_NAME}@{runtime.node}",
        concurrency=4,
        clock=runtime.clock,
        heartbeat_interval=settings.scheduler.heartbeat_interval,
        ttl=settings.scheduler.agent_ttl,
        outputs=runtime.scheduler.outputs,
    )


def example_specs(client: Client, folder: Path = EXAMPLES) -> list[WorkflowSpec]:
    """Every example spec in ``folder``, validated."""
    return [load_spec(p, client.limits) for p in sorted(folder.glob("*.yaml"))]


class DemoFeeder:
    """Submits the example workflows in turn, one every ``interval`` seconds: those whose every
    capability is in ``capabilities`` (the fleet that runs them; None: all of them). An example
    for agents this node does not run (``claude_review.yaml`` needs Claude Code) is skipped
    with a log line, rather than left waiting for ever."""

    def __init__(
        self,
        client: Client,
        clock: Clock,
        *,
        interval: float | None = None,
        capabilities: Collection[str] | None = None,
    ) -> None:
        self.client, self.clock = client, clock
        self.interval = FEED_INTERVAL if interval is None else interval
        self.capabilities = None if capabilities is None else frozenset(capabilities)
        self.submitted = 0
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"<DemoFeeder submitted={self.submitted}>"

    async def run(self) -> None:
        """Submit until stopped."""
        specs = []
        for spec in example_specs(self.client):
            missing = {t.capability for t in spec.tasks} - (self.capabilities or set())
            if self.capabilities is not None and missing:
                log.info("demo_example_skipped", name=spec.name, served_by_no_agent=sorted(missing))
            else:
                specs.append(spec)
        if not specs:
            log.error("demo_has_no_example", capabilities=sorted(self.capabilities or ()))
            return
        for spec in itertools.cycle(specs):
            if self._stopping.is_set():
                return
            try:
                workflow = await self.client.submit(spec)
                self.submitted += 1
                log.info("demo_submitted", workflow_id=workflow.id, name=workflow.name)
            except AgentdeckError as exc:
                log.error("demo_submit_failed", error=str(exc))
            stop = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait(
                [stop, asyncio.ensure_future(self.clock.sleep(self.interval))],
                return_when=asyncio.FIRST_COMPLETED,
            )
            stop.cancel()

    async def stop(self, grace: float) -> None:
        """Stop submitting."""
        self._stopping.set()


class LivePrinter:
    """Prints workflow and failure events as they happen (the live log until the TUI runs)."""

    def __init__(self, bus: Bus, out: TextIO = sys.stdout) -> None:
        self.bus, self.out = bus, out
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return "<LivePrinter>"

    async def run(self) -> None:
        """Follow the events stream until stopped."""
        self._task = asyncio.current_task()
        try:
            async for body in self.bus.subscribe_events():
                event = decode(body, Event)
                line = describe(event)
                if line:
                    print(line, file=self.out, flush=True)
        except asyncio.CancelledError:
            return

    async def stop(self, grace: float) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()


def describe(event: Event) -> str | None:
    """One human line for the events worth a glance; None for the rest."""
    d = event.data
    if event.topic == "workflow":
        return f"workflow {d['workflow_id']} {d['name']}: {d['status']}"
    if event.topic == "task" and d.get("kind") in ("retrying", "failed", "redelivered", "skipped"):
        err = (d.get("error") or {}).get("message", "")
        return f"  task {d['task_id']} attempt {d['attempt']}: {d['kind']} {err}".rstrip()
    if event.topic == "command":
        return f"command {d['action']} {d['target']}: {d['status']} {d['result']}"
    return None
