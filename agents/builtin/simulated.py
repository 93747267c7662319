"""``simulated``: a stand-in for a model-calling agent, for the demo only. No network, no key.

It answers a ``claude`` task (``{"prompt": "..."}``, the template filled from the upstream
outputs as the real kind does) after a short made-up wait, with an output shaped like the
``claude`` kind's (``result``, ``session_id``, ``num_turns``, ``model``) whose text says
``[simulated]`` and whose ``simulated`` field is true. It reports its usage the way a real
agent does, through ``ctx.usage()``: input tokens from the prompt's length, cache reads and
output tokens drawn in a real-looking range, the model's name, and the cost from
:mod:`agents.prices`, so the ``spent`` columns, ``agentdeck usage`` and the overview's cost
sparkline show an AI fleet at work.

It is not in :data:`agents.builtin.BUILTINS` (no ``kind = "simulated"`` in a config): only
``agentdeck --demo`` runs it (:mod:`agentdeck.tui.demo`), so made-up spending can never mix
with a real fleet's.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.builtin.claude import prompt_of
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.prices import price_of
from agentdeck.core.clock import Clock, SystemClock
from agentdeck.core.errors import ConfigError
from agentdeck.core.models import JSON

MODEL = "claude-sonnet-4-5"
"""The model it says it ran (priced in :data:`agents.prices.PRICES`)."""
CHARS_PER_TOKEN = 4
"""Roughly what one token of English prose holds."""


def make(
    options: Mapping[str, JSON] | None = None,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> Handler:
    """A simulated handler. Options: ``model`` (a priced one, default :data:`MODEL`),
    ``min_seconds`` and ``max_seconds`` (how long a call takes, drawn between them; default 1
    and 4). ``clock`` is what it waits on and ``rng`` what it draws from (tests pass a
    FakeClock and a seeded one)."""
    opts = Options("simulated", options)
    model = opts.string("model", MODEL)
    least = opts.number("min_seconds", 1.0)
    most = opts.number("max_seconds", 4.0)
    opts.done()
    price = price_of(model)
    if price is None:
        raise ConfigError(
            f"simulated: option 'model' must be a model agents/prices.py prices, got {model!r}"
        )
    if most < least:
        raise ConfigError(
            f"simulated: option 'max_seconds' must be at least min_seconds ({least:g}), "
            f"got {most:g}"
        )
    waiter = clock or SystemClock()
    coin = rng or random.Random()

    async def simulated(ctx: TaskContext) -> JSON:
        prompt = prompt_of(ctx)
        ctx.progress(message=f"session started ({model}, simulated)")
        await waiter.sleep(coin.uniform(least, most))
        tokens = {
            "input_tokens": 40 + len(prompt) // CHARS_PER_TOKEN,
            "output_tokens": coin.randint(150, 900),
            "cache_creation_input_tokens": coin.choice((0, 0, 0, coin.randint(1_000, 4_000))),
            "cache_read_input_tokens": coin.randint(8_000, 24_000),
        }
        ctx.usage(**tokens, cost_usd=price.cost(**tokens), model=model)
        text = f"[simulated] {model} would answer: {prompt[:80]}"
        ctx.emit(text)
        return {
            "result": text,
            "session_id": f"simulated-{ctx.task_id}-{ctx.attempt}",
            "num_turns": coin.randint(1, 6),
            "subtype": "success",
            "is_error": False,
            "model": model,
            "simulated": True,
        }

    return simulated
