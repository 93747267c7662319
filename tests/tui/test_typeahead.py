"""No key is lost and none goes to the wrong item: keys typed ahead in one burst (a paste, keys
arriving together over a slow SSH link) reach the widget that was to receive them, in order."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual import events
from textual.pilot import Pilot

from agentdeck.core.spec import SpecLimits, build, parse_spec
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.keys import Hold, KeyGate, key_name, pasted_keys
from agentdeck.tui.screens.agents import AgentsScreen
from agentdeck.tui.screens.modals import ConfirmScreen, HelpScreen
from agentdeck.tui.screens.overview import OverviewScreen
from agentdeck.tui.screens.tasks import TasksScreen
from agentdeck.tui.screens.workflows import WorkflowScreen, WorkflowsScreen
from agentdeck.tui.widgets.command_line import CommandLine
from tests.tui.conftest import WF_DONE, WF_FAILED, WF_RUNNING, World
from tests.tui.test_app import SIZE, ready, settle, table

pytestmark = pytest.mark.tui


async def burst(pilot: Pilot[None], text: str) -> None:
    """Type ``text`` as the terminal's reader delivers a burst: every key queued before the
    first is handled (``pilot.press`` waits for the app between keys); then let it settle."""
    app = pilot.app
    assert isinstance(app, AgentdeckApp)
    keys, before = pasted_keys(text), app.keys.delivered
    for name, char in keys:
        key = events.Key(name, char)
        key.set_sender(app)
        app.post_message(key)
    await typed(pilot, before + len(keys))


async def typed(pilot: Pilot[None], delivered: int) -> None:
    """Until the app has handled ``delivered`` keys in all and holds none (a loaded machine
    may take a while), then until it has settled."""
    app = pilot.app
    assert isinstance(app, AgentdeckApp)
    for _ in range(500):
        await pilot.pause()
        if app.keys.delivered >= delivered and app.keys.idle:
            break
    assert app.keys.delivered >= delivered and app.keys.idle, f"keys still waiting: {app.keys}"
    await settle(pilot)


# ------------------------------------------------------------------------- the key gate


def test_keys_are_taken_one_at_a_time_in_order() -> None:
    """The next key waits until the one in flight made its laps; order is kept."""
    gate: KeyGate[str] = KeyGate(min_laps=2)
    for key in "abc":
        gate.offer(key)
    assert gate.take() == "a"
    assert gate.take() is None  # "a" is in flight
    gate.lap_sent(0.0)
    assert gate.lap_back(view_changed=False) == "lap"  # one lap is not enough
    gate.lap_sent(0.0)
    assert gate.lap_back(view_changed=False) == "take"
    assert [gate.take(), gate.take()] == ["b", None]
    assert gate.delivered == 1


def test_a_key_typed_into_a_text_field_needs_no_lap() -> None:
    """Handled at once (the field takes it, and what follows queues behind it there)."""
    gate: KeyGate[str] = KeyGate()
    gate.offer("a")
    gate.offer("b")
    assert gate.take() == "a"
    gate.handled()
    assert (gate.take(), gate.delivered) == ("b", 1)


def test_a_changing_view_or_a_hold_keeps_the_key_in_flight() -> None:
    """While the focus moves, or a handover holds the keys, the next key waits."""
    gate: KeyGate[str] = KeyGate(min_laps=1, max_laps=5)
    gate.offer("a")
    gate.offer("b")
    assert gate.take() == "a"
    gate.lap_sent(0.0)
    assert gate.lap_back(view_changed=True) == "lap"
    gate.lap_sent(0.0)
    hold = gate.hold("open", 0.0)
    assert gate.lap_back(view_changed=False) == "wait"
    assert gate.take() is None
    assert gate.release(hold) == "lap"  # the handover done: one more lap, then the next key
    gate.lap_sent(0.0)
    assert gate.lap_back(view_changed=False) == "take"
    assert gate.take() == "b"


def test_a_hold_with_no_key_in_flight_stops_the_next_key() -> None:
    """A reload under way holds keys typed meanwhile; released, they go on."""
    gate: KeyGate[str] = KeyGate()
    hold = gate.hold("reload", 0.0)
    gate.offer("j")
    assert gate.take() is None
    assert gate.release(hold) == "take"
    assert gate.release(hold) == "take"  # twice is harmless
    assert gate.take() == "j"


def test_nothing_waits_for_ever() -> None:
    """A lap lost with its widget counts as back after the limit; a forgotten hold expires."""
    gate: KeyGate[str] = KeyGate(min_laps=1, lap_limit=1.0, hold_limit=5.0)
    gate.offer("a")
    gate.offer("b")
    assert gate.take() == "a"
    gate.lap_sent(10.0)
    assert gate.overdue(10.5) is None
    assert gate.overdue(11.0) == "take"
    assert gate.laps_lost == 1
    gate.hold("open", 11.0)
    assert gate.take() is None
    assert gate.expired_reasons(15.9) == []
    assert gate.expired_reasons(16.0) == ["open"]
    assert gate.overdue(16.0) == "take"
    assert (gate.holds_expired, gate.take()) == (1, "b")


def test_max_laps_bounds_a_view_that_never_settles() -> None:
    """A focus that keeps moving does not stop the keyboard: after max_laps the key is done."""
    gate: KeyGate[str] = KeyGate(min_laps=1, max_laps=3)
    gate.offer("a")
    gate.take()
    steps = []
    for _ in range(3):
        gate.lap_sent(0.0)
        steps.append(gate.lap_back(view_changed=True))
    assert steps == ["lap", "lap", "take"]


def test_pasted_text_is_named_as_the_terminal_names_its_keys() -> None:
    """``:``, ``/``, space, newline and letters become Textual's key names."""
    assert [key_name(c) for c in ":/? \n\tx7-@"] == [
        "colon",
        "slash",
        "question_mark",
        "space",
        "enter",
        "tab",
        "x",
        "7",
        "minus",
        "at",
    ]
    assert pasted_keys("a\r\nb") == [("a", "a"), ("enter", None), ("b", "b")]
    assert isinstance(Hold("x", 1.0).since, float)


# ---------------------------------------------------------------------- in the control centre


async def test_colon_tasks_enter_in_one_burst_opens_the_tasks_screen(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """`:tasks` + Enter as one burst: the keys after `:` reach the command line (the `t` does
    not switch the theme), Enter runs it."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        theme = app.theme
        await burst(pilot, ":tasks\n")
        assert isinstance(app.screen, TasksScreen)
        assert app.theme == theme
        assert not app.screen.query_one(CommandLine).has_class("-open")


async def test_pilot_presses_without_pauses_reach_the_command_line(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """The same typed with Pilot's presses and no pause between them."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press(":", "t", "a", "s", "k", "s", "enter")
        await settle(pilot)
        assert isinstance(app.screen, TasksScreen)


async def test_a_whole_retry_sequence_in_one_burst(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`2`, Enter, `n`, `r`, `y` in one burst: the workflows list, the failed workflow's DAG,
    its failure, the confirmation, yes: the retry hits the failed task and nothing else."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await burst(pilot, "2\nnry")
        assert isinstance(app.screen, WorkflowScreen)
        assert app.screen.workflow_id == WF_FAILED
        commands = [c for c in await world.store.list_commands() if c.action != "pause"]
        assert [(c.action, c.target) for c in commands] == [("retry", f"{WF_FAILED}/transform")]


async def test_a_filter_then_an_action_in_one_burst_hits_the_filtered_row(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`:tasks`, `/transform`, Enter, `r`: the confirmation names the one row left."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await burst(pilot, ":tasks\n/transform\nr")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == f"Retry task {WF_FAILED}/transform?"


async def test_completion_is_taken_from_what_was_typed_in_the_burst(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """`:age` + Enter typed at once runs the completion of `age`, not of a shorter prefix."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await burst(pilot, ":age\n")
        assert isinstance(app.screen, AgentsScreen)


async def test_help_and_back_and_escape_in_one_burst(app_for: Callable[..., AgentdeckApp]) -> None:
    """`?` then `q` closes the help (and does not quit); drill down and Esc back, typed ahead."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await burst(pilot, "?")
        assert isinstance(app.screen, HelpScreen)
        await burst(pilot, "q2\n\x1b")
        assert app.is_running
        assert isinstance(app.screen, WorkflowsScreen)


async def test_a_paste_types_its_keys_in_order(app_for: Callable[..., AgentdeckApp]) -> None:
    """A bracketed paste of `:agents` + newline is the keys that type it."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        before = app.keys.delivered
        app.post_message(events.Paste(":agents\n"))
        await typed(pilot, before + len(":agents\n"))
        assert isinstance(app.screen, AgentsScreen)
        await burst(pilot, "1")
        assert isinstance(app.screen, OverviewScreen)


async def test_the_cursor_stays_on_its_item_and_the_confirmation_names_it(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Rows arrive above the cursor: it stays on its workflow; the confirmation names that
    workflow, and rows arriving while it is open do not change what yes hits."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await burst(pilot, "2jj")
        assert table(app).cursor_key == WF_DONE
        await _new_workflow(world, "a00000000001")
        await app.refresh_now()
        assert table(app).keys[0] == "a00000000001"
        assert table(app).cursor_key == WF_DONE
        await burst(pilot, "x")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == f"Cancel workflow {WF_DONE}?"
        await _new_workflow(world, "a00000000002")
        await burst(pilot, "y")
    cancels = [c.target for c in await world.store.list_commands() if c.action == "cancel"]
    assert cancels == [WF_DONE]
    assert WF_RUNNING not in cancels


async def _new_workflow(world: World, workflow_id: str) -> None:
    world.clock.advance(60)
    spec = parse_spec("name: late\ntasks:\n  - {key: a, capability: echo}\n", limits=SpecLimits())
    workflow, tasks = build(spec, workflow_id=workflow_id, now=world.clock.now())
    await world.store.create_workflow(workflow, tasks)
