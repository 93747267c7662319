"""A standby runs on the limits its file holds when it takes the lease: it re-reads the file
(as the ``reload`` action and SIGHUP do) before its first round acts, so a reload the operator
made on the old leader is not lost in a failover. A file that does not load keeps the values
in force, says why once, and never stops the take-over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agentdeck.core.scheduler import Scheduler
from agentdeck.tui.reload import attach_reload, reload_limits
from tests.scenarios.test_reload import SIX, dispatched
from tests.unit.test_scheduler import Deck, deck  # noqa: F401 - the fixture

TWO = "[capability_limits.echo]\nmax_concurrency = 2\n"
FOUR = "[capability_limits.echo]\nmax_concurrency = 4\n"


@pytest.fixture
async def standby(deck: Deck, tmp_path: Path) -> AsyncIterator[Scheduler]:  # noqa: F811
    """node-2, started (like the leader, node-1) on a file limiting echo to 2 at a time, and
    standing by; node-1 leads with two of six echo tasks out."""
    config = tmp_path / "node-2.toml"
    config.write_text(TWO)
    node = Scheduler(deck.store, deck.bus, deck.registry, deck.clock, node="node-2")
    attach_reload(node, config)
    assert reload_limits(node, config)  # what a start reads
    deck.scheduler.reconfigure(dict(node.config.limits), {})
    await deck.submit(SIX)
    await deck.settle()
    assert await dispatched(deck) == 2
    assert await node.tick() is False and not node.is_leader
    yield node
    await node.stop()


async def fail_over(deck: Deck, standby: Scheduler) -> None:  # noqa: F811
    """The leader stalls past its lease; the standby's next round takes it."""
    deck.clock.advance(11)
    await standby.tick()
    assert standby.is_leader


async def test_a_standby_whose_file_changed_leads_on_the_new_limits(
    deck: Deck,  # noqa: F811
    standby: Scheduler,
    tmp_path: Path,
) -> None:
    """The operator raised the limit to 4 in the files and reloaded the leader only; the
    standby that takes over runs on 4 from its first round (two more go), and logs what
    changed."""
    (tmp_path / "node-2.toml").write_text(FOUR)
    with capture_logs() as logs:
        await fail_over(deck, standby)
    assert standby.limiter.limits["echo"].max_concurrency == 4
    changed = ["capability_limits.echo: max_concurrency=2 -> max_concurrency=4"]
    assert [e["changes"] for e in logs if e["event"] == "limits_reloaded"] == [changed]
    assert [e["changes"] for e in logs if e["event"] == "config_reread_on_lead"] == [changed]
    assert not [e for e in logs if e["log_level"] == "error"]
    assert await dispatched(deck) == 4  # the take-over round dispatched on the new limit


async def test_a_standby_whose_file_is_unchanged_leads_on_the_same_limits(
    deck: Deck,  # noqa: F811
    standby: Scheduler,
) -> None:
    """Nothing changed: the limit stays 2, no more go, and the log says nothing changed."""
    with capture_logs() as logs:
        await fail_over(deck, standby)
    assert standby.limiter.limits["echo"].max_concurrency == 2
    assert [e["changes"] for e in logs if e["event"] == "config_reread_on_lead"] == [[]]
    assert await dispatched(deck) == 2


async def test_a_bad_file_keeps_the_limits_says_why_once_and_the_lease_is_still_taken(
    deck: Deck,  # noqa: F811
    standby: Scheduler,
    tmp_path: Path,
) -> None:
    """A bad value in the standby's file: it still takes over, on the 2 it had; one error
    names the value and what is allowed, and a warning says it leads on the limits kept."""
    config = tmp_path / "node-2.toml"
    config.write_text("[capability_limits.echo]\nmax_concurrency = 0\n")
    with capture_logs() as logs:
        await fail_over(deck, standby)
    assert standby.limiter.limits["echo"].max_concurrency == 2
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["config_reload_failed"]
    assert "capability_limits.echo.max_concurrency" in errors[0]["error"]
    assert "greater than 0" in errors[0]["error"] and "(got 0)" in errors[0]["error"]
    assert str(config.absolute()) in errors[0]["error"]
    [kept] = [e for e in logs if e["event"] == "leading_on_kept_limits"]
    assert (kept["log_level"], kept["node"]) == ("warning", "node-2")
    assert await dispatched(deck) == 2


async def test_a_reload_that_fails_otherwise_never_stops_the_take_over(
    deck: Deck,  # noqa: F811
    standby: Scheduler,
) -> None:
    """Whatever the injected reload raises, the standby takes the lease on the limits it has
    and logs one error saying what went wrong."""

    def unreadable() -> list[str]:
        raise PermissionError("[Errno 13] Permission denied: '/etc/agentdeck/agentdeck.toml'")

    standby.reload_config = unreadable
    with capture_logs() as logs:
        await fail_over(deck, standby)
    assert standby.limiter.limits["echo"].max_concurrency == 2
    [error] = [e for e in logs if e["log_level"] == "error"]
    assert error["event"] == "config_reread_failed" and "Permission denied" in error["error"]


async def test_a_scheduler_without_a_file_takes_over_as_before(
    deck: Deck,  # noqa: F811
    standby: Scheduler,
) -> None:
    """No reload wired (a scheduler not started by the composition root): nothing is read."""
    standby.reload_config = None
    with capture_logs() as logs:
        await fail_over(deck, standby)
    assert not [e for e in logs if "reload" in e["event"] or "reread" in e["event"]]
    assert standby.limiter.limits["echo"].max_concurrency == 2
