"""Every screen at 80x24 (and the main ones in each theme and at 120x36), pinned as SVG snapshots.

The app builds the fixed world from tests/tui/conftest.py on a fake clock, so the pictures are
the same on every run. Update after an intended change with ``--snapshot-update`` and look at the
SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui.conftest import WF_FAILED, WF_RUNNING, fresh_app
from tui.app import AgentdeckApp

pytestmark = pytest.mark.tui
Snap = Callable[..., bool]


def steps(*commands: str, keys: Iterable[str] = ()) -> Callable[[Pilot[None]], Any]:
    """Connect, run ``:`` commands, press ``keys``, and let the screen settle."""

    async def run(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, AgentdeckApp)
        await app.connected.wait()
        await app.refresh_now()
        for text in commands:
            await app.run_command(text)
        await pilot.press(*keys)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await app.refresh_now()
        # The footer redraws its keys after a screen refresh, which runs on a timer: give it
        # real time, or a loaded machine can take the picture first.
        await pilot.pause(0.1)
        await pilot.pause(0.1)

    return run


def with_logs(run: Callable[[Pilot[None]], Any]) -> Callable[[Pilot[None]], Any]:
    """``run`` after the fixed sample events are in the app's log."""

    async def fed(pilot: Pilot[None]) -> None:
        from tests.tui.test_logs import feed

        app = pilot.app
        assert isinstance(app, AgentdeckApp)
        await app.connected.wait()
        feed(app)
        await run(pilot)

    return fed


SCREENS = {
    "overview": steps(),
    "workflows": steps("workflows"),
    "workflow": steps(f"wf {WF_RUNNING}"),
    "workflow_failures": steps(f"wf {WF_FAILED}", keys=["n"]),
    "task": steps(f"wf {WF_FAILED}", keys=["n", "enter"]),
    "tasks_failed": steps("tasks failed"),
    "agents": steps("agents"),
    "actions": steps("actions"),
    "breakers": steps("breakers"),
    "help": steps(f"wf {WF_FAILED}", keys=["question_mark"]),
    "confirm": steps(f"wf {WF_FAILED}", keys=["n", "r"]),
    "capabilities": steps("caps"),
    "dead_letters": steps("dead"),
    "confirm_drain": steps("agents", keys=["d"]),
    "logs": with_logs(steps("logs")),
    "logs_task": with_logs(steps(f"wf {WF_FAILED}", keys=["n", "enter", "l"])),
    "traces": steps("traces"),
    "trace": steps("traces", keys=["enter"]),
}


@pytest.mark.parametrize("screen", sorted(SCREENS))
def test_screen_at_80x24(screen: str, snap_compare: Snap, tmp_path: Path) -> None:
    """Each screen reads well in the smallest terminal we support."""
    app = fresh_app(tmp_path / "agentdeck.db")
    assert snap_compare(app, terminal_size=(80, 24), run_before=SCREENS[screen])


@pytest.mark.parametrize("theme", ["light", "high-contrast"])
@pytest.mark.parametrize("screen", ["overview", "workflow_failures"])
def test_screen_in_each_theme(screen: str, theme: str, snap_compare: Snap, tmp_path: Path) -> None:
    """The light and high-contrast themes colour the same screens legibly."""
    app = fresh_app(tmp_path / "agentdeck.db", theme=theme)
    assert snap_compare(app, terminal_size=(80, 24), run_before=SCREENS[screen])


def test_read_only_workflow_at_120x36(snap_compare: Snap, tmp_path: Path) -> None:
    """A larger terminal in read-only mode: no action keys in the footer, the badge shows."""
    app = fresh_app(tmp_path / "agentdeck.db", read_only=True)
    assert snap_compare(app, terminal_size=(120, 36), run_before=SCREENS["workflow_failures"])
