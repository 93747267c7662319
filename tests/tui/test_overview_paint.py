"""The overview stays cheap four times a second: it repaints only what changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.widgets import Static

from agentdeck.core.models import AgentState
from agentdeck.tui.app import AgentdeckApp
from tests.tui.conftest import World
from tests.tui.test_app import SIZE, ready

pytestmark = pytest.mark.tui


async def test_the_overview_repaints_only_the_cards_whose_text_changed(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Four times a second the overview reads everything again, but a card showing the same
    text is left alone, and a changed card is repainted without laying out the screen (the
    grid sizes the cards, not their text)."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        updates: list[tuple[str, bool]] = []
        for card in app.screen.query(".card, #rates").results(Static):
            spy_on_updates(card, updates)

        await app.refresh_now()
        assert updates == []

        await world.registry.heartbeat("echo-1", 3600, in_flight=7, state=AgentState.UP)
        await app.refresh_now()
        await pilot.pause()
        assert updates == [("agents", False)]
        busy = sum(a.in_flight for a in await world.registry.agents())
        assert f"busy      {busy:>6} / 12 slots" in str(app.screen.query_one("#agents").render())


def spy_on_updates(widget: Static, calls: list[tuple[str, bool]]) -> None:
    """Record ``(id, layout)`` for every ``update`` of ``widget``, then update it."""
    real = widget.update

    def update(content: Any = "", *, layout: bool = True) -> None:
        calls.append((widget.id or "", layout))
        real(content, layout=layout)

    widget.update = update  # type: ignore[method-assign]
