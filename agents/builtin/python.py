"""``python``: runs a Python function named by its dotted path, sync or async.

``{"callable": "my.module:summarise"}`` calls ``summarise(ctx)`` with the
:class:`~agents.context.TaskContext`; with ``"pass": "input"`` it calls ``summarise(input)``,
so plain functions written without agentdeck in mind work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.decorator import load_callable, to_async
from agentdeck.core.models import JSON


def make(options: Mapping[str, JSON] | None = None) -> Handler:
    """A python handler. Options: ``callable`` (required, ``"pkg.mod:func"``), ``pass``
    (``"context"``, the default, or ``"input"``). The callable is imported now, so a typo is a
    ConfigError at start rather than a failed task."""
    opts = Options("python", options)
    path = opts.string("callable")
    passing = opts.choice("pass", ("context", "input"), "context")
    opts.done()
    func = to_async(load_callable(path))

    async def python(ctx: TaskContext) -> JSON:
        return await func(ctx.input if passing == "input" else ctx)

    return python
