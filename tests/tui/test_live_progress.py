"""A running task's live progress and streamed output: kept from the events stream (capped) and
shown on the task's page as they come."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from agentdeck.core.messages import Event
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.progress import LiveProgress, progress_line
from agentdeck.tui.screens.tasks import TaskScreen
from tests.tui.conftest import START, WF_RUNNING, World
from tests.tui.test_app import SIZE, ready

pytestmark = pytest.mark.tui
RUNNING = f"{WF_RUNNING}/p2"  # running, attempt 1, on sleep-1


def _event(topic: str, attempt: int, task_id: str = "w/a", **data: Any) -> Event:
    return Event(topic=topic, at=START, data={"task_id": task_id, "attempt": attempt, **data})


def test_the_newest_attempt_wins_and_older_ones_are_ignored() -> None:
    """Progress replaces progress; a new attempt starts afresh; a late event of an older one
    changes nothing; other topics are not kept."""
    live = LiveProgress()
    assert live.record(_event("progress", 1, fraction=0.5, message="half"))
    assert live.record(_event("output", 1, text="one "))
    assert live.record(_event("output", 1, text="two"))
    first = live.of("w/a")
    assert first is not None and (first.fraction, first.message, first.text) == (
        0.5,
        "half",
        "one two",
    )
    assert live.record(_event("progress", 2, fraction=None, message="again"))
    assert not live.record(_event("output", 1, text="late"))
    now = live.of("w/a")
    assert now is not None and (now.attempt, now.text, now.bar()) == (2, "", "[ ? ]")
    assert not live.record(Event(topic="task", at=START, data={"task_id": "w/a", "attempt": 3}))
    assert not live.record(_event("output", 1, task_id=""))


def test_the_text_and_the_tasks_kept_are_capped() -> None:
    """The oldest text drops off (counted) and the least recently heard task goes first."""
    live = LiveProgress(tasks_kept=2, text_kept=10)
    live.record(_event("output", 1, text="0123456789abc"))
    kept = live.of("w/a")
    assert kept is not None and (kept.text, kept.dropped) == ("3456789abc", 3)
    live.record(_event("output", 1, task_id="w/b", text="b"))
    live.record(_event("output", 1, task_id="w/c", text="c"))
    assert (live.of("w/a"), len(live)) == (None, 2)


def test_a_progress_event_reads_as_one_line() -> None:
    """A bar, the percentage and the message; other topics are not progress lines."""
    line = progress_line(_event("progress", 2, fraction=0.25, message="reading"))
    assert line == "[attempt 2] [█████···············]  25% reading"
    assert progress_line(_event("output", 2, text="x")) is None


async def _page(pilot: Pilot[None]) -> str:
    app = pilot.app
    assert isinstance(app, AgentdeckApp)
    await app.refresh_now()
    await pilot.pause()
    return str(app.screen.query_one("#task-text", Static).render())


async def test_the_task_page_shows_progress_and_streamed_output_live(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Events published while the page is open show up: the bar, the message, the newest
    lines of text; none of it floods the logs."""
    app = app_for(follow=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for _ in range(20):  # let the follower subscribe before publishing
            await pilot.pause()
        await app.drill(TaskScreen(RUNNING))
        assert "Progress" not in await _page(pilot)
        ids = {"task_id": RUNNING, "workflow_id": WF_RUNNING, "attempt": 1, "agent_id": "sleep-1"}
        await world.publish("progress", **ids, fraction=0.4, message="reading the feed")
        await world.publish("output", **ids, text="line one\nline tw")
        await world.publish("output", **ids, text="o\n")
        for _ in range(50):
            page = await _page(pilot)
            if "line two" in page:
                break
        assert "Progress (attempt 1, sleep-1)" in page
        assert "[████████············]  40%  reading the feed" in page
        assert "Streamed output\nline one\nline two" in page
        await world.publish("progress", **ids, fraction=1.0, message="done reading")
        for _ in range(50):
            page = await _page(pilot)
            if "100%" in page:
                break
        assert "100%  done reading" in page
        assert not [line for line in app.feed.logbook if line.topic in ("progress", "output")]
