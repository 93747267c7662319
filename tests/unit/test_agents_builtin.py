"""The small built-in agents (echo, sleep, chaos, python) and building them by kind."""

from __future__ import annotations

import asyncio
import random
import textwrap
from pathlib import Path

import pytest

from agentdeck.agents.builtin import BUILTINS, build, chaos, echo, sleep
from agentdeck.agents.builtin import python as python_agent
from agentdeck.agents.testing import make_context
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConfigError, TaskFailed

# --------------------------------------------------------------------------------- build


def test_build_knows_every_kind() -> None:
    """Every built-in kind builds with its defaults, except those with required options."""
    assert set(BUILTINS) == {
        *("echo", "sleep", "chaos", "shell", "http", "python", "claude", "anthropic")
    }
    for kind in ("echo", "sleep", "chaos"):
        assert callable(build(kind))


def test_build_unknown_kind_lists_the_known_ones() -> None:
    """An unknown kind is a ConfigError naming it and every known kind."""
    with pytest.raises(ConfigError, match=r"unknown agent kind 'ecko'.*echo, sleep, chaos"):
        build("ecko")


def test_unknown_option_is_refused_with_the_allowed_ones() -> None:
    """A mistyped option is not ignored: the error names it and lists the allowed options."""
    with pytest.raises(ConfigError, match=r"sleep agent: unknown option\(s\) 'secs'.*seconds"):
        build("sleep", {"secs": 2})


def test_required_option_missing_is_named() -> None:
    """A missing required option is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="shell agent: option 'argv' is required"):
        build("shell")


def test_options_must_be_a_table() -> None:
    """Options that are not a mapping are refused with their type."""
    with pytest.raises(ConfigError, match=r"options must be a table.*got list"):
        echo.make([1])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- echo


async def test_echo_returns_input_and_upstream() -> None:
    """echo answers with the task's input and the outputs of the tasks it needs."""
    handler = echo.make({})
    ctx = make_context({"n": 1}, upstream={"a": {"x": 2}})
    assert await handler(ctx) == {"input": {"n": 1}, "upstream": {"a": {"x": 2}}}


def test_echo_takes_no_options() -> None:
    """echo refuses any option."""
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'x' \(allowed: none\)"):
        echo.make({"x": 1})


# --------------------------------------------------------------------------------- sleep


async def test_sleep_waits_on_its_clock_for_the_input_seconds(clock: FakeClock) -> None:
    """sleep waits the input's seconds on the injected clock, then says how long."""
    handler = sleep.make({"seconds": 9}, clock=clock)
    task = asyncio.ensure_future(handler(make_context({"seconds": 2})))
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(2)
    assert await task == {"slept": 2.0}


async def test_sleep_falls_back_to_the_option(clock: FakeClock) -> None:
    """Without seconds in the input, sleep uses its ``seconds`` option."""
    handler = sleep.make({"seconds": 0.5}, clock=clock)
    task = asyncio.ensure_future(handler(make_context(None)))
    await asyncio.sleep(0)
    clock.advance(0.5)
    assert await task == {"slept": 0.5}


async def test_sleep_bad_input_fails_permanently(clock: FakeClock) -> None:
    """A negative or non-number input is a non-retryable failure naming the value."""
    handler = sleep.make({}, clock=clock)
    for bad in (-1, "soon", True):
        with pytest.raises(TaskFailed, match="must be a number >= 0") as caught:
            await handler(make_context({"seconds": bad}))
        assert caught.value.non_retryable


@pytest.mark.parametrize("value", [-1, "2", float("nan"), None])
def test_sleep_bad_option_names_option_and_value(value: object) -> None:
    """A bad ``seconds`` option is a ConfigError naming the option, value and allowed form."""
    with pytest.raises(ConfigError, match=r"option 'seconds' must be a number >= 0, got"):
        sleep.make({"seconds": value})


# --------------------------------------------------------------------------------- chaos


async def test_chaos_fails_the_first_attempts_then_echoes() -> None:
    """fail_first N fails attempts 1..N (retryable) and succeeds like echo afterwards."""
    handler = chaos.make({"fail_first": 2})
    for attempt in (1, 2):
        with pytest.raises(TaskFailed, match="injected failure") as caught:
            await handler(make_context({"a": 1}, attempt=attempt))
        assert not caught.value.non_retryable
    assert await handler(make_context({"a": 1}, attempt=3)) == {"input": {"a": 1}, "upstream": {}}


async def test_chaos_permanent_failures_are_not_retryable() -> None:
    """With ``permanent`` the injected failure says not to retry."""
    handler = chaos.make({"fail_rate": 1.0, "permanent": True})
    with pytest.raises(TaskFailed) as caught:
        await handler(make_context())
    assert caught.value.non_retryable
    assert caught.value.kind == "permanent"


async def test_chaos_fails_at_its_rate_with_the_injected_rng() -> None:
    """fail_rate draws from the injected Random: a seeded run fails about that share."""
    handler = chaos.make({"fail_rate": 0.3}, rng=random.Random(7))
    failures = 0
    for _ in range(1000):
        try:
            await handler(make_context())
        except TaskFailed:
            failures += 1
    assert 250 < failures < 350


async def test_chaos_input_overrides_options() -> None:
    """The task's input may set fail_rate, fail_first and permanent for that task."""
    handler = chaos.make({"fail_rate": 1.0})
    assert await handler(make_context({"fail_rate": 0})) == {
        "input": {"fail_rate": 0},
        "upstream": {},
    }
    with pytest.raises(TaskFailed, match="option 'fail_rate' must be a number >= 0 and <= 1"):
        await handler(make_context({"fail_rate": 2}))


def test_chaos_rejects_a_rate_above_one() -> None:
    """fail_rate outside 0..1 is a ConfigError naming the allowed range."""
    with pytest.raises(ConfigError, match=r"'fail_rate' must be a number >= 0 and <= 1, got 1.5"):
        chaos.make({"fail_rate": 1.5})


def test_chaos_rejects_a_non_boolean_permanent() -> None:
    """permanent must be true or false, not a string that looks like one."""
    with pytest.raises(ConfigError, match="'permanent' must be true or false, got 'yes'"):
        chaos.make({"permanent": "yes"})


# -------------------------------------------------------------------------------- python


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module of user functions, sync and async."""
    name = f"user_agents_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import threading

            def words(ctx):
                words = len(ctx.input["text"].split())
                return {"words": words, "thread": threading.current_thread().name}

            async def shout(text):
                return text.upper()

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


async def test_python_runs_a_sync_function_in_a_thread(user_module: str) -> None:
    """A plain function gets the context and runs off the event loop thread."""
    handler = python_agent.make({"callable": f"{user_module}:words"})
    output = await handler(make_context({"text": "a b c"}))
    assert output["words"] == 3
    assert output["thread"] != "MainThread"


async def test_python_passes_only_the_input_when_asked(user_module: str) -> None:
    """With ``pass: input`` an async function gets the input itself, dotted path accepted."""
    handler = python_agent.make({"callable": f"{user_module}.shout", "pass": "input"})
    assert await handler(make_context("hey")) == "HEY"


def test_python_missing_callable_is_a_config_error(user_module: str) -> None:
    """A missing attribute is caught when the agent is built, naming module and attribute."""
    with pytest.raises(ConfigError, match=f"module '{user_module}' has no attribute 'nope'"):
        python_agent.make({"callable": f"{user_module}:nope"})


def test_python_bad_pass_option_lists_choices(user_module: str) -> None:
    """``pass`` accepts only context or input."""
    with pytest.raises(ConfigError, match="'pass' must be one of 'context', 'input', got 'ctx'"):
        python_agent.make({"callable": f"{user_module}:words", "pass": "ctx"})
