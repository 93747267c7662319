"""The capabilities screen stays cheap four times a second: its queue counts are the overview's,
kept from the task events between Store recounts, not a count of every open task each time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentdeck.core.messages import Event
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.queue_counts import RECOUNT_SECONDS
from tests.tui.conftest import WF_RUNNING, World
from tests.tui.test_app import SIZE, ready, table

pytestmark = pytest.mark.tui


def counts(app: AgentdeckApp) -> list[str]:
    """The echo capability's queued and running counts as shown."""
    return [cell.plain for cell in table(app).get_row("echo")[2:4]]


async def test_capability_queues_are_counted_when_shown_then_moved_by_events(
    world: World, app_for: Callable[..., AgentdeckApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shown, the capabilities screen counts queued and running tasks in the Store; while
    events come a task event moves its task from queued to running without asking the Store;
    after RECOUNT_SECONDS the Store counts again, and its counts are shown."""
    calls: list[object] = []
    real = world.store.count_by_capability

    async def counted(status: Any) -> Any:
        calls.append(status)
        return await real(status)

    monkeypatch.setattr(world.store, "count_by_capability", counted)
    app = app_for(follow=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await app.action_goto("capabilities")
        await pilot.pause()
        await app.refresh_now()
        await pilot.pause()
        # (columns: capability, state, queued, running, agents; the world: p1 ready)
        assert counts(app) == ["1", "0"]
        counted_once = len(calls)
        assert counted_once > 0

        task = {"task_id": f"{WF_RUNNING}/p1", "capability": "echo", "status": "dispatched"}
        app.record(Event(topic="task", at=world.clock.now(), data=task))
        await app.refresh_now()
        await pilot.pause()
        assert counts(app) == ["0", "1"]
        assert len(calls) == counted_once

        world.clock.advance(RECOUNT_SECONDS)
        await app.refresh_now()
        await pilot.pause()
        assert len(calls) == counted_once + 1  # (the Store never saw that dispatch)
        assert counts(app) == ["1", "0"]
