"""Capability limits and label budgets reloaded without a restart: the config file changes, the
daemon's reload (SIGHUP) re-reads it, and the leader enforces the new values from its next
round; a file that does not load changes nothing and says why once."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from agentdeck.core.models import Budget
from agentdeck.core.states import TaskStatus as T
from agentdeck.tui.reload import reload_limits
from tests.unit.test_scheduler import Deck, deck  # noqa: F401 - the fixture

TASKS = ", ".join(f"{{key: t{i}, capability: echo}}" for i in range(6))
SIX = f"name: six\nlabels: {{team: search}}\ntasks: [{TASKS}]\n"


async def dispatched(deck: Deck) -> int:  # noqa: F811
    """How many echo attempts are out."""
    counts = await deck.store.count_by_capability([T.READY, T.DISPATCHED])
    return counts["echo"].get(T.DISPATCHED, 0)


async def test_a_reload_enforces_the_new_limit_and_a_bad_file_keeps_the_old(
    deck: Deck,  # noqa: F811
    tmp_path: Path,
) -> None:
    """max_concurrency 2 from the file after a reload: two of six go; a bad value is refused
    with one error naming it, the 2 stays; raised to 4, two more go."""
    config = tmp_path / "agentdeck.toml"
    config.write_text(
        '[capability_limits.echo]\nmax_concurrency = 2\n[budgets."team=search"]\nusd = 5\n'
    )
    assert reload_limits(deck.scheduler, config) == [
        "capability_limits.echo: - -> max_concurrency=2",
        'budgets."team=search": - -> usd=5.0',
    ]
    assert deck.scheduler.config.label_budgets == {"team=search": Budget(usd=5.0)}
    await deck.submit(SIX)
    await deck.settle()
    assert await dispatched(deck) == 2

    config.write_text("[capability_limits.echo]\nmax_concurrency = 0\n")
    with capture_logs() as logs:
        assert reload_limits(deck.scheduler, config) is None
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["config_reload_failed"]
    assert "capability_limits.echo.max_concurrency" in errors[0]["error"]
    assert "greater than 0" in errors[0]["error"] and "(got 0)" in errors[0]["error"]
    assert str(config.absolute()) in errors[0]["error"]
    assert deck.scheduler.limiter.limits["echo"].max_concurrency == 2
    await deck.settle()
    assert await dispatched(deck) == 2

    config.write_text("[capability_limits.echo]\nmax_concurrency = 4\n")
    with capture_logs() as logs:
        changes = reload_limits(deck.scheduler, config)
    assert changes == [
        "capability_limits.echo: max_concurrency=2 -> max_concurrency=4",
        'budgets."team=search": usd=5.0 -> -',
    ]
    assert [e["changes"] for e in logs if e["event"] == "limits_reloaded"] == [changes]
    await deck.settle()
    assert await dispatched(deck) == 4
    assert reload_limits(deck.scheduler, config) == []  # the same file again: nothing changed


async def test_a_lowered_label_budget_holds_its_workflows_at_the_next_look(
    deck: Deck,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A label's budget lowered below what it spent holds its running workflow once reloaded."""
    wf = await deck.submit(SIX)
    await deck.settle()
    taken = await deck.take("echo", 1)
    await deck.report(
        taken[0][0],
        "succeeded",
        output="ok",
        usage={"model": "m", "input_tokens": 600, "output_tokens": 400, "cost_usd": 0.5},
    )
    await deck.settle()
    assert (await deck.store.get_workflow(wf)).status.value == "running"
    config = tmp_path / "agentdeck.toml"
    config.write_text('[budgets."team=search"]\ntokens = 500\n')
    assert reload_limits(deck.scheduler, config)
    await deck.settle()
    held = await deck.store.get_workflow(wf)
    assert held.status.value == "paused"
    assert "label team=search" in (held.hold_reason or "")
