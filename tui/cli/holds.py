"""``agentdeck holds``: the one table of holds (DESIGN §9), the same as the capabilities screen
shows: every capability that may not start new work now, why, and until when."""

from __future__ import annotations

import click

from agentdeck.core.clock import SystemClock
from agentdeck.tui.cli.output import emit_json, run
from agentdeck.tui.cli.root import Context, main, pass_ctx


@main.command("holds")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def holds_cmd(ctx: Context, as_json: bool) -> None:
    """Capabilities on hold: paused by an operator (until resumed) or rate-limited by their
    provider (until the time it gave), with the reason and the time left."""
    from agentdeck.core.holds import CapabilityHolds, Hold
    from agentdeck.tui.holds import hold_json, holds_table
    from agentdeck.tui.wiring import registry_only

    clock = SystemClock()

    async def go() -> list[Hold]:
        async with registry_only(ctx.settings, clock) as registry:
            return await CapabilityHolds(registry, clock, refresh=0).holds()

    holds = run(go())
    now = clock.now()
    if as_json:
        emit_json([hold_json(h, now) for h in holds])
    else:
        click.echo(holds_table(holds, now))
