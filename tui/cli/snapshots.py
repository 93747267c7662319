"""Snapshots of the whole state in the blob store: ``snapshot create | list | restore``."""

from __future__ import annotations

import click

from agentdeck.core.clock import SystemClock
from agentdeck.tui.cli.output import emit_json, run
from agentdeck.tui.cli.root import Context, main, pass_ctx
from agentdeck.tui.table import format_table, when


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
