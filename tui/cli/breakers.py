"""Circuit breakers: ``breaker list``; ``breaker trip | reset`` come from the actions table
(agentdeck.tui.cli.actions registers them in this group)."""

from __future__ import annotations

import click

from agentdeck.core.clock import SystemClock
from agentdeck.tui.cli.output import emit_json, run
from agentdeck.tui.cli.root import Context, main, pass_ctx
from agentdeck.tui.table import ago, format_table


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
