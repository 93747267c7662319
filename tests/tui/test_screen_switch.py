"""Moving between screens while one reads: the control centre never ends because a screen it
left was still reading."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from agentdeck.tui.app import AgentdeckApp
from tests.tui.conftest import World
from tests.tui.test_app import SIZE, ready

pytestmark = pytest.mark.tui


async def test_a_screen_left_while_it_reads_does_not_end_the_control_centre(
    world: World, app_for: Callable[..., AgentdeckApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overview is reading the Store when the operator types ``:tasks``: the overview's
    widgets are gone when the read returns, and the control centre goes on showing the tasks
    (it once ended with NoMatches: '#workflows')."""
    gate = asyncio.Event()
    real = world.store.count_workflows

    async def slow() -> Any:
        await gate.wait()
        return await real()

    app = app_for(follow=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        monkeypatch.setattr(world.store, "count_workflows", slow)
        reading = asyncio.create_task(app.refresh_now())
        await pilot.pause()
        monkeypatch.setattr(world.store, "count_workflows", real)
        await app.action_goto("tasks")
        await pilot.pause()
        gate.set()
        await reading  # (raised NoMatches before)
        await pilot.pause()
        assert app.is_running
        assert "Tasks" in app.screen.crumb_text()
