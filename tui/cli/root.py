"""The ``agentdeck`` group: its options, the settings every command shares, and the three ways
it runs with no command (the control centre, ``--daemon``, ``config``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from agentdeck.core.clock import SystemClock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.logs import configure_logging
from agentdeck.core.settings import Settings
from agentdeck.tui.cli.output import EXIT_USAGE, emit_json, fail, run

R = TypeVar("R")


class Context:
    """What every command needs: the settings (loaded once, lazily, with CLI overrides)."""

    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The settings; a bad config ends the program with exit code 2."""
        if self._settings is None:
            try:
                self._settings = Settings.load(config_path=self.config)
            except AgentdeckError as exc:
                fail(str(exc), EXIT_USAGE)
            # Log lines go to stderr from the start: stdout is the command's output (ids,
            # --json) that scripts read. --daemon and agent configure it again, the same way.
            s = self._settings
            configure_logging(s.log_level, s.log_format, node=s.node)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


def client_call(ctx: Context, fn: Callable[[Any], Awaitable[R]]) -> R:
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
    from agentdeck.tui import compose

    settings = ctx.obj.settings
    if daemon:
        run(compose.run_daemon(settings, demo=demo, config=config))
        return
    sources = compose.control_centre(settings, demo=demo, scheduler=scheduler, config=config)
    # Imported here so that the daemon path and every other command never load Textual; a broken
    # import is an error, never a silent fall-back to another mode.
    from agentdeck.tui.run import run_app

    run_app(settings, sources, read_only=read_only)


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
