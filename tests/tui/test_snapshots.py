"""Every screen in every theme at 80x24 and at 160x48, pinned as SVG snapshots.

The app builds the fixed world from tests/tui/conftest.py on a fake clock (fixed ids, fixed
times, no wall-clock ages, no randomness), so the pictures are the same on every run. Update
after an intended change with ``--snapshot-update`` and look at the SVGs before committing them.

The matrix is screens x themes x sizes; starting an app costs more than a picture, so each screen
runs one app and takes its six pictures by switching theme and terminal size at run time (which
:func:`test_a_theme_switched_at_run_time_draws_as_one_set_at_start` shows draws the same as
starting in that theme). Special states (a failure selected, a filtered task list, the drain
confirmation, a task's logs, read-only at 120x36) are single pictures below the matrix.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pytest_textual_snapshot import (
    PseudoApp,
    PseudoConsole,
    SVGImageExtension,
    node_to_report_path,
    normalize_svg,
)
from rich.console import Console
from syrupy.assertion import SnapshotAssertion
from textual.pilot import Pilot

from agentdeck.themes import BUILTIN
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.widgets.command_line import CommandLine
from tests.tui.conftest import WF_FAILED, WF_LARGE, WF_RUNNING, add_large_workflow, fresh_app

pytestmark = pytest.mark.tui
Snap = Callable[..., bool]
Steps = Callable[[Pilot[None]], Awaitable[None]]

THEMES = BUILTIN
SIZES = ((80, 24), (160, 48))
"""The smallest terminal we support, and a big one."""


def steps(*commands: str, keys: Iterable[str] = ()) -> Steps:
    """Connect, run ``:`` commands, press ``keys``, and let the screen settle."""

    async def run(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, AgentdeckApp)
        await app.connected.wait()
        await app.refresh_now()
        for text in commands:
            await app.run_command(text)
        await pilot.press(*keys)
        await settle(pilot)

    return run


async def settle(pilot: Pilot[None]) -> None:
    """Let workers finish and the visible screen reload and redraw."""
    app = pilot.app
    assert isinstance(app, AgentdeckApp)
    await pilot.pause()
    await app.workers.wait_for_complete()
    await app.refresh_now()
    # The footer redraws its keys after a screen refresh, which runs on a timer: give it
    # real time, or a loaded machine can take the picture first.
    await pilot.pause(0.1)
    await pilot.pause(0.1)
    await pilot.wait_for_scheduled_animations()


def with_logs(run: Steps) -> Steps:
    """``run`` after the fixed sample events are in the app's log."""

    async def fed(pilot: Pilot[None]) -> None:
        from tests.tui.test_logs import feed

        app = pilot.app
        assert isinstance(app, AgentdeckApp)
        await app.connected.wait()
        feed(app)
        await run(pilot)

    return fed


def steady_cursor(run: Steps) -> Steps:
    """``run``, then stop the command line's cursor blinking (a blink would differ per run)."""

    async def steady(pilot: Pilot[None]) -> None:
        await run(pilot)
        pilot.app.screen.query_one(CommandLine).cursor_blink = False
        await pilot.pause()

    return steady


@dataclass(frozen=True)
class Scene:
    """How to reach one screen, and how to build the app for it."""

    run: Steps
    app: dict[str, Any] = field(default_factory=dict)


MATRIX = {
    "overview": Scene(steps()),
    "workflows": Scene(steps("workflows")),
    "workflow": Scene(steps(f"wf {WF_RUNNING}")),
    "workflow_large": Scene(steps(f"wf {WF_LARGE}"), {"extra": add_large_workflow}),
    "tasks": Scene(steps("tasks")),
    "task": Scene(steps(f"wf {WF_FAILED}", keys=["n", "enter"])),
    "agents": Scene(steps("agents")),
    "capabilities": Scene(steps("caps")),
    "breakers": Scene(steps("breakers")),
    "dead_letters": Scene(steps("dead")),
    "logs": Scene(with_logs(steps("logs"))),
    "traces": Scene(steps("traces")),
    "trace": Scene(steps("traces", keys=["enter"])),
    "actions": Scene(steps("actions")),
    "help": Scene(steps(f"wf {WF_FAILED}", keys=["question_mark"])),
    "command_line": Scene(
        steady_cursor(steps("workflows", keys=["colon", *"tasks", "space", "f", "a"]))
    ),
    "confirm": Scene(steps(f"wf {WF_FAILED}", keys=["n", "r"])),
    "read_only": Scene(steps(f"wf {WF_FAILED}", keys=["n"]), {"read_only": True}),
    "paused": Scene(steps("agents", keys=["p"])),
}

SPECIAL = {
    "workflow_failures": steps(f"wf {WF_FAILED}", keys=["n"]),
    "tasks_failed": steps("tasks failed"),
    "confirm_drain": steps("agents", keys=["d"]),
    "logs_task": with_logs(steps(f"wf {WF_FAILED}", keys=["n", "enter", "l"])),
}


def shoot(
    scene: Scene,
    path: Path,
    shots: Iterable[tuple[str, tuple[int, int]]],
    start: tuple[int, int] = SIZES[0],
) -> list[str]:
    """Run one app (in a ``start``-sized terminal) to ``scene`` and take a picture per
    (theme, size), switched at run time."""

    async def go() -> list[str]:
        app = fresh_app(path, **scene.app)
        pictures: list[str] = []
        async with app.run_test(size=start) as pilot:
            await scene.run(pilot)
            for theme, (width, height) in shots:
                app.set_theme(theme)
                await pilot.resize_terminal(width, height)
                # The screen is settled: a reload redraws the colours the screens compute
                # themselves (every screen: one under a modal shows too); no timer-driven
                # footer change to wait for.
                for screen in app.screen_stack:
                    if isinstance(screen, DeckScreen):
                        await screen.reload()
                app.update_bar()
                await pilot.pause()
                await pilot.wait_for_scheduled_animations()
                pictures.append(
                    normalize_svg(app.export_screenshot(title=app.title, simplify=True))
                )
        return pictures

    return asyncio.run(go())


_taken: dict[str, dict[tuple[str, tuple[int, int]], str]] = {}
"""The pictures of the screen being tested (one app run serves its six tests)."""


def picture(screen: str, theme: str, size: tuple[int, int], path: Path) -> str:
    """The picture of ``screen`` in ``theme`` at ``size``, taking all of that screen's at once."""
    if screen not in _taken:
        _taken.clear()  # tests run screen by screen: keep one screen's pictures at a time
        shots = [(t, s) for s in SIZES for t in THEMES]
        _taken[screen] = dict(zip(shots, shoot(MATRIX[screen], path, shots), strict=True))
    return _taken[screen][theme, size]


@pytest.fixture
def svg_compare(
    snapshot: SnapshotAssertion, request: pytest.FixtureRequest
) -> Callable[[str], bool]:
    """Compare an SVG picture with its snapshot, as ``snap_compare`` does after taking one
    (and feed the plugin's HTML report of mismatches the same way)."""
    snapshot = snapshot.use_extension(SVGImageExtension)

    def compare(svg: str) -> bool:
        result = snapshot == svg
        index = snapshot.num_executions - 1
        outcome = snapshot.executions.get(index)
        exists = index in snapshot.executions and outcome and outcome.final_data is not None
        node = request.node
        full_path, line_number, name = node.reportinfo()
        console = Console(legacy_windows=False, force_terminal=True)
        pseudo = PseudoApp(PseudoConsole(console.legacy_windows, console.size))
        doc = inspect.getdoc(node.function) or ""
        data = (result, str(snapshot), svg, pseudo, full_path, line_number, name, doc, "", exists)
        node_to_report_path(node).write_bytes(pickle.dumps(data))
        return result

    return compare


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("screen", list(MATRIX))
def test_screen(
    screen: str,
    theme: str,
    size: tuple[int, int],
    svg_compare: Callable[[str], bool],
    tmp_path: Path,
) -> None:
    """Each screen reads well in each theme, in the smallest terminal we support and a big one."""
    assert svg_compare(picture(screen, theme, size, tmp_path / "agentdeck.db"))


def test_a_theme_switched_at_run_time_draws_as_one_set_at_start(tmp_path: Path) -> None:
    """The matrix switches theme and size at run time: that must look exactly like starting so."""
    for name, theme, size in (
        ("workflow", "high-contrast", SIZES[1]),
        ("confirm", "light", SIZES[0]),  # the screen under a modal is recoloured too
    ):
        scene = MATRIX[name]
        started = shoot(
            Scene(scene.run, {**scene.app, "theme": theme}),
            tmp_path / f"{name}-{theme}.db",
            [(theme, size)],
            start=size,
        )
        switched = shoot(scene, tmp_path / f"{name}-{theme}-switched.db", [(theme, size)])
        assert switched == started


@pytest.mark.parametrize("screen", list(SPECIAL))
def test_special_state_at_80x24(screen: str, snap_compare: Snap, tmp_path: Path) -> None:
    """States worth their own picture: a failure selected, a filter, the drain question..."""
    app = fresh_app(tmp_path / "agentdeck.db")
    assert snap_compare(app, terminal_size=(80, 24), run_before=SPECIAL[screen])


def test_read_only_workflow_at_120x36(snap_compare: Snap, tmp_path: Path) -> None:
    """A larger terminal in read-only mode: no action keys in the footer, the badge shows."""
    app = fresh_app(tmp_path / "agentdeck.db", read_only=True)
    assert snap_compare(app, terminal_size=(120, 36), run_before=SPECIAL["workflow_failures"])
