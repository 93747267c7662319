"""One command per operator action, from the actions table (``agentdeck.core.actions``).

Each queues its action for the scheduler leader and waits for the outcome. The row says the
command's name (the action), its help, its target's metavar (optional when the row has a
default target: ``agentdeck reload`` is ``reload leader``), and the group it lives in
(``breaker trip``); a row naming a group the command line does not have fails at import.
"""

from __future__ import annotations

from typing import Any

import click

from agentdeck.core.actions import ACTIONS, ActionSpec
from agentdeck.tui.cli.breakers import breaker_group
from agentdeck.tui.cli.output import EXIT_ERROR, emit_json
from agentdeck.tui.cli.root import Context, client_call, main, pass_ctx

#: The groups an action's command may live in, by the name the actions table uses.
GROUPS: dict[str, click.Group] = {"breaker": breaker_group}


def group_for(spec: ActionSpec) -> click.Group:
    """The group ``spec``'s command belongs in (the top level when it names none)."""
    if spec.group is None:
        return main
    if spec.group not in GROUPS:
        raise LookupError(
            f"action {spec.action.value!r} names CLI group {spec.group!r}; "
            f"known: {', '.join(sorted(GROUPS))}"
        )
    return GROUPS[spec.group]


def register(spec: ActionSpec) -> click.Command:
    """Add the command that queues ``spec``'s action and waits for it; return it."""
    action = spec.action

    def value_argument(f: Any) -> Any:
        # Only an action that takes a value besides its target (budget WF usd=10) has one.
        if spec.value is None:
            return f
        return click.argument("value", metavar="VALUE")(f)

    @group_for(spec).command(action.value, help=spec.help)
    # An action with a default target (reload: the leader) may be given none.
    @click.argument(
        "target",
        metavar=spec.metavar if spec.default_target is None else f"[{spec.metavar}]",
        required=spec.default_target is None,
        default=spec.default_target,
    )
    @value_argument
    @click.option("--no-wait", is_flag=True, help="Queue the command and return at once.")
    @click.option(
        "--timeout",
        default=10.0,
        show_default=True,
        help="Seconds to wait for the scheduler to carry it out.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_ctx
    def command(
        ctx: Context,
        target: str,
        no_wait: bool,
        timeout: float,
        as_json: bool,
        value: str | None = None,
    ) -> None:
        from agentdeck.core.models import CommandStatus

        async def go(client: Any) -> Any:
            return await client.command(action, target, value, wait=None if no_wait else timeout)

        result = client_call(ctx, go)
        if as_json:
            emit_json(result)
        elif result.status == CommandStatus.PENDING:
            click.echo(f"queued {action} {result.target} ({result.id})")
        else:
            click.echo(result.result)
        if result.status == CommandStatus.FAILED:
            click.echo(f"error: {result.result}", err=True)
            raise SystemExit(EXIT_ERROR)

    return command


COMMANDS = {spec.action: register(spec) for spec in ACTIONS.values()}
"""The command of every action."""
