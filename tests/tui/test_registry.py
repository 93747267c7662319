"""One table per vocabulary: the screen registry and the actions table drive every place that
names a screen or an action (keys, `:`, completion, palette, help, confirmations, read-only)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pytest

from agentdeck.core.actions import ACTIONS, Action
from agentdeck.core.errors import AgentdeckError
from agentdeck.themes import BUILTIN
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.screens import registry
from agentdeck.tui.screens.base import MUTATING, DeckScreen, screen_action
from agentdeck.tui.screens.logs import LogsScreen
from agentdeck.tui.screens.modals import HelpScreen
from agentdeck.tui.screens.tasks import TaskScreen, TasksScreen
from agentdeck.tui.screens.traces import TraceScreen
from agentdeck.tui.screens.workflows import WorkflowScreen
from tests.tui.test_app import SIZE, ready, settle

pytestmark = pytest.mark.tui

#: Every screen class an operator reaches: the registry's and the ones opened from them.
ALL_SCREENS = (*(s.screen for s in registry.SCREENS), WorkflowScreen, TaskScreen, TraceScreen)


def _bound_actions() -> set[str]:
    return {
        binding.action.partition("(")[0]
        for screen in ALL_SCREENS
        for binding in screen.BINDINGS
        if not isinstance(binding, tuple)
    }


def test_every_operator_action_has_a_key_on_some_screen() -> None:
    """Each row of the actions table is bound on a screen (pause and resume by one toggle)."""
    bound = _bound_actions()
    missing = {
        a
        for a in Action
        if screen_action(a) not in bound
        and not (a in (Action.PAUSE, Action.RESUME) and "pause_resume" in bound)
    }
    assert missing == set()


def test_read_only_covers_every_bound_mutating_action_and_nothing_else() -> None:
    """MUTATING, derived from the table, holds each bound key that changes something; the
    navigation keys (logs, trace, follow...) stay."""
    bound = _bound_actions()
    mutating = {screen_action(a) for a, spec in ACTIONS.items() if spec.mutating}
    assert mutating <= MUTATING
    assert {"logs", "trace", "follow", "errors", "failures", "back"} & MUTATING == set()
    assert MUTATING - mutating == {"pause_resume", "tag", "clear_tags"}
    assert bound >= MUTATING - {"pause", "resume"}  # (bound as one toggle: pause_resume)


def test_each_screen_is_found_by_each_of_its_words() -> None:
    """`:word` opens the screen of the row that lists the word, whatever its case."""
    for spec in registry.SCREENS:
        for word in spec.words:
            goto = registry.find(word.upper(), [])
            assert goto is not None and type(goto.screen) is spec.screen, word
    assert registry.find("nonsense", []) is None


def test_screen_arguments_are_read_by_the_screen() -> None:
    """`:tasks failed cap=echo`, `:logs level=error` and `:wf <id>` carry their arguments; a
    bad one is one error naming it and what is allowed."""
    tasks = registry.find("tasks", ["failed", "cap=echo"])
    assert tasks is not None and isinstance(tasks.screen, TasksScreen)
    assert tasks.screen.crumb_text() == "Tasks failed cap=echo"
    logs = registry.find("logs", ["level=error"])
    assert logs is not None and isinstance(logs.screen, LogsScreen) and logs.screen.level == "error"
    wf = registry.find("wf", ["abc"])
    assert wf is not None and wf.target == "abc"
    with pytest.raises(AgentdeckError, match=r"'bogus' is not a filter; use a status \(blocked"):
        registry.find("tasks", ["bogus"])
    with pytest.raises(AgentdeckError, match=re.escape("level=<debug|info|warning|error>")):
        registry.find("logs", ["level=loud"])


def test_help_palette_and_completion_name_every_screen() -> None:
    """The help's key lines hold every key and title once; the palette every title; the
    completion every screen's first word, then help, the themes, reload and quit."""
    assert registry.key_help() == [
        ("1-6", "Overview, workflows, tasks, agents, action log, breakers"),
        ("7 8 9 0", "Capabilities, dead letters, logs, traces"),
    ]
    titles = [entry.title for entry in registry.palette()]
    assert [s.title for s in registry.SCREENS] == [t for t in titles if t != "Failed tasks"]
    words = registry.completions(BUILTIN)
    assert [s.words[0] for s in registry.SCREENS] == [
        w for w in words if w in {s.words[0] for s in registry.SCREENS}
    ]
    assert words[-6:] == ["help", *(f"theme {t}" for t in BUILTIN), "reload", "quit"]
    assert all(len(line) <= 58 for line in registry.command_help())
    assert " ".join(registry.command_help()) == ", ".join(registry.command_usage())


def test_key_runs_read_as_ranges_only_when_consecutive() -> None:
    """Three or more consecutive digits are a range; anything else is listed."""
    assert registry.keys_label(["1", "2", "3"]) == "1-3"
    assert registry.keys_label(["7", "8", "9", "0"]) == "7 8 9 0"
    assert registry.keys_label(["1", "2"]) == "1 2"
    assert registry.keys_label(["a", "b", "c"]) == "a b c"


def test_app_keys_are_the_registrys() -> None:
    """The app binds each screen's key to a jump to it, with its title."""
    bindings = {b.key: b for b in AgentdeckApp.BINDINGS if not isinstance(b, tuple)}
    for spec in registry.SCREENS:
        assert bindings[spec.key].action == f"goto('{spec.name}')"
        assert bindings[spec.key].description == spec.title


async def test_each_key_and_palette_entry_opens_its_screen(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """Pressing a screen's key, or picking its palette entry, shows that screen."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for spec in registry.SCREENS:
            await pilot.press(spec.key)
            await settle(pilot)
            assert type(app.screen) is spec.screen, spec.name
        palette = {c.title: c.callback for c in app.get_system_commands(app.screen)}
        for spec in reversed(registry.SCREENS):
            palette[spec.title]()
            await settle(pilot)
            assert type(app.screen) is spec.screen, spec.title


async def test_help_shows_the_registrys_commands(app_for: Callable[..., AgentdeckApp]) -> None:
    """`?` lists the screen keys and the `:` commands as the registry spells them."""
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert app.screen.commands == registry.command_help()
        assert set(registry.key_help()) <= set(app.screen.keys)


def test_screens_stand_on_public_ground() -> None:
    """No screen reaches for the app's class: they read the Deck protocol and post messages."""
    for screen in ALL_SCREENS:
        source = inspect.getsource(inspect.getmodule(screen))  # type: ignore[arg-type]
        assert "agentdeck.tui.app" not in source, screen.__name__
        assert "push_screen" not in source and ".drill(" not in source, screen.__name__
    assert issubclass(TasksScreen, DeckScreen)
