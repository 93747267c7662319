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
    """Capabilities on hold: paused, rate-limited or behind an open breaker.

    Each with its reason and the time left: paused by an operator (until resumed),
    rate-limited by its provider (until the time it gave), behind an open circuit breaker
    (until it half-opens after its cool-down, or until reset when tripped by hand) or a
    half-open one (until a trial succeeds)."""
    from agentdeck.core.holds import Hold
    from agentdeck.tui.holds import hold_json, holds_table, reader
    from agentdeck.tui.wiring import registry_only

    clock = SystemClock()

    async def go() -> list[Hold]:
        async with registry_only(ctx.settings, clock) as registry:
            return await reader(registry, clock, ctx.settings.breakers).holds()

    holds = run(go())
    now = clock.now()
    if as_json:
        emit_json([hold_json(h, now) for h in holds])
    else:
        click.echo(holds_table(holds, now))
