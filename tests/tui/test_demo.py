"""`agentdeck --demo` shows an AI fleet: its simulated Claude agent runs the Claude example, and
the overview's spend line and cost sparkline fill from the usage it reports (no network, no
key). The demo node runs on the system clock (the product's own wiring, nothing stubbed), so
this test shortens the simulated calls and the feed's pace instead of faking time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import Sparkline, Static

from agentdeck.core.settings import Settings
from agentdeck.tui import demo
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.compose import control_centre
from agentdeck.tui.screens.overview import OverviewScreen

pytestmark = pytest.mark.tui


async def test_the_demo_overview_shows_what_the_ai_fleet_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a few rounds of the demo the overview says a non-zero spend in the last minute
    and its cost sparkline has risen; the spending is the simulated agent's, in the Store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "SIMULATED_SECONDS", (0.05, 0.1))
    monkeypatch.setattr(demo, "FEED_INTERVAL", 0.1)
    settings = Settings.load(config_path=None, home=tmp_path)
    app = AgentdeckApp(control_centre(settings, demo=True), refresh_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await asyncio.wait_for(app.connected.wait(), 20)
        assert isinstance(app.screen, OverviewScreen)
        rates = app.screen.query_one("#rates", Static)
        async with asyncio.timeout(30):
            while "spent $0.0000 " in str(rates.render()) or "spent" not in str(rates.render()):
                await asyncio.sleep(0.1)
                await app.refresh_now()
        await pilot.pause()
        assert sum(app.screen.query_one("#cost-rate", Sparkline).data) > 0
        assert app.sources is not None
        totals = await app.sources.store.usage_totals("model")
        assert [t.key for t in totals] == ["claude-sonnet-4-5"]
        assert (totals[0].cost_usd or 0) > 0
