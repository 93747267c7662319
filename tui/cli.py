"""The ``agentdeck`` command line.

``agentdeck`` with no command opens the control centre; ``--daemon`` runs the same runtime
headless. Tables are for people, ``--json`` for scripts; errors go to stderr as one line and
the exit code is non-zero. Nothing imported at module level loads Textual.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import click

from agentdeck.core.clock import SystemClock
from agentdeck.core.errors import AgentdeckError, SpecError
from agentdeck.core.logs import configure_logging
from agentdeck.core.settings import Settings
from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.tui.table import ago, format_table, when

R = TypeVar("R")
EXIT_ERROR = 1
EXIT_USAGE = 2


# ----------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    click.echo(json.dumps(_jsonable(value), indent=2, sort_keys=True, default=str))


def run(coro: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine; AgentdeckErrors become one line on stderr and exit code 1."""
    try:
        return asyncio.run(coro)
    except SpecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except AgentdeckError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)


class Context:
    """What every command needs: the settings (loaded once, lazily, with CLI overrides)."""

    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = Settings.load(config_path=self.config)
            except AgentdeckError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(EXIT_USAGE)
            # Log lines go to stderr from the start: stdout is the command's output (ids,
            # --json) that scripts read. --daemon and agent configure it again, the same way.
            s = self._settings
            configure_logging(s.log_level, s.log_format, node=s.node)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


def _client_call(ctx: Context, fn: Callable[[Any], Awaitable[R]]) -> R:
    """Open the Store, hand a Client to ``fn``, close the Store."""
    from agentdeck.core.client import Client
    from agentdeck.tui.wiring import store_only

    async def go() -> R:
        async with store_only(ctx.settings) as store:
            client = Client(
                store, SystemClock(), limits=ctx.settings.limits, actor=f"cli@{ctx.settings.node}"
            )
            return await fn(client)

    return run(go())


# ------------------------------------------------------------------------------ root


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AGENTDECK_CONFIG",
    help="TOML config file (default ./agentdeck.toml, then /etc/agentdeck/agentdeck.toml).",
)
@click.option("--daemon", is_flag=True, help="Run headless: scheduler and configured agents.")
@click.option("--demo", is_flag=True, help="Add the built-in agents and a stream of examples.")
@click.option("--read-only", is_flag=True, help="Control centre without any actions.")
@click.option(
    "--scheduler",
    is_flag=True,
    help="With backend URLs configured: run a scheduler (which may lead) and the configured "
    "agents in the control centre too, instead of only attaching.",
)
@click.pass_context
def main(
    ctx: click.Context,
    config: Path | None,
    daemon: bool,
    demo: bool,
    read_only: bool,
    scheduler: bool,
) -> None:
    """agentdeck: a control centre for fleets of autonomous agents."""
    ctx.obj = Context(config)
    if ctx.invoked_subcommand is not None:
        return
    if daemon:
        run_daemon(ctx.obj.settings, demo=demo)
        return
    # Imported here so that the daemon path and every other command never load Textual; a broken
    # import is an error, never a silent fall-back to another mode.
    from agentdeck.tui.app import run_app

    run_app(ctx.obj.settings, demo=demo, read_only=read_only, scheduler=scheduler)


def run_daemon(settings: Settings, *, demo: bool) -> None:
    """The headless node: runtime + agents (+ demo feed) until SIGTERM/SIGINT/SIGHUP."""
    configure_logging(settings.log_level, settings.log_format, node=settings.node)

    async def go() -> None:
        from agentdeck.tui.demo import DemoFeeder, LivePrinter
        from agentdeck.tui.telemetry import instrument_runtime
        from agentdeck.tui.wiring import build_runtime

        runtime = build_runtime(settings, demo=demo)
        telemetry = instrument_runtime(runtime, settings)
        if demo:
            runtime.services.append(LivePrinter(runtime.bus))
            runtime.services.append(DemoFeeder(runtime.client, runtime.clock))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, runtime.close)
        try:
            async with runtime:
                await runtime.wait_closed()
        finally:
            telemetry.close()  # flush spans still waiting for export

    run(go())


# ---------------------------------------------------------------------------- agents


@main.command("agent")
@click.option(
    "--kind", default=None, help="Built-in agent: echo, sleep, chaos, shell, http, python."
)
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
    from agentdeck.core.outputs import OutputStore
    from agentdeck.core.settings import AgentSpec
    from agentdeck.tui.telemetry import Telemetry
    from agentdeck.tui.wiring import agent_blobs, build_worker, decorated_workers

    if bool(kind) == bool(modules):
        click.echo("error: give either --kind KIND or --module MODULE (not both)", err=True)
        sys.exit(EXIT_USAGE)
    settings = ctx.settings
    configure_logging(settings.log_level, settings.log_format, node=settings.node)
    if settings.bus_url.startswith("memory:"):
        click.echo(
            "error: bus_url is memory://, which lives inside one process; an agent "
            "process needs a shared bus (AGENTDECK_BUS_URL=amqp://user:pass@host:5672/)",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    opts: dict[str, Any] = {}
    for item in options:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            click.echo(f"error: --option {item!r} is not KEY=VALUE", err=True)
            sys.exit(EXIT_USAGE)
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
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    async def go() -> None:
        clock = SystemClock()
        bus = open_bus(settings.bus_url, clock=clock)
        registry = open_registry(settings.registry_url, clock=clock)
        blobs = agent_blobs(settings, clock)  # None: large outputs go in the reports
        outputs = OutputStore(blobs, limit=settings.output_inline_limit) if blobs else None
        await bus.start()
        await registry.start()
        try:
            if blobs is not None:
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
            try:
                await run_workers(workers, grace=grace)
            finally:
                telemetry.close()
        finally:
            await bus.close()
            await registry.close()
            if blobs is not None:
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


# ------------------------------------------------------------------------- workflows


@main.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Wait until the workflow finishes.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after SECONDS.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def submit_cmd(ctx: Context, file: Path, wait: bool, timeout: float | None, as_json: bool) -> None:
    """Validate a workflow spec (YAML or JSON) and submit it."""

    async def go(client: Any) -> Any:
        workflow = await client.submit_file(file)
        if not wait:
            return {"workflow": workflow}
        try:
            workflow = await client.wait(workflow.id, timeout)
        except TimeoutError:
            raise AgentdeckError(
                f"workflow {workflow.id} did not finish within {timeout:g}s "
                "(is a daemon running? agentdeck --daemon)"
            ) from None
        tasks = await client.store.list_tasks(workflow_id=workflow.id, limit=1_000_000)
        return {"workflow": workflow, "tasks": tasks}

    result = _client_call(ctx, go)
    workflow = result["workflow"]
    if as_json:
        emit_json(
            {
                **_jsonable(workflow),
                **(
                    {"tasks": [_task_json(t) for t in result["tasks"]]} if "tasks" in result else {}
                ),
            }
        )
    elif "tasks" in result:
        click.echo(f"workflow {workflow.id} {workflow.name}: {workflow.status.value}")
        click.echo(_tasks_table(result["tasks"]))
    else:
        click.echo(workflow.id)
    if wait and workflow.status != WorkflowStatus.SUCCEEDED:
        sys.exit(EXIT_ERROR)


def _task_json(task: Any) -> dict[str, Any]:
    data: dict[str, Any] = _jsonable(task)
    return data


def _tasks_table(tasks: list[Any]) -> str:
    return format_table(
        ["task", "capability", "status", "attempt", "agent", "output / error"],
        [
            [
                t.id,
                t.capability,
                t.status.value,
                t.attempt,
                t.agent_id,
                (f"{t.error.kind}: {t.error.message}" if t.error else json.dumps(t.output)),
            ]
            for t in tasks
        ],
    )


@main.command("workflows")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in WorkflowStatus]),
    help="Filter (repeatable).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def workflows_cmd(ctx: Context, statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List workflows, newest first, with their progress."""
    from agentdeck.core.scheduler import summarize

    async def go(client: Any) -> list[dict[str, Any]]:
        wfs = await client.store.list_workflows(
            status=[WorkflowStatus(s) for s in statuses] or None, limit=limit
        )
        counts = await client.store.count_tasks([w.id for w in wfs]) if wfs else {}
        return [summarize(w, counts.get(w.id, {})) for w in wfs]

    rows = _client_call(ctx, go)
    if as_json:
        emit_json(rows)
        return
    click.echo(
        format_table(
            ["id", "name", "status", "progress", "created", "finished"],
            [
                [
                    r["id"],
                    r["name"],
                    r["status"],
                    f"{r['done']}/{r['tasks']}",
                    when(r["created_at"]),
                    when(r["finished_at"]),
                ]
                for r in rows
            ],
        )
    )


async def _with_output(settings: Settings, task: Any) -> Any:
    """``task`` with its output fetched when the blob store keeps it (a large output)."""
    from dataclasses import replace

    from agentdeck.core.outputs import OutputStore, is_ref
    from agentdeck.tui.wiring import blobs_only

    if not is_ref(task.output):
        return task
    async with blobs_only(settings) as blobs:
        return replace(task, output=await OutputStore(blobs, limit=1).resolve(task.output))


@main.command("show")
@click.argument("target")
@click.option("--events", is_flag=True, help="With a task id: its whole event history.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def show_cmd(ctx: Context, target: str, events: bool, as_json: bool) -> None:
    """Show a workflow (its tasks, states, attempts, outputs) or one task (WF/KEY)."""
    from agentdeck.core.models import Task

    async def go(client: Any) -> dict[str, Any]:
        found = await client.resolve(target)
        if isinstance(found, Task):
            found = await _with_output(ctx.settings, found)
            return {"task": found, "events": await client.history(found.id)}
        tasks = await client.store.list_tasks(workflow_id=found.id, limit=1_000_000)
        return {"workflow": found, "tasks": tasks}

    result = _client_call(ctx, go)
    if as_json:
        emit_json(result)
        return
    if "task" in result:
        t = result["task"]
        for label, value in [
            ("task", t.id),
            ("capability", t.capability),
            ("status", t.status.value),
            ("attempt", t.attempt),
            ("agent", t.agent_id),
            ("needs", ", ".join(t.needs) or "-"),
            ("input", json.dumps(t.input)),
            ("output", json.dumps(t.output)),
            ("error", f"{t.error.kind}: {t.error.message}" if t.error else "-"),
        ]:
            click.echo(f"{label:>10}  {value}")
        click.echo("")
        click.echo(
            format_table(
                ["at", "event", "attempt", "from", "to", "agent", "detail"],
                [
                    [
                        when(e.at),
                        e.kind,
                        e.attempt,
                        e.from_status,
                        e.to_status,
                        e.agent_id,
                        json.dumps(dict(e.detail)) if e.detail else "",
                    ]
                    for e in result["events"]
                ],
            )
        )
        return
    wf = result["workflow"]
    click.echo(
        f"workflow {wf.id} {wf.name}: {wf.status.value} "
        f"(created {when(wf.created_at)}, finished {when(wf.finished_at)})"
    )
    click.echo(_tasks_table(result["tasks"]))


@main.command("tasks")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in TaskStatus]),
    help="Filter (repeatable).",
)
@click.option("--capability", default=None)
@click.option("--workflow", "workflow_id", default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def tasks_cmd(
    ctx: Context,
    statuses: tuple[str, ...],
    capability: str | None,
    workflow_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List tasks, filtered by status, capability or workflow."""

    async def go(client: Any) -> list[Any]:
        result: list[Any] = await client.store.list_tasks(
            workflow_id=workflow_id,
            status=[TaskStatus(s) for s in statuses] or None,
            capability=capability,
            limit=limit,
        )
        return result

    tasks = _client_call(ctx, go)
    if as_json:
        emit_json([_task_json(t) for t in tasks])
    else:
        click.echo(_tasks_table(tasks))


def _command(
    action: str, help_text: str, *, group: click.Group | None = None, metavar: str = "TARGET"
) -> None:
    """Register a CLI command that queues ``action`` for the scheduler and waits for it."""

    @(group or main).command(action, help=help_text)
    @click.argument("target", metavar=metavar)
    @click.option("--no-wait", is_flag=True, help="Queue the command and return at once.")
    @click.option(
        "--timeout",
        default=10.0,
        show_default=True,
        help="Seconds to wait for the scheduler to carry it out.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_ctx
    def command(ctx: Context, target: str, no_wait: bool, timeout: float, as_json: bool) -> None:
        from agentdeck.core.models import CommandStatus

        async def go(client: Any) -> Any:
            return await client.command(action, target, wait=None if no_wait else timeout)

        result = _client_call(ctx, go)
        if as_json:
            emit_json(result)
        elif result.status == CommandStatus.PENDING:
            click.echo(f"queued {action} {result.target} ({result.id})")
        else:
            click.echo(result.result)
        if result.status == CommandStatus.FAILED:
            click.echo(f"error: {result.result}", err=True)
            sys.exit(EXIT_ERROR)


_command("cancel", "Cancel a workflow: unfinished tasks are cancelled, running ones told to stop.")
_command("retry", "Retry a failed task (WF/KEY), or every failed task of a workflow.")
_command("pause", "Pause a workflow: running tasks finish, nothing new is dispatched.")
_command("resume", "Resume a paused workflow.")
_command(
    "drain",
    "Drain agent AGENT (* for all): it finishes what runs, takes nothing new.",
    metavar="AGENT",
)
_command("undrain", "Let a drained agent AGENT (* for all) take tasks again.", metavar="AGENT")
_command(
    "pause-capability",
    "Pause capability CAP: none of its ready tasks is dispatched until resumed.",
    metavar="CAP",
)
_command("resume-capability", "Resume a paused capability CAP.", metavar="CAP")
_command("requeue", "Put dead letter ID back on its queue.", metavar="ID")


# -------------------------------------------------------------------------- breakers


@main.group("breaker")
def breaker_group() -> None:
    """Circuit breakers: list them, trip or reset one by hand."""


@breaker_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def breaker_list_cmd(ctx: Context, as_json: bool) -> None:
    """Every breaker with shared state (a breaker never used has none: it is closed)."""
    from agentdeck.core.breaker import BreakerState
    from agentdeck.tui.wiring import registry_only

    async def go() -> list[BreakerState]:
        from agentdeck.core.holds import is_hold_record

        async with registry_only(ctx.settings) as registry:
            records = [r for r in await registry.breakers() if not is_hold_record(r.name)]
        return sorted((BreakerState.from_record(r) for r in records), key=lambda s: s.name)

    states = run(go())
    if as_json:
        emit_json(
            [
                {
                    "name": s.name,
                    "status": s.status.value,
                    "consecutive_failures": s.consecutive_failures,
                    "calls": s.calls(),
                    "failure_rate": round(s.failure_rate(), 4),
                    "opened_at": s.opened_at,
                    "manual": s.manual,
                    "reason": s.reason,
                }
                for s in states
            ]
        )
        return
    now = SystemClock().now()
    click.echo(
        format_table(
            ["name", "status", "in a row", "window", "changed", "reason"],
            [
                [
                    s.name,
                    s.status.value + (" (by hand)" if s.manual else ""),
                    s.consecutive_failures,
                    f"{s.calls()} calls, {s.failure_rate():.0%} failed",
                    ago(s.changed_at, now) if s.changed_at else "-",
                    s.reason,
                ]
                for s in states
            ],
        )
    )


def _breaker_command(action: str, help_text: str) -> None:
    _command(action, help_text, group=breaker_group, metavar="NAME")


_breaker_command(
    "trip", "Open breaker NAME (capability:X, agent:ID or a capability) until it is reset."
)
_breaker_command("reset", "Close breaker NAME and clear its counts.")


# ------------------------------------------------------------------------- snapshots


@main.group("snapshot")
def snapshot_group() -> None:
    """Snapshots of the whole state in the blob store: create, list, restore."""


@snapshot_group.command("create")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def snapshot_create_cmd(ctx: Context, as_json: bool) -> None:
    """Write the whole state (workflows, tasks, events, commands) as a new snapshot."""
    from agentdeck.core.snapshot import SnapshotInfo, create_snapshot
    from agentdeck.tui.wiring import blobs_only, store_only

    settings = ctx.settings

    async def go() -> SnapshotInfo:
        async with store_only(settings) as store, blobs_only(settings) as blobs:
            return await create_snapshot(
                store, blobs, SystemClock(), node=settings.node, prefix=settings.snapshots.prefix
            )

    info = run(go())
    if as_json:
        emit_json(info)
        return
    counts = ", ".join(f"{n} {kind}" for kind, n in info.counts.items())
    click.echo(f"snapshot {info.id}: {counts} ({info.size} bytes)")


@snapshot_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def snapshot_list_cmd(ctx: Context, as_json: bool) -> None:
    """Complete snapshots in the blob store, oldest first."""
    from agentdeck.core.snapshot import SnapshotInfo, list_snapshots
    from agentdeck.tui.wiring import blobs_only

    async def go() -> list[SnapshotInfo]:
        async with blobs_only(ctx.settings) as blobs:
            return await list_snapshots(blobs, prefix=ctx.settings.snapshots.prefix)

    infos = run(go())
    if as_json:
        emit_json(infos)
        return
    click.echo(
        format_table(
            ["id", "created", "node", "workflows", "tasks", "events", "commands", "bytes"],
            [
                [
                    i.id,
                    when(i.created_at),
                    i.node,
                    *(i.counts.get(k, 0) for k in ("workflows", "tasks", "events", "commands")),
                    i.size,
                ]
                for i in infos
            ],
        )
    )


@snapshot_group.command("restore")
@click.argument("snapshot_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def snapshot_restore_cmd(ctx: Context, snapshot_id: str, as_json: bool) -> None:
    """Load snapshot SNAPSHOT_ID into the configured store, which must be empty.

    Everything is checked (format version, checksums, records) before anything is written.
    Run it before starting a daemon on the new store.
    """
    from agentdeck.core.snapshot import SnapshotInfo, restore_snapshot
    from agentdeck.tui.wiring import blobs_only, store_only

    async def go() -> SnapshotInfo:
        async with store_only(ctx.settings) as store, blobs_only(ctx.settings) as blobs:
            return await restore_snapshot(
                store, blobs, snapshot_id, prefix=ctx.settings.snapshots.prefix
            )

    info = run(go())
    if as_json:
        emit_json(info)
        return
    counts = ", ".join(f"{n} {kind}" for kind, n in info.counts.items())
    click.echo(f"restored snapshot {info.id}: {counts}")


@main.command("dead-letters")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def dead_letters_cmd(ctx: Context, limit: int, as_json: bool) -> None:
    """List dead-lettered messages, newest first (requeue one with `agentdeck requeue ID`)."""
    from agentdeck.backends import open_bus

    async def go() -> list[Any]:
        bus = open_bus(ctx.settings.bus_url, clock=SystemClock())
        await bus.start()
        try:
            return await bus.dead_letters(limit)
        finally:
            await bus.close()

    letters = run(go())
    if as_json:
        emit_json(
            [
                {
                    "id": d.id,
                    "queue": d.queue,
                    "reason": d.reason,
                    "at": d.at,
                    "body": d.body.decode(errors="replace"),
                }
                for d in letters
            ]
        )
        return
    click.echo(
        format_table(
            ["id", "queue", "dead since", "reason", "bytes"],
            [[d.id, d.queue, when(d.at), d.reason, len(d.body)] for d in letters],
        )
    )


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def config_cmd(ctx: Context, as_json: bool) -> None:
    """Print the effective settings (passwords redacted)."""
    data = ctx.settings.redacted()
    if as_json:
        emit_json(data)
        return
    for key, value in sorted(data.items()):
        click.echo(f"{key} = {json.dumps(value, default=str)}")


if __name__ == "__main__":  # pragma: no cover
    main()
