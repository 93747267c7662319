"""``sleep``: waits a while and says how long, for load tests and demos of long tasks.

The time comes from the task's input (``{"seconds": 2.5}``) or else the ``seconds`` option.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.core.clock import Clock, SystemClock
from agentdeck.core.errors import TaskFailed
from agentdeck.core.models import JSON


def make(options: Mapping[str, JSON] | None = None, *, clock: Clock | None = None) -> Handler:
    """A sleep handler. Options: ``seconds`` (default 1.0) when the input names none.

    ``clock`` is what it sleeps on (tests pass a FakeClock).
    """
    opts = Options("sleep", options)
    default = opts.number("seconds", 1.0)
    opts.done()
    waiter = clock or SystemClock()

    async def sleep(ctx: TaskContext) -> JSON:
        seconds: object = default
        if isinstance(ctx.input, Mapping) and "seconds" in ctx.input:
            seconds = ctx.input["seconds"]
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            # Bad input stays bad on every attempt: retrying cannot help.
            raise TaskFailed(
                f"sleep: input 'seconds' must be a number >= 0, got {seconds!r}",
                non_retryable=True,
                kind="bad_input",
            )
        await waiter.sleep(float(seconds))
        return {"slept": float(seconds)}

    return sleep
