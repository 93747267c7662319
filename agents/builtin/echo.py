"""``echo``: returns what it was given, so a workflow's plumbing can be seen end to end."""

from __future__ import annotations

from collections.abc import Mapping

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.core.models import JSON


def echo_output(ctx: TaskContext) -> dict[str, JSON]:
    """``{"input": ..., "upstream": ...}``: the task's input and its dependencies' outputs."""
    return {"input": ctx.input, "upstream": dict(ctx.upstream)}


def make(options: Mapping[str, JSON] | None = None) -> Handler:
    """An echo handler. It takes no options."""
    Options("echo", options).done()

    async def echo(ctx: TaskContext) -> JSON:
        return echo_output(ctx)

    return echo
