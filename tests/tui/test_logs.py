"""The logs screen: a capped view of the events stream with follow, search and filters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from agentdeck.core.messages import Event, encode
from agentdeck.core.states import TaskStatus as T
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.screens.logs import LOG_CAP, LogsScreen, log_line
from agentdeck.tui.sources import Sources
from tests.tui.conftest import START, WF_FAILED, WF_RUNNING, World
from tests.tui.test_app import command, crumbs, open_failed_etl_task, ready, settle, table

pytestmark = pytest.mark.tui
SIZE = (80, 24)
BAD = {"type": "ValueError", "message": "bad row 7", "retryable": True}


def sample_events() -> list[Event]:
    """A few events of each topic, on two workflows and two agents."""
    t = f"{WF_FAILED}/transform"

    def task(task_id: str, wf: str, kind: str, agent: str, error: object = None) -> Event:
        data = {"task_id": task_id, "workflow_id": wf, "kind": kind, "status": kind}
        data |= {"attempt": 1, "agent_id": agent, "error": error}
        return Event(topic="task", at=START + 60, data=data)

    return [
        task(f"{WF_RUNNING}/p0", WF_RUNNING, "running", "echo-1"),
        task(t, WF_FAILED, "retrying", "chaos-1", BAD),
        task(t, WF_FAILED, "failed", "chaos-1", BAD),
        Event(
            topic="workflow",
            at=START + 61,
            data={"workflow_id": WF_FAILED, "name": "nightly-etl", "status": "failed"},
        ),
        Event(
            topic="command",
            at=START + 62,
            data={"action": "retry", "target": t, "status": "done", "result": "retrying 1"},
        ),
    ]


def feed(app: AgentdeckApp) -> None:
    """Put the sample events into the app's log as the events stream would."""
    for event in sample_events():
        app.record(event)


def messages(app: AgentdeckApp) -> list[str]:
    """The message column of the visible log, top (newest) first."""
    t = table(app)
    return [str(t.get_row(k)[3]) for k in t.keys]


def test_agent_log_lines_keep_their_level_agent_and_task() -> None:
    """A `log` event from an agent reads as its message with its fields, filterable by task."""
    data = {"agent_id": "chaos-1", "level": "critical", "event": "disk full", "task_id": "w/a"}
    line = log_line(1, Event(topic="log", at=START, data=data))
    assert (line.level, line.agent, line.task) == ("error", "chaos-1", "w/a")
    assert line.text == "chaos-1: disk full task_id=w/a"


def test_events_read_as_log_lines_with_levels() -> None:
    """A failed task is an error naming the agent and the error; a retry is a warning."""
    lines = [log_line(n, e) for n, e in enumerate(sample_events())]
    assert [line.level for line in lines] == ["info", "warning", "error", "info", "info"]
    assert lines[2].text == (
        f"{WF_FAILED}/transform failed (attempt 1) on chaos-1: ValueError: bad row 7"
    )
    assert lines[3].text == f"workflow {WF_FAILED} nightly-etl failed"


async def test_logs_follow_the_events_stream_capped(world: World) -> None:
    """Events from the bus land in the log (newest first); the log keeps only LOG_CAP lines."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        yield replace(world.sources, events=world.bus.subscribe_events)

    app = AgentdeckApp(connect, refresh_interval=None)
    async with app.run_test(size=SIZE) as pilot:
        await app.connected.wait()
        for _ in range(20):  # let the follower subscribe before publishing
            await pilot.pause()
        await world.bus.publish_event(encode(sample_events()[2]))
        for _ in range(50):
            await pilot.pause()
            if app.feed.logbook:
                break
        await pilot.press("9")
        await pilot.pause()
        await app.refresh_now()
        assert isinstance(app.screen, LogsScreen)
        assert messages(app)[0].startswith(f"{WF_FAILED}/transform failed")
        for n in range(LOG_CAP + 10):
            app.record(Event(topic="other", at=START, data={"n": n}))
        assert len(app.feed.logbook) == LOG_CAP
        assert app.feed.logbook[0].text == "n=10"


async def test_filters_search_and_follow(app_for: Callable[..., AgentdeckApp]) -> None:
    """`:logs level=warning` narrows by level, `e` to errors, `/` searches, `f` stops following."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        feed(app)
        await command(pilot, "logs level=warning")
        assert [m.split()[1] for m in messages(app)] == ["failed", "retrying"]
        await pilot.press("e")
        await settle(pilot)
        assert len(messages(app)) == 1
        await command(pilot, f"logs agent=echo-1 wf={WF_RUNNING}")
        assert messages(app) == [f"{WF_RUNNING}/p0 running (attempt 1) on echo-1"]
        await command(pilot, "logs")
        await pilot.press("slash")
        await pilot.press(*"nightly", "enter")
        await settle(pilot)
        assert messages(app) == [f"workflow {WF_FAILED} nightly-etl failed"]
        table(app).set_filter("")
        await settle(pilot)
        await pilot.press("j")
        await pilot.press("f")
        await settle(pilot)
        assert "(not following)" in crumbs(app)
        app.record(sample_events()[0])
        await app.refresh_now()
        assert table(app).cursor_row == 2  # stayed on its line, which moved down by one
        await pilot.press("f")
        await settle(pilot)
        assert table(app).cursor_row == 0


async def test_bad_logs_filter_is_explained(app_for: Callable[..., AgentdeckApp]) -> None:
    """An unknown filter or level names the bad value and what is allowed."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "logs level=loud")
        assert not isinstance(app.screen, LogsScreen)
        notes = [n.message for n in app._notifications]
        assert any("'level=loud' is not a filter" in n for n in notes)


async def test_task_detail_jumps_to_its_logs(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`l` on a task's detail opens the logs filtered to that task; Esc goes back."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await open_failed_etl_task(pilot)
        feed(app)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)
        assert isinstance(app.screen, LogsScreen)
        assert app.screen.task_filter == f"{WF_FAILED}/transform"
        assert [m.split()[1] for m in messages(app)] == ["failed", "retrying"]
        assert "task=" in crumbs(app)
        assert await world.status(f"{WF_FAILED}/transform") == T.FAILED


async def test_a_refresh_shows_what_reading_the_whole_log_again_would(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """The screen reads only the lines that came since its last refresh, yet shows what a full
    read would: the newest on top, the lines the capped log let go gone, a level filter applied
    to old and new lines alike (and to all of them again when it changes)."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "logs")
        screen = app.screen
        assert isinstance(screen, LogsScreen)

        def full_read() -> list[str]:
            return [str(line.seq) for line in screen.lines()]

        for batch in range(5):
            for n in range(LOG_CAP // 3):  # 5 batches: the log goes round more than once
                level = "error" if n % 7 == 0 else "info"
                app.record(Event(topic="other", at=START, data={"n": n, "level": level}))
            await app.refresh_now()
            assert table(app).all_keys == full_read(), batch
            if batch == 2:
                await pilot.press("e")
                await settle(pilot)
                assert table(app).all_keys == full_read()
                assert table(app).total == len(full_read())
        assert table(app).total < LOG_CAP  # (errors only)
