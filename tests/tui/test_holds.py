"""Holds shown the same way everywhere: the capabilities screen lists each hold's kind, reason
and time left; a held task's page says why it waits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.widgets import Static

from agentdeck.core.holds import CapabilityHolds, Hold
from agentdeck.core.ports import BreakerRecord
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.holds import hold_json, hold_line, holds_table, left
from agentdeck.tui.screens.capabilities import CapabilitiesScreen
from agentdeck.tui.screens.tasks import TaskScreen
from tests.tui.conftest import WF_RUNNING, World
from tests.tui.test_app import SIZE, ready, settle, table

pytestmark = pytest.mark.tui
NOW = 1_700_000_000.0


def test_time_left_reads_at_a_glance() -> None:
    """Seconds, minutes and seconds, hours and minutes; a pause lasts until resumed, a
    tripped breaker until reset."""
    limited = Hold("llm", "rate_limited", "429", until=NOW + 3725, since=NOW - 5)
    assert [left(Hold("x", "rate_limited", "r", until=NOW + s), NOW) for s in (7, 185)] == [
        "7s",
        "3m05s",
    ]
    assert left(limited, NOW) == "1h02m"
    assert left(Hold("x", "paused", "paused by ann"), NOW) == "until resumed"
    assert left(Hold("x", "rate_limited", "r", until=NOW - 3), NOW) == "0s"
    tripped = Hold("x", "breaker", "tripped by ann", ends="until reset")
    assert left(tripped, NOW) == "until reset"
    assert hold_line(tripped, NOW) == "x breaker: tripped by ann (until reset)"
    assert hold_json(tripped, NOW)["ends"] == "until reset"
    assert hold_json(limited, NOW)["ends"] is None
    assert hold_line(limited, NOW) == (
        "llm rate_limited: 429 (until 2023-11-14 23:15:25, 1h02m left)"
    )
    assert hold_json(limited, NOW)["left_seconds"] == 3725
    lines = holds_table([limited], NOW).splitlines()
    assert lines[0].split() == ["CAPABILITY", "KIND", "REASON", "SINCE", "UNTIL", "LEFT"]
    assert lines[1].endswith("1h02m")


async def _hold_echo_and_limit_chaos(world: World) -> None:
    holds = CapabilityHolds(world.registry, world.clock, refresh=0)
    await holds.set("echo", paused=True, actor="ann@ops")
    await holds.rate_limit("chaos", world.clock.now() + 90, "429 from the provider")


async def test_the_capabilities_screen_lists_the_holds(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Each held capability's state is its hold's kind; under the table, the holds with their
    reason and time left: an open breaker's, then a pause and a rate limit (none held: no
    holds section)."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("7")
        await settle(pilot)
        assert isinstance(app.screen, CapabilitiesScreen)
        shown = app.screen.query_one("#holds", Static)
        lines = str(shown.render()).splitlines()
        # (at 80 columns "until" gives way to the same end in "left")
        assert lines[1].split() == ["capability", "kind", "reason", "left"]
        assert lines[2].split()[:2] == ["chaos", "breaker"]  # the world's open breaker
        assert "5 failures in a row (threshold 5)" in lines[2] and len(lines) == 3
        await world.registry.put_breaker(
            BreakerRecord("capability:chaos", "closed", {}, 2), expected_version=1
        )
        await app.refresh_now()
        await pilot.pause()
        assert not shown.display
        await _hold_echo_and_limit_chaos(world)
        await app.refresh_now()
        await pilot.pause()
        states = {key: str(table(app).get_row(key)[1]) for key in table(app).keys}
        assert states == {"chaos": "rate_limited", "echo": "paused", "sleep": "active"}
        assert shown.display
        lines = str(shown.render()).splitlines()
        assert lines[2].startswith("chaos") and "429 from the provider" in lines[2]
        assert lines[2].rstrip().endswith("1m30s")
        assert "paused by ann@ops" in lines[3] and lines[3].rstrip().endswith("until resumed")


async def test_a_held_tasks_page_says_why_it_waits(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """A ready task of a paused capability shows the hold, as `agentdeck show` does."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await _hold_echo_and_limit_chaos(world)
        await app.drill(TaskScreen(f"{WF_RUNNING}/p1"))
        await pilot.pause()
        page = str(app.screen.query_one("#task-text", Static).render())
        assert "held echo paused: paused by ann@ops (until resumed)" in page
