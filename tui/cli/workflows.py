"""Workflows and tasks: submit a spec, list workflows and tasks, show one of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from agentdeck.core.clock import SystemClock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.settings import Settings
from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.tui.cli.output import EXIT_ERROR, emit_json, fail, jsonable, tasks_table
from agentdeck.tui.cli.root import Context, client_call, main, pass_ctx
from agentdeck.tui.table import format_table, when


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

    result = client_call(ctx, go)
    workflow = result["workflow"]
    if as_json:
        emit_json(
            {
                **jsonable(workflow),
                **(
                    {"tasks": [_task_json(t) for t in result["tasks"]]} if "tasks" in result else {}
                ),
            }
        )
    elif "tasks" in result:
        click.echo(f"workflow {workflow.id} {workflow.name}: {workflow.status.value}")
        click.echo(tasks_table(result["tasks"]))
    else:
        click.echo(workflow.id)
    if wait and workflow.status != WorkflowStatus.SUCCEEDED:
        sys.exit(EXIT_ERROR)


def _task_json(task: Any) -> dict[str, Any]:
    """A task as JSON data."""
    data: dict[str, Any] = jsonable(task)
    return data


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

    rows = client_call(ctx, go)
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


async def _holds_of(settings: Settings, task: Any) -> list[Any]:
    """The holds on ``task``'s capability while it is ready to start (none otherwise: a hold
    only stops new work). A Registry that cannot be read leaves them out: ``show`` is about
    the task, read from the Store."""
    from agentdeck.tui.holds import reader
    from agentdeck.tui.wiring import registry_only

    if task.status not in (TaskStatus.READY, TaskStatus.RETRYING):
        return []
    clock = SystemClock()
    try:
        async with registry_only(settings, clock) as registry:
            holds = await reader(registry, clock, settings.breakers).holds()
    except AgentdeckError:
        return []
    return [h for h in holds if h.capability == task.capability]


@main.command("show")
@click.argument("target")
@click.option("--events", is_flag=True, help="With a task id: its whole event history.")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="With a task id: print its states, progress and streamed output as they come, "
    "until it ends (Ctrl-C stops).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def show_cmd(ctx: Context, target: str, events: bool, follow: bool, as_json: bool) -> None:
    """Show a workflow (its tasks, states, attempts, outputs) or one task (WF/KEY)."""
    from agentdeck.core.models import Task

    if follow:
        if as_json:
            fail("--follow prints as things come; it does not go with --json")
        _follow(ctx, target)
        return

    async def go(client: Any) -> dict[str, Any]:
        found = await client.resolve(target)
        if isinstance(found, Task):
            found = await _with_output(ctx.settings, found)
            held = await _holds_of(ctx.settings, found)
            usage = await client.store.usage_totals("task", workflow_ids=[found.workflow_id])
            return {
                "task": found,
                "events": await client.history(found.id),
                "holds": held,
                "usage": next((u for u in usage if u.key == found.id), None),
            }
        tasks = await client.store.list_tasks(workflow_id=found.id, limit=1_000_000)
        usage = await client.store.usage_totals("workflow", workflow_ids=[found.id])
        return {"workflow": found, "tasks": tasks, "usage": usage[0] if usage else None}

    result = client_call(ctx, go)
    now = SystemClock().now()
    if as_json:
        if "task" in result:
            from agentdeck.tui.holds import hold_json

            result["holds"] = [hold_json(h, now) for h in result["holds"]]
        emit_json(result)
        return
    if "task" in result:
        from agentdeck.tui.holds import hold_line

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
            ("usage", usage_text(result["usage"])),
            *(("held", hold_line(h, now)) for h in result["holds"]),
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
    if wf.hold_reason:
        click.echo(f"held: {wf.hold_reason}")
    if wf.budget is not None or result["usage"] is not None:
        budget = ", ".join(f"{k} {v}" for k, v in wf.budget.to_dict().items()) if wf.budget else "-"
        click.echo(f"usage: {usage_text(result['usage'])}; budget: {budget}")
    click.echo(tasks_table(result["tasks"]))


def usage_text(total: Any) -> str:
    """``3 attempts, 12,034 in / 2,310 out tokens (cache 1,000 w / 80,000 r), $0.0412`` or -."""
    if total is None:
        return "-"
    return (
        f"{total.attempts} attempt(s), {total.input_tokens:,} in / {total.output_tokens:,} out "
        f"tokens (cache {total.cache_creation_input_tokens:,} w / "
        f"{total.cache_read_input_tokens:,} r), ${total.cost_usd:,.4f}"
        + (f" (+{total.unpriced} unpriced)" if total.unpriced else "")
    )


def _follow(ctx: Context, target: str) -> None:
    """``show WF/KEY --follow``; exits 1 when the task ends other than succeeded."""
    from agentdeck.core.models import Task
    from agentdeck.core.states import TaskStatus
    from agentdeck.tui.cli.follow import FollowPrinter, follow_task
    from agentdeck.tui.wiring import bus_only

    settings = ctx.settings
    shared = not settings.bus_url.startswith("memory:")
    if not shared:
        click.echo(
            "note: the bus is memory:// (it lives in the process running the node): states are "
            "followed from the Store, progress and streamed output are not",
            err=True,
        )

    async def go(client: Any) -> Task:
        found = await client.resolve(target)
        if not isinstance(found, Task):
            raise AgentdeckError(f"--follow takes a task (WF/KEY), not the workflow {target!r}")
        printer = FollowPrinter(lambda text: click.echo(text, nl=False))
        if not shared:
            return await follow_task(client.store, None, found.id, printer)
        async with bus_only(settings) as bus:
            return await follow_task(client.store, bus.subscribe_events, found.id, printer)

    task = client_call(ctx, go)
    if task.status != TaskStatus.SUCCEEDED:
        sys.exit(EXIT_ERROR)


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

    tasks = client_call(ctx, go)
    if as_json:
        emit_json([_task_json(t) for t in tasks])
    else:
        click.echo(tasks_table(tasks))
