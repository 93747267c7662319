"""Agents: run an agent worker process (``agent``) and list the live fleet (``agents``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from agentdeck.core.clock import SystemClock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.logs import configure_logging
from agentdeck.core.settings import AGENT_KINDS
from agentdeck.tui.cli.output import emit_json, fail, run
from agentdeck.tui.cli.root import Context, main, pass_ctx
from agentdeck.tui.table import ago, format_table


@main.command("agent")
@click.option("--kind", default=None, help=f"Built-in agent: {', '.join(AGENT_KINDS)}.")
@click.option(
    "--module",
    "modules",
    multiple=True,
    help="Run the @agent functions of this Python module instead (repeatable).",
)
@click.option("--name", default=None, help="Agent name (default: the kind).")
@click.option(
    "--capability",
    "capabilities",
    multiple=True,
    help="Capability to serve (repeatable; default: the kind).",
)
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Agent option (repeatable); VALUE is parsed as JSON when it can be.",
)
@click.option("--grace", default=30.0, show_default=True, help="Seconds to drain on SIGTERM.")
@click.option(
    "--started-after",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Report `started` only for tasks still running after SECONDS (0: always).",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve /metrics on this port (default: the metrics_port setting; 0: off).",
)
@pass_ctx
def agent_cmd(
    ctx: Context,
    kind: str | None,
    modules: tuple[str, ...],
    name: str | None,
    capabilities: tuple[str, ...],
    concurrency: int,
    options: tuple[str, ...],
    grace: float,
    started_after: float,
    metrics_port: int | None,
) -> None:
    """Run an agent worker process that takes tasks from the bus: a built-in (--kind) or
    your own @agent functions (--module)."""
    from agentdeck.agents.main import run_workers
    from agentdeck.backends import open_bus, open_registry
    from agentdeck.core.settings import AgentSpec
    from agentdeck.tui.telemetry import Telemetry
    from agentdeck.tui.wiring import agent_outputs, build_worker, decorated_workers

    if bool(kind) == bool(modules):
        fail("give either --kind KIND or --module MODULE (not both)")
    settings = ctx.settings
    configure_logging(settings.log_level, settings.log_format, node=settings.node)
    if settings.bus_url.startswith("memory:"):
        fail(
            "bus_url is memory://, which lives inside one process; an agent "
            "process needs a shared bus (AGENTDECK_BUS_URL=amqp://user:pass@host:5672/)"
        )
    opts: dict[str, Any] = {}
    for item in options:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--option {item!r} is not KEY=VALUE")
        try:
            opts[key] = json.loads(raw)
        except ValueError:
            opts[key] = raw
    spec = None
    if kind:
        try:
            spec = AgentSpec.model_validate(
                {
                    "kind": kind,
                    "name": name or kind,
                    "concurrency": concurrency,
                    "capabilities": list(capabilities) or [kind],
                    "options": opts,
                    "started_after": started_after,
                }
            )
        except ValueError as exc:  # pydantic's ValidationError: its text names the field
            fail(str(exc))

    async def go() -> None:
        clock = SystemClock()
        bus = open_bus(settings.bus_url, clock=clock)
        registry = open_registry(settings.registry_url, clock=clock)
        blobs, outputs = agent_outputs(settings, clock)
        await bus.start()
        await registry.start()
        try:
            await blobs.start()
            if spec is not None:
                workers = [build_worker(spec, bus, registry, clock, settings, outputs)]
            else:
                workers = decorated_workers(modules, bus, registry, clock, settings, outputs)
                if not workers:
                    raise AgentdeckError(f"no @agent functions in {', '.join(modules)}")
            telemetry = Telemetry.for_settings(settings, "agentdeck-agent", metrics_port)
            telemetry.attach(workers)
            if telemetry.server is not None:
                telemetry.server.start()
            spans = telemetry.span_events(bus, clock)
            publishing = asyncio.create_task(spans.run()) if spans is not None else None
            try:
                await run_workers(workers, grace=grace)
            finally:
                if spans is not None and publishing is not None:
                    await spans.stop(grace=2.0)
                    await asyncio.wait([publishing], timeout=2.0)
                    publishing.cancel()
                telemetry.close()
        finally:
            await bus.close()
            await registry.close()
            await blobs.close()

    run(go())


@main.command("agents")
@click.option("--capability", default=None, help="Only agents serving this capability.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def agents_cmd(ctx: Context, capability: str | None, as_json: bool) -> None:
    """List live agents (from the registry their heartbeats refresh)."""
    from agentdeck.tui.wiring import registry_only

    async def go() -> list[Any]:
        async with registry_only(ctx.settings) as registry:
            return await registry.agents(capability)

    agents = run(go())
    if as_json:
        emit_json(agents)
        return
    now = SystemClock().now()
    click.echo(
        format_table(
            ["id", "name", "state", "capabilities", "busy", "ok", "failed", "heartbeat"],
            [
                [
                    a.id,
                    a.name,
                    a.state.value,
                    ",".join(a.capabilities),
                    f"{a.in_flight}/{a.concurrency}",
                    a.succeeded,
                    a.failed,
                    ago(a.last_seen, now),
                ]
                for a in agents
            ],
        )
    )
