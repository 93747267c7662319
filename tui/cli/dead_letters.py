"""Dead letters: the messages the bus gave up on (``requeue`` puts one back)."""

from __future__ import annotations

from typing import Any

import click

from agentdeck.core.clock import SystemClock
from agentdeck.tui.cli.output import emit_json, run
from agentdeck.tui.cli.root import Context, main, pass_ctx
from agentdeck.tui.table import format_table, when


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
