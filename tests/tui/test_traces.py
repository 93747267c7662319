"""The traces screen: recent traces from the span buffer, and one trace as a waterfall."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentdeck.core.tracing import workflow_trace_id
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.screens.modals import HelpScreen
from agentdeck.tui.screens.tasks import TaskScreen, TasksScreen
from agentdeck.tui.screens.traces import TraceScreen, TracesScreen
from tests.tui.conftest import WF_FAILED, WF_RUNNING, World
from tests.tui.test_app import command, ready, settle, table

pytestmark = pytest.mark.tui
SIZE = (80, 24)
TRACE = f"{workflow_trace_id(WF_FAILED):032x}"


async def test_traces_list_and_waterfall(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`0` lists the failed workflow's trace with its error count; Enter draws its spans."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("0")
        await settle(pilot)
        assert isinstance(app.screen, TracesScreen)
        assert table(app).keys == [TRACE]
        row = [str(c) for c in table(app).get_row(TRACE)]
        assert row[1:3] == ["workflow nightly-etl", "3"]
        assert row[4] == "2"  # the failed attempt and the failed workflow
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        lines = app.screen.shown.plain.splitlines()
        assert lines[0].startswith("workflow nightly-etl  3 spans")
        assert [line.split()[:2] for line in lines[2:]] == [
            ["workflow", "nightly-etl"],
            ["attempt", "echo"],
            ["attempt", "chaos"],
        ]


async def test_no_tracing_shows_an_empty_list(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """With tracing off (no span buffer) the screen is empty, not an error."""
    world.sources.recent = None
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "traces")
        assert isinstance(app.screen, TracesScreen)
        assert table(app).keys == []


def marked(app: AgentdeckApp) -> list[str]:
    """The waterfall rows marked as the task's own spans."""
    assert isinstance(app.screen, TraceScreen)
    return [
        line.split("+")[0].strip() for line in app.screen.shown.plain.splitlines() if "▸" in line
    ]


async def test_task_list_jumps_to_the_tasks_trace(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`T` on a row of the task list opens its workflow's trace with that task's span marked;
    Esc comes back to the list."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, f"tasks wf={WF_FAILED}")
        assert isinstance(app.screen, TasksScreen)
        table(app).move_cursor(row=table(app).keys.index(f"{WF_FAILED}/transform"))
        await pilot.press("T")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert app.screen.trace_id == TRACE
        assert app.screen.shown.plain.startswith("workflow nightly-etl  3 spans")
        assert marked(app) == ["▸ attempt chaos"]
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TasksScreen)


async def test_task_page_jumps_to_its_trace_shown_in_help_and_footer(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """On a task's page `T` is in the footer and `?` help, beside `l` for the logs; it opens
    the trace with the task's attempt marked."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, f"tasks wf={WF_FAILED}")
        table(app).move_cursor(row=table(app).keys.index(f"{WF_FAILED}/extract"))
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TaskScreen)
        footer = {
            k: b.binding.description
            for k, b in app.screen.active_bindings.items()
            if b.binding.show
        }
        assert footer["T"] == "Trace" and footer["l"] == "Logs"
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert ("T", "Trace") in app.screen.keys
        await pilot.press("escape")
        await pilot.press("T")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        assert marked(app) == ["▸ attempt echo"]


async def test_a_trace_not_in_the_buffer_says_so(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """A task whose trace has no spans here (its workflow still runs, no attempt ended in this
    process) gets the full trace id and where to look, not an empty screen; with tracing off
    the screen says tracing is off."""
    task = f"{WF_RUNNING}/p0"
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, f"tasks wf={WF_RUNNING}")
        table(app).move_cursor(row=table(app).keys.index(task))
        await pilot.press("T")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen)
        text = app.screen.shown.plain
        assert f"trace {workflow_trace_id(WF_RUNNING):032x}" in text
        assert f"of task {task}" in text
        assert "not in this process's span buffer" in text and "OTLP backend" in text
        world.sources.recent = None
        await settle(pilot)
        assert "tracing is off in this process" in app.screen.shown.plain
