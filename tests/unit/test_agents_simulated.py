"""The demo's simulated AI agent: claude-shaped answers marked simulated, real-shaped usage
priced by agents/prices.py, reported through ctx.usage; demo only (not a configurable kind)."""

from __future__ import annotations

import asyncio
import random

import pytest

from agentdeck.agents.builtin import BUILTINS, simulated
from agentdeck.agents.prices import price_of
from agentdeck.agents.testing import RecordingFeed, make_context
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConfigError, TaskFailed


async def test_it_answers_after_a_drawn_wait_and_reports_priced_usage() -> None:
    """Nothing before the wait is over; then an answer marked simulated, and one usage report
    with the model's price applied to its tokens."""
    clock = FakeClock()
    handler = simulated.make(
        {"min_seconds": 2, "max_seconds": 3}, clock=clock, rng=random.Random(7)
    )
    feed = RecordingFeed()
    ctx = make_context(
        {"prompt": "Review this. The triage said: {triage.result}"},
        upstream={"triage": {"result": "two files"}},
        feed=feed,
    )
    call = asyncio.ensure_future(handler(ctx))
    await asyncio.sleep(0)  # (it starts waiting)
    clock.advance(1.9)
    await asyncio.sleep(0)
    assert not call.done() and feed.usage is None
    clock.advance(1.2)
    output = await asyncio.wait_for(call, 5)
    assert isinstance(output, dict) and output["simulated"] is True
    assert output["model"] == simulated.MODEL and output["is_error"] is False
    assert str(output["result"]).startswith("[simulated] claude-sonnet-4-5 would answer: Review")
    assert "two files" in str(output["result"])  # the template filled like the claude kind's
    usage = feed.usage
    assert usage is not None and usage.model == "claude-sonnet-4-5"
    assert usage.input_tokens == 40 + len("Review this. The triage said: two files") // 4
    assert 150 <= usage.output_tokens <= 900 and 8_000 <= usage.cache_read_input_tokens <= 24_000
    price = price_of("claude-sonnet-4-5")
    assert price is not None
    expected = price.cost(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
    )
    assert usage.cost_usd == pytest.approx(expected) and expected > 0.001
    assert feed.emitted == [output["result"]]


async def test_a_task_without_a_prompt_fails_as_the_claude_kind_does() -> None:
    """The same bad-input failure as a real claude agent's, not a made-up answer."""
    with pytest.raises(TaskFailed, match='must be an object with a "prompt" string'):
        await simulated.make({"min_seconds": 0, "max_seconds": 0})(make_context({"x": 1}))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "gpt-unknown"}, "'model' must be a model agents/prices.py prices"),
        ({"min_seconds": 3, "max_seconds": 1}, "'max_seconds' must be at least min_seconds"),
        ({"min_seconds": -1}, "min_seconds"),
        ({"temperature": 1}, "temperature"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], message: str) -> None:
    """Each bad option is one ConfigError naming it."""
    with pytest.raises(ConfigError, match=message):
        simulated.make(options)  # type: ignore[arg-type]


def test_no_config_can_run_it() -> None:
    """Only the demo wires it: it is not a kind a config file may name."""
    assert "simulated" not in BUILTINS
