"""The traces screen: recent traces from the span buffer, and one trace as a waterfall."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.tracing import workflow_trace_id
from tests.tui.conftest import WF_FAILED, World
from tests.tui.test_app import command, ready, settle, table
from tui.app import AgentdeckApp
from tui.screens.traces import TraceScreen, TracesScreen

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
