"""The overview stays cheap four times a second: it repaints only what changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.widgets import Static

from agentdeck.core.messages import Event
from agentdeck.core.models import AgentState
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.queue_counts import RECOUNT_SECONDS
from agentdeck.tui.widgets.line_card import LineCard
from tests.tui.conftest import WF_RUNNING, World
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


async def test_a_changed_count_repaints_only_its_line(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """The cards are drawn as a Static draws them, but a card whose busy count moved asks
    Textual to repaint that one line, not the card's 23."""
    app = app_for()
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        card = app.screen.query_one("#agents", LineCard)
        before = card.lines_repainted
        await world.registry.heartbeat("echo-1", 3600, in_flight=7, state=AgentState.UP)
        await app.refresh_now()
        await pilot.pause()
        assert card.lines_repainted - before == 1
        busy = sum(a.in_flight for a in await world.registry.agents())
        assert f"busy      {busy:>6} / 12 slots" in str(card.render())


async def test_queues_are_counted_in_the_store_every_recount_seconds_and_moved_by_events(
    world: World, app_for: Callable[..., AgentdeckApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an events stream the overview counts queues in the Store once per
    RECOUNT_SECONDS; in between a task event moves its task from queued to in flight; the next
    recount puts the counts back to the Store's."""
    calls: list[object] = []
    real = world.store.count_by_capability

    async def counted(status: Any) -> Any:
        calls.append(status)
        return await real(status)

    monkeypatch.setattr(world.store, "count_by_capability", counted)
    app = app_for(follow=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        shown = str(app.screen.query_one("#queues").render())
        assert "echo                 1 / 0     " in shown  # (the world: p1 ready)
        counted_once = len(calls)
        await app.refresh_now()
        assert len(calls) == counted_once

        task = {"task_id": f"{WF_RUNNING}/p1", "capability": "echo", "status": "dispatched"}
        app.record(Event(topic="task", at=world.clock.now(), data=task))
        await app.refresh_now()
        await pilot.pause()
        assert "echo                 0 / 1     " in str(app.screen.query_one("#queues").render())
        assert len(calls) == counted_once

        world.clock.advance(RECOUNT_SECONDS)
        await app.refresh_now()
        await pilot.pause()
        assert len(calls) == counted_once + 1  # (the Store never saw that dispatch)
        assert "echo                 1 / 0     " in str(app.screen.query_one("#queues").render())


async def test_the_queues_are_counted_again_when_the_overview_is_shown_again(
    world: World, app_for: Callable[..., AgentdeckApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back on the overview from another screen, the queues are the Store's counts at once,
    not the counts of before moved by the events since."""
    calls: list[object] = []
    real = world.store.count_by_capability

    async def counted(status: Any) -> Any:
        calls.append(status)
        return await real(status)

    monkeypatch.setattr(world.store, "count_by_capability", counted)
    app = app_for(follow=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        task = {"task_id": f"{WF_RUNNING}/p1", "capability": "echo", "status": "dispatched"}
        app.record(Event(topic="task", at=world.clock.now(), data=task))
        await app.action_goto("tasks")
        await pilot.pause()
        counted = len(calls)
        await app.action_goto("overview")
        await pilot.pause()
        await app.refresh_now()  # (what the timer would do, as the events keep coming)
        await pilot.pause()
        assert len(calls) > counted
        assert "echo                 1 / 0     " in str(app.screen.query_one("#queues").render())
