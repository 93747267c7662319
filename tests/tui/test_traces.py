"""The traces screen: recent traces from the span buffer, and one trace as a waterfall."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from agentdeck.core.spanstream import SpanEvents
from agentdeck.core.tracing import Tracing, workflow_trace_id
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.screens.modals import HelpScreen
from agentdeck.tui.screens.tasks import TaskScreen, TasksScreen
from agentdeck.tui.screens.traces import TraceScreen, TracesScreen
from agentdeck.tui.sources import Sources
from tests.tui.conftest import WF_DONE, WF_FAILED, WF_RUNNING, World
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
        assert "not among the recent spans" in text and "OTLP backend" in text
        world.sources.recent = None
        await settle(pilot)
        assert "tracing is off in this process" in app.screen.shown.plain


async def test_an_attached_control_centre_shows_the_spans_other_processes_publish(
    world: World, tmp_path: Path
) -> None:
    """Attached (no span buffer of its own), the traces screen shows the traces another node
    publishes on the events stream, its spans named by the node that made them."""
    sources = replace(world.sources, events=world.bus.subscribe_events, recent=None, attached=True)

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        yield sources

    other = Tracing("agentdeck", "node-2", env={})
    publisher = SpanEvents(world.bus, world.clock)
    other.provider.add_span_processor(publisher)
    publishing = asyncio.create_task(publisher.run())
    app = AgentdeckApp(connect, refresh_interval=None)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            for _ in range(20):  # let the follower subscribe before publishing
                await pilot.pause()
            await pilot.press("0")
            await app.refresh_now()  # (not settle: the events follower never completes)
            await pilot.pause()
            assert table(app).keys == []
            workflow = await world.store.get_workflow(WF_DONE)
            other.workflow_finished(workflow, workflow.created_at + 30)
            done = f"{workflow_trace_id(WF_DONE):032x}"
            for _ in range(50):
                await pilot.pause()
                await app.refresh_now()
                if table(app).keys:
                    break
            assert table(app).keys == [done]
            assert [str(c) for c in table(app).get_row(done)][1:3] == ["workflow a-to-b", "1"]
            [span] = app.feed.spans.spans()
            assert span.resource.attributes["host.name"] == "node-2"
    finally:
        await publisher.stop(grace=1.0)
        await asyncio.wait_for(publishing, 5)
        other.shutdown()
