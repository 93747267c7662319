"""``chaos``: fails on purpose, to rehearse retries, breakers and incident handling.

It fails the first ``fail_first`` attempts of each task, then each attempt with probability
``fail_rate``; ``permanent`` makes its failures non-retryable. The task's input may override
any of the three (``{"fail_rate": 0.5}``). On success it answers like ``echo``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.builtin.echo import echo_output
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.core.errors import ConfigError, TaskFailed
from agentdeck.core.models import JSON


def make(options: Mapping[str, JSON] | None = None, *, rng: random.Random | None = None) -> Handler:
    """A chaos handler. Options: ``fail_rate`` (0..1, default 0), ``fail_first`` (default 0),
    ``permanent`` (default false). ``rng`` decides the coin flips (tests pass a seeded one)."""
    opts = Options("chaos", options)
    defaults: dict[str, JSON] = {
        "fail_rate": opts.number("fail_rate", 0.0, maximum=1.0),
        "fail_first": opts.integer("fail_first", 0),
        "permanent": opts.boolean("permanent", False),
    }
    opts.done()
    coin = rng or random.Random()

    async def chaos(ctx: TaskContext) -> JSON:
        settings = dict(defaults)
        if isinstance(ctx.input, Mapping):
            settings.update({k: ctx.input[k] for k in defaults if k in ctx.input})
        try:
            # The input's overrides go through the same checks as the options.
            checked = Options("chaos", settings)
            fail_rate = checked.number("fail_rate", maximum=1.0)
            fail_first = checked.integer("fail_first")
            permanent = checked.boolean("permanent")
        except ConfigError as exc:
            raise TaskFailed(
                f"{exc} (in the task input)", non_retryable=True, kind="bad_input"
            ) from None
        if ctx.attempt <= fail_first:
            reason = f"attempt {ctx.attempt} of the first {fail_first} that fail"
        elif coin.random() < fail_rate:
            reason = f"a failure drawn at rate {fail_rate:g}"
        else:
            return echo_output(ctx)
        raise TaskFailed(f"chaos: injected failure ({reason})", non_retryable=permanent)

    return chaos
