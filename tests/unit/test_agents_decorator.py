"""Declaring agents with @agent and loading callables by dotted path."""

from __future__ import annotations

import threading

import pytest

from agentdeck.agents.decorator import AGENTS, AgentDef, agent, import_agents, load_callable
from agentdeck.agents.testing import make_context
from agentdeck.core.errors import ConfigError


async def test_agent_records_an_async_function_unchanged() -> None:
    """@agent records the capability and concurrency and returns the function itself."""
    found: dict[str, AgentDef] = {}

    @agent("summarise", concurrency=4, into=found)
    async def summarise(ctx: object) -> str:
        return "ok"

    assert summarise.__name__ == "summarise"
    spec = found["summarise"]
    assert (spec.capability, spec.concurrency, spec.func) == ("summarise", 4, summarise)
    assert await spec.handler(make_context()) == "ok"


async def test_agent_runs_a_sync_function_in_a_thread() -> None:
    """A plain ``def`` handler runs in a worker thread, not on the event loop's thread."""
    found: dict[str, AgentDef] = {}

    @agent("count", into=found)
    def count(ctx: object) -> str:
        return threading.current_thread().name

    assert await found["count"].handler(make_context()) != threading.current_thread().name


def test_agent_defaults_to_the_module_collection() -> None:
    """Without ``into`` the agent lands in the module-level AGENTS."""

    @agent("decorator-test.default")
    def handler(ctx: object) -> None:
        return None

    try:
        assert AGENTS["decorator-test.default"].func is handler
    finally:
        del AGENTS["decorator-test.default"]


def test_two_functions_for_one_capability_clash() -> None:
    """A second function for the same capability is a ConfigError naming both."""
    found: dict[str, AgentDef] = {}

    @agent("x", into=found)
    def first(ctx: object) -> None:
        return None

    with pytest.raises(ConfigError, match=r"served by both .*first and .*second"):

        @agent("x", into=found)
        def second(ctx: object) -> None:
            return None


@pytest.mark.parametrize("capability", ["Bad Name", "", "a/b"])
def test_bad_capability_names_are_refused(capability: str) -> None:
    """A capability must match the queue-safe name pattern."""
    with pytest.raises(ConfigError, match=r"capability .* is not allowed; use 1 to 100"):
        agent(capability)


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_bad_concurrency_is_refused(concurrency: object) -> None:
    """Concurrency must be a whole number of at least 1."""
    with pytest.raises(ConfigError, match="concurrency must be a whole number >= 1"):
        agent("ok", concurrency=concurrency)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["json:dumps", "json.dumps", "os.path:join"])
def test_load_callable_accepts_both_forms(path: str) -> None:
    """Both ``module:attr`` and ``module.attr`` name a callable."""
    assert callable(load_callable(path))


def test_load_callable_missing_module() -> None:
    """An unknown module is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot import module 'no_such_mod_xyz'"):
        load_callable("no_such_mod_xyz:f")


def test_load_callable_missing_attribute() -> None:
    """An unknown attribute is a ConfigError naming module and attribute."""
    with pytest.raises(ConfigError, match="module 'json' has no attribute 'nope'"):
        load_callable("json:nope")


def test_load_callable_not_callable() -> None:
    """An attribute that cannot be called is refused with its type."""
    with pytest.raises(ConfigError, match="'math:pi' is a float, not a function"):
        load_callable("math:pi")


@pytest.mark.parametrize("path", ["", "json", "json:", ":f", "a b:c", "json..dumps"])
def test_load_callable_malformed_path(path: str) -> None:
    """A path that is not ``module:function`` says which forms are allowed."""
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        load_callable(path)


def test_import_agents_reports_a_missing_module() -> None:
    """Importing an agents module that does not exist is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot import module 'no_such_agents_mod'"):
        import_agents(["no_such_agents_mod"])
