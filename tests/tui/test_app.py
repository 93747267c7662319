"""The control centre driven from the keyboard, checked against the state in the core."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from agentdeck.core.errors import ConfigError
from agentdeck.core.models import CommandStatus, Task
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W
from agentdeck.themes import BUILTIN, load_theme
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.screens.actions import ActionsScreen
from agentdeck.tui.screens.agents import AgentsScreen
from agentdeck.tui.screens.breakers import BreakersScreen
from agentdeck.tui.screens.modals import ConfirmScreen, HelpScreen
from agentdeck.tui.screens.overview import OverviewScreen
from agentdeck.tui.screens.tasks import TaskScreen, TasksScreen
from agentdeck.tui.screens.workflows import WorkflowScreen, WorkflowsScreen
from agentdeck.tui.sources import Sources
from agentdeck.tui.widgets.command_line import CommandLine
from agentdeck.tui.widgets.live_table import LiveTable
from agentdeck.tui.widgets.status_bar import StatusBar
from tests.tui.conftest import WF_DONE, WF_FAILED, WF_RUNNING, World

pytestmark = pytest.mark.tui
SIZE = (80, 24)


async def ready(pilot: Pilot[None]) -> AgentdeckApp:
    """Wait until the app is connected and showing fresh data."""
    app = pilot.app
    assert isinstance(app, AgentdeckApp)
    await app.connected.wait()
    await app.refresh_now()
    await pilot.pause()
    return app


async def settle(pilot: Pilot[None]) -> None:
    """Let queued actions, screen changes and reloads finish."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.app.refresh_now()  # type: ignore[attr-defined]
    await pilot.pause()


async def command(pilot: Pilot[None], text: str) -> None:
    """Open the command line with ``:``, put ``text`` in it (typing is tested below), Enter."""
    await pilot.press("colon")
    pilot.app.screen.query_one(CommandLine).value = text
    await pilot.press("enter")
    await settle(pilot)


def table(app: AgentdeckApp) -> LiveTable:
    """The visible screen's main table."""
    return app.screen.query_one(LiveTable)


def crumbs(app: AgentdeckApp) -> str:
    """The status bar's text."""
    bar = app.screen.query_one(StatusBar)
    return " ".join(str(s.render()) for s in bar.query("Static"))


async def open_failed_etl_task(pilot: Pilot[None]) -> AgentdeckApp:
    """Workflows → the failed ETL workflow → cursor on its failure."""
    app = await ready(pilot)
    await pilot.press("2")
    await settle(pilot)
    assert isinstance(app.screen, WorkflowsScreen)
    assert table(app).cursor_key == WF_FAILED  # newest first
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(app.screen, WorkflowScreen)
    await pilot.press("n")
    assert table(app).cursor_key == f"{WF_FAILED}/transform"
    return app


async def test_starts_on_the_overview_with_the_fleet_counted(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """The overview counts workflows by state and agents up/draining."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert isinstance(app.screen, OverviewScreen)
        text = str(app.screen.query_one("#workflows").render())
        assert "failed" in text and "running" in text
        agents = str(app.screen.query_one("#agents").render())
        assert "up             1" in agents and "draining       1" in agents
        assert "agentdeck \u203a Overview" in crumbs(app)


async def test_retry_confirmed_queues_a_command_the_scheduler_carries_out(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Drill to the failing task, retry, confirm: the command is logged and the task runs again."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await open_failed_etl_task(pilot)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == f"Retry task {WF_FAILED}/transform?"
        await pilot.press("y")
        await settle(pilot)
        queued, _old = await world.store.list_commands()
        assert (queued.action, queued.target, queued.actor) == (
            "retry",
            f"{WF_FAILED}/transform",
            "tui:test@node-1",
        )
        await world.scheduler.tick()
        assert await world.status(f"{WF_FAILED}/transform") in (T.READY, T.DISPATCHED)
        assert await world.status(f"{WF_FAILED}/load") == T.BLOCKED
        assert (await world.store.get_workflow(WF_FAILED)).status == W.RUNNING
        [done, _] = await world.store.list_commands()
        assert done.status == CommandStatus.DONE
        await pilot.press("5")
        await settle(pilot)
        assert isinstance(app.screen, ActionsScreen)
        assert table(app).keys[0] == done.id


async def test_refused_confirmation_changes_nothing(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Answering no (or Esc) to the confirmation queues no command."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await open_failed_etl_task(pilot)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("r", "escape")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowScreen)
        assert [c for c in await world.store.list_commands() if c.action == "retry"] == []
        assert await world.status(f"{WF_FAILED}/transform") == T.FAILED


async def test_read_only_mode_has_no_actions(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """With --read-only the action keys do nothing, are not in the footer or help, and say so."""
    app = app_for(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await open_failed_etl_task(pilot)
        assert "READ-ONLY" in crumbs(app)
        enabled = {k for k, b in app.screen.active_bindings.items() if b.enabled}
        assert not enabled & {"r", "x", "P", "space"}
        await pilot.press("r", "x", "P", "space")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowScreen)
        assert table(app).tagged == set()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "Retry" not in dict(app.screen.keys).values()
    assert len(await world.store.list_commands()) == 1  # only the fixture's old command


async def test_bulk_retry_of_tagged_failed_tasks(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`:tasks failed`, tag both rows, retry once: two commands, both tasks run again."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "tasks failed")
        assert isinstance(app.screen, TasksScreen)
        failed = [f"{WF_RUNNING}/p5", f"{WF_FAILED}/transform"]
        assert sorted(table(app).keys) == sorted(failed)
        await pilot.press("space", "space")
        assert table(app).tagged == set(failed)
        assert "2 tagged" in crumbs(app)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == "Retry 2 tasks?"
        await pilot.press("y")
        await settle(pilot)
        assert table(app).tagged == set()
    assert sorted(c.target for c in await world.store.list_commands() if c.action == "retry") == (
        sorted(failed)
    )
    await world.scheduler.tick()
    for task_id in failed:
        assert await world.status(task_id) in (T.READY, T.DISPATCHED)


async def test_cancel_then_pause_resume_a_workflow(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`P` pauses a running workflow and then resumes it; `x` cancels it and its open tasks."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, f"wf {WF_RUNNING[:6]}")
        assert isinstance(app.screen, WorkflowScreen)
        assert app.screen.workflow_id == WF_RUNNING
        await pilot.press("P")
        await pilot.pause()
        assert app.screen.question == f"Pause workflow {WF_RUNNING}?"  # type: ignore[attr-defined]
        await pilot.press("y")
        await settle(pilot)
        await world.scheduler.tick()
        assert (await world.store.get_workflow(WF_RUNNING)).status == W.PAUSED
        await settle(pilot)
        await pilot.press("P", "y")
        await settle(pilot)
        await world.scheduler.tick()
        assert (await world.store.get_workflow(WF_RUNNING)).status == W.RUNNING
        await pilot.press("x")
        await pilot.pause()
        assert app.screen.question == f"Cancel workflow {WF_RUNNING}?"  # type: ignore[attr-defined]
        await pilot.press("y")
        await settle(pilot)
        await world.scheduler.tick()
    assert (await world.store.get_workflow(WF_RUNNING)).status == W.CANCELLED
    assert await world.status(f"{WF_RUNNING}/join") == T.CANCELLED


async def test_drill_down_and_back_with_breadcrumbs(app_for: Callable[..., AgentdeckApp]) -> None:
    """Enter drills workflow → task, the crumbs follow, Esc comes back one level at a time."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await open_failed_etl_task(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TaskScreen)
        assert f"Workflows \u203a nightly-etl {WF_FAILED} \u203a transform" in crumbs(app)
        text = str(app.screen.query_one("#task-text").render())
        assert "ValueError: bad row 7" in text
        assert "#3" in text and "chaos-1" in text  # every attempt, with its agent
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowScreen)
        await pilot.press("escape", "escape")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowsScreen)


async def test_failure_focus_and_collapse_in_the_dag_view(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """`f` shows only troubled tasks, `z` hides succeeded ones; the map shows every task."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, f"wf {WF_RUNNING}")
        assert len(table(app).keys) == 8
        dag = str(app.screen.query_one("#dag").render())
        assert dag.splitlines()[1].endswith("✓○▶◔↻✗")  # p0..p5 in key order
        await pilot.press("f")
        await settle(pilot)
        assert table(app).keys == [f"{WF_RUNNING}/p4", f"{WF_RUNNING}/p5"]
        await pilot.press("f", "z")
        await settle(pilot)
        assert f"{WF_RUNNING}/split" not in table(app).keys
        assert len(table(app).keys) == 6


async def test_command_line_filters_and_completion(app_for: Callable[..., AgentdeckApp]) -> None:
    """`:tasks` filters by capability, workflow, agent; `/` filters rows; Tab/Enter complete."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, f"tasks cap=chaos wf={WF_RUNNING}")
        assert table(app).keys == [f"{WF_RUNNING}/p4", f"{WF_RUNNING}/p5"]
        await command(pilot, "tasks agent=sleep-1")
        assert table(app).keys == [f"{WF_RUNNING}/p2"]
        await command(pilot, "tasks")
        await pilot.press("slash", *"transform", "enter")
        await settle(pilot)
        assert table(app).keys == [f"{WF_FAILED}/transform"]
        assert "/transform" in crumbs(app)
        await pilot.press("colon", *"age")
        await pilot.pause()
        await pilot.press("tab", "enter")
        await settle(pilot)
        assert isinstance(app.screen, AgentsScreen)
        assert table(app).keys == ["chaos-1", "echo-1"]
        await pilot.press("colon", *"tasks fa")
        await pilot.pause()
        await pilot.press("enter")  # Enter takes the completion shown
        await settle(pilot)
        assert isinstance(app.screen, TasksScreen)
        assert app.screen.crumb_text() == "Tasks failed"


async def test_unknown_command_and_bad_filter_are_explained(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """A typo names what is allowed, and the screen stays where it was."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "tasks broken")
        await command(pilot, "nope")
        messages = [n.message for n in app._notifications]
        assert any("'broken' is not a filter" in m and "failed" in m for m in messages)
        assert any("unknown command 'nope'" in m for m in messages)
        assert isinstance(app.screen, OverviewScreen)


async def test_pause_freezes_the_view_with_a_badge(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`p` shows PAUSED and the periodic refresh leaves the table as it was until `p` again."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("3")
        await settle(pilot)
        before = table(app).keys
        await pilot.press("p")
        assert app.paused and "PAUSED" in crumbs(app)
        await world.scheduler.tick()  # dispatches ready work: the data moves on
        await app._tick()
        assert table(app).keys == before
        await pilot.press("p")
        await settle(pilot)
        assert not app.paused and "PAUSED" not in crumbs(app)


async def test_help_lists_the_current_screens_keys(app_for: Callable[..., AgentdeckApp]) -> None:
    """`?` on a workflow shows its actions and the DAG keys."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await open_failed_etl_task(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.keys)
        assert keys["r"] == "Retry" and keys["f"] == "Failures only" and keys["space"]
        await pilot.press("escape")
        assert isinstance(app.screen, WorkflowScreen)


async def test_sort_keeps_the_cursor_on_the_same_row(app_for: Callable[..., AgentdeckApp]) -> None:
    """After a re-sort the cursor is still on the task it was on; unchanged data redraws nothing."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "tasks")
        t = table(app)
        t.move_cursor(row=3)
        on = t.cursor_key
        await pilot.press("s", "s", "s")  # sort by status
        assert t.sort_column == 2
        assert t.cursor_key == on
        statuses = [t.get_row(k)[3].plain for k in t.keys]  # type: ignore[union-attr]
        assert statuses == sorted(statuses)
        updates = t.cell_updates
        await app.refresh_now()
        assert t.cell_updates == updates


async def test_theme_switches_at_run_time(app_for: Callable[..., AgentdeckApp]) -> None:
    """`t` cycles dark → light → high-contrast; `:theme` picks one; colours follow the theme."""
    app = app_for(theme="light")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme_name == "light"
        await pilot.press("t")
        assert app.theme_name == "high-contrast"
        assert app.status_style("failed") == "#ff3030"
        await command(pilot, "theme dark")
        assert app.theme_name == "dark"


def test_themes_load_by_name_or_file_and_refuse_nonsense(tmp_path: Path) -> None:
    """Built-in themes load by name, a user theme from a file; a bad one is one clear error."""
    assert [load_theme(n)["name"] for n in BUILTIN] == list(BUILTIN)
    mine = tmp_path / "mine.toml"
    mine.write_text('primary = "#123456"\n[variables]\nstatus-failed = "#ff0000"\n')
    assert load_theme(str(mine))["variables"] == {"status-failed": "#ff0000"}
    with pytest.raises(ConfigError, match="'neon' is not a built-in theme"):
        load_theme("neon")
    mine.write_text('primary = "#123456"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="unknown field"):
        load_theme(str(mine))


async def test_a_vanished_workflow_is_reported_not_fatal(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`:wf` with an unknown id says so and keeps the app running."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "wf zzzz")
        assert any("no workflow or task 'zzzz'" in n.message for n in app._notifications)
        assert isinstance(app.screen, WorkflowsScreen)
        assert WF_DONE in table(app).keys


async def test_breakers_screen_lists_open_first_and_queues_a_reset(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`6` lists breakers open first; `c` asks, then queues a reset of the one under the cursor."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("6")
        await settle(pilot)
        assert isinstance(app.screen, BreakersScreen)
        assert table(app).keys == ["capability:chaos", "capability:echo"]
        await pilot.press("c")
        await pilot.pause()
        assert app.screen.question == "Reset closed breaker capability:chaos?"  # type: ignore[attr-defined]
        await pilot.press("y")
        await settle(pilot)
    newest = (await world.store.list_commands())[0]
    assert (newest.action, newest.target) == ("reset", "capability:chaos")


def test_dag_map_is_readable_for_5_and_for_500_tasks() -> None:
    """A level that fits shows one mark per task; a wider one shows counts per state."""
    from dataclasses import replace

    from agentdeck.tui.widgets.dag import render_map
    from tests.tui.conftest import START

    base = Task("w/a", "w", "a", "echo", T.SUCCEEDED, {}, (), 0, START, START)
    small = [replace(base, key=k, status=s) for k, s in (("a", T.SUCCEEDED), ("b", T.FAILED))]
    assert render_map(small, {"a": 0, "b": 1}, 80, lambda s: "").plain == "L0   ✓\nL1   ✗"
    wide = [
        replace(base, key=f"p{i:03}", status=T.FAILED if i < 3 else T.SUCCEEDED) for i in range(500)
    ]
    depth = {t.key: 1 for t in wide} | {"root": 0}
    text = render_map([replace(base, key="root"), *wide], depth, 80, lambda s: "").plain
    assert text.rstrip() == "L0   ✓\nL1   ✓497 ✗3"


def test_theme_is_a_setting() -> None:
    """`theme` comes from config/env like any setting and defaults to dark."""
    from agentdeck.core.settings import Settings

    assert Settings.load(config_path=None).theme == "dark"
    assert Settings.load(config_path=None, theme="high-contrast").theme == "high-contrast"


async def test_events_stream_counts_throughput_and_reports_command_results(world: World) -> None:
    """Task events feed the throughput sparklines; a command's outcome arrives as a notice."""
    import contextlib
    from collections.abc import AsyncIterator
    from dataclasses import replace

    from agentdeck.core.messages import Event, encode
    from tests.tui.conftest import START

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        yield replace(world.sources, events=world.bus.subscribe_events)

    app = AgentdeckApp(connect, refresh_interval=None)
    async with app.run_test(size=SIZE) as pilot:
        await app.connected.wait()
        for _ in range(20):  # let the follower subscribe before publishing
            await pilot.pause()
        for kind in ("succeeded", "succeeded", "failed"):
            data = {"task_id": "w/a", "kind": kind, "status": kind}
            await world.bus.publish_event(encode(Event(topic="task", at=START, data=data)))
        done = {"action": "retry", "target": "w/a", "status": "done", "result": "retrying 1"}
        await world.bus.publish_event(encode(Event(topic="command", at=START, data=done)))
        for _ in range(50):
            await pilot.pause()
            if app._notifications:
                break
        succeeded, failed = app.feed.rates()
        assert (succeeded[-1], failed[-1]) == (2, 1)
        assert [n.message for n in app._notifications] == ["retry w/a: retrying 1"]


async def test_command_palette_offers_the_screens_and_themes(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """The palette's commands open screens and switch themes."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        commands = {c.title: c.callback for c in app.get_system_commands(app.screen)}
        assert {"Overview", "Workflows", "Failed tasks", "Agents", "Action log", "Quit"} <= set(
            commands
        )
        commands["Theme: light"]()
        assert app.theme_name == "light"
        commands["Action log"]()
        await settle(pilot)
        assert isinstance(app.screen, ActionsScreen)


async def test_a_crash_shows_its_traceback_but_no_password(
    app_for: Callable[..., AgentdeckApp],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """An unhandled exception ends the app with its traceback, and no frame's local variables:
    they would print the URLs, passwords included, that the frames hold."""
    monkeypatch.setenv("CRASH_TEST_URL", "postgresql://deck:s3cret-pw@db.internal/agentdeck")

    def explode(self: HelpScreen) -> None:
        store_url = os.environ["CRASH_TEST_URL"]  # as a setting read from the environment
        raise RuntimeError(f"cannot reach the store at {store_url.split('@')[1]}")

    monkeypatch.setattr(HelpScreen, "on_mount", explode, raising=False)
    app = app_for()

    async def crash() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("question_mark")
            await pilot.pause()

    with pytest.raises(RuntimeError, match="cannot reach the store"):  # run_test re-raises it
        await crash()
    shown = capfd.readouterr().err  # what the operator's terminal got
    assert "Traceback" in shown and "in explode" in shown
    assert "cannot reach the store at db.internal/agentdeck" in shown
    assert "s3cret-pw" not in shown


async def test_the_program_moves_its_start_up_heap_out_of_the_collectors_way(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """Once connected, the program's app freezes what exists (full collections of it stalled
    the screen); an app built without ``freeze_heap`` (every other test) leaves the GC be."""
    import gc

    assert gc.get_freeze_count() == 0
    try:
        plain = app_for()
        async with plain.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert gc.get_freeze_count() == 0
        app = app_for(freeze_heap=True)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


async def test_notices_and_confirmations_show_brackets_as_written(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """An error text or a target holding ``[/]`` is shown as written (Textual would read it
    as markup and stop the app)."""
    from agentdeck.tui.screens.modals import ConfirmScreen

    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.notify("handler said: bad [/] input [red]")
        app.screen.notify("sorted by [/]")
        await pilot.pause()
        shown = [n.message for n in app._notifications]
        assert shown == ["handler said: bad [/] input [red]", "sorted by [/]"]
        app.push_screen(ConfirmScreen("retry [/]x?", ["w/[/]a", "w/[b]"]))
        await pilot.pause()
        await pilot.pause()
        text = " ".join(str(s.render()) for s in app.screen.query("Static"))
        assert "retry [/]x?" in text and "w/[/]a" in text and "w/[b]" in text
        assert app.is_running
