"""``agentdeck usage``: what the agents' attempts spent (tokens and USD), summed by the Store."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import click

from agentdeck.core.clock import SystemClock
from agentdeck.core.usage import USAGE_GROUPS
from agentdeck.tui.cli.output import emit_json, fail
from agentdeck.tui.cli.root import Context, client_call, main, pass_ctx
from agentdeck.tui.table import format_table

BY = (*USAGE_GROUPS, "label")
_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SINCE_FORMS = "a duration ago (30m, 12h, 7d) or a UTC date/time (2026-12-01, 2026-12-01T08:00)"


def parse_since(text: str, now: float) -> float:
    """``30m``/``12h``/``7d`` before ``now``, or an ISO date or date-time (UTC when it names no
    zone), as seconds since the epoch; ValueError naming the forms otherwise."""
    match = _AGO.fullmatch(text.strip())
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is not {SINCE_FORMS}") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def money(usd: float, unpriced: int) -> str:
    """``$1.2345``, marked ``+?`` when some attempts had no known cost (a lower bound)."""
    return f"${usd:,.4f}" + ("+?" if unpriced else "")


@main.command("usage")
@click.option(
    "--by",
    type=click.Choice(BY),
    default="workflow",
    show_default=True,
    help="What to sum by.",
)
@click.option("--since", default=None, metavar="WHEN", help=f"Only since WHEN: {SINCE_FORMS}.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def usage_cmd(ctx: Context, by: str, since: str | None, as_json: bool) -> None:
    """Tokens (input, output, cache) and cost in USD of the agents' attempts, per workflow,
    task, capability, model or label, as the Store recorded them with each attempt's result.
    A cost marked +? is a lower bound: some attempts had no known price."""
    start: float | None = None
    if since is not None:
        try:
            start = parse_since(since, SystemClock().now())
        except ValueError as exc:
            fail(str(exc))

    async def go(client: Any) -> Any:
        return await client.usage(by, since=start)

    totals = client_call(ctx, go)
    if as_json:
        emit_json(
            [
                {
                    by: t.key,
                    "attempts": t.attempts,
                    "input_tokens": t.input_tokens,
                    "output_tokens": t.output_tokens,
                    "cache_creation_input_tokens": t.cache_creation_input_tokens,
                    "cache_read_input_tokens": t.cache_read_input_tokens,
                    "cost_usd": round(t.cost_usd, 6),
                    "unpriced_attempts": t.unpriced,
                }
                for t in totals
            ]
        )
        return
    rows = [
        [
            t.key if t.key is not None else "-",
            t.attempts,
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            f"{t.cache_creation_input_tokens:,}",
            f"{t.cache_read_input_tokens:,}",
            money(t.cost_usd, t.unpriced),
        ]
        for t in totals
    ]
    if len(totals) > 1 and by != "label":  # a workflow counts under each of its labels
        whole = sum(totals[1:], totals[0])
        rows.append(
            [
                "(all)",
                whole.attempts,
                f"{whole.input_tokens:,}",
                f"{whole.output_tokens:,}",
                f"{whole.cache_creation_input_tokens:,}",
                f"{whole.cache_read_input_tokens:,}",
                money(whole.cost_usd, whole.unpriced),
            ]
        )
    if not rows:
        click.echo("no usage recorded" + (f" since {since}" if since else ""))
        return
    click.echo(
        format_table([by, "attempts", "input", "output", "cache write", "cache read", "cost"], rows)
    )
