"""Themes: the built-in ones, one picked in config, switched at run time, and user theme files.

A user theme file is a TOML file of Textual theme fields; a bad one is refused with one error
naming the file, the field and the bad value, whether it comes from config or from ``:theme``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agentdeck.core.errors import ConfigError
from agentdeck.core.settings import Settings
from agentdeck.themes import BUILTIN, load_theme
from agentdeck.tui.app import AgentdeckApp, is_colour
from agentdeck.tui.compose import control_centre
from agentdeck.tui.run import run_app
from tests.tui.test_app import SIZE, command, ready

pytestmark = pytest.mark.tui

MINE = 'name = "mine"\nprimary = "#123456"\n[variables]\nstatus-failed = "#ff0000"\n'


def test_every_builtin_theme_loads_and_has_valid_colours() -> None:
    """dark, light and high-contrast load by name and every colour in them parses."""
    for name in BUILTIN:
        theme = load_theme(name, is_colour)
        assert theme["name"] == name
        assert theme["variables"]["status-failed"]


def test_config_picks_the_theme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`theme = "light"` in agentdeck.toml sets the theme; AGENTDECK_THEME overrides it."""
    config = tmp_path / "agentdeck.toml"
    config.write_text('theme = "light"\n')
    monkeypatch.delenv("AGENTDECK_THEME", raising=False)
    assert Settings.load(config_path=config).theme == "light"
    monkeypatch.setenv("AGENTDECK_THEME", "high-contrast")
    assert Settings.load(config_path=config).theme == "high-contrast"


async def test_the_configured_theme_is_on_screen_and_switches_at_run_time(
    app_for: Callable[..., AgentdeckApp],
) -> None:
    """Started in light; `t` moves on, `:theme` picks one, and the state colours follow."""
    app = app_for(theme="light")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert (app.theme_name, app.theme) == ("light", "agentdeck-light")
        await pilot.press("t")
        assert app.theme_name == "high-contrast"
        assert (
            app.status_style("failed") == load_theme("high-contrast")["variables"]["status-failed"]
        )
        await command(pilot, "theme dark")
        assert app.theme_name == "dark"
        assert app.status_style("failed") == load_theme("dark")["variables"]["status-failed"]


async def test_a_user_theme_file_loads_from_config_and_at_run_time(
    tmp_path: Path, app_for: Callable[..., AgentdeckApp]
) -> None:
    """A theme file given as the configured theme is on screen; `:theme <file>` loads another,
    and both join the themes `t` cycles through."""
    mine = tmp_path / "mine.toml"
    mine.write_text(MINE)
    other = tmp_path / "other.toml"
    other.write_text('primary = "#abcdef"\n[variables]\nstatus-failed = "rgb(1,2,3)"\n')
    app = app_for(theme=str(mine))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme_name == "mine"
        assert app.status_style("failed") == "#ff0000"
        await command(pilot, f"theme {other}")
        assert app.theme_name == "other"  # named after the file when it has no name
        assert app.status_style("failed") == "rgb(1,2,3)"
        seen = set()
        for _ in range(len(BUILTIN) + 2):
            await pilot.press("t")
            seen.add(app.theme_name)
        assert seen == {*BUILTIN, "mine", "other"}


BAD = {
    "a colour that is not one": ('primary = "notacolour"\n', "primary = 'notacolour'"),
    "a state colour that is not one": (
        'primary = "#123456"\n[variables]\nstatus-failed = "blorp"\n',
        "variables.status-failed = 'blorp'",
    ),
    "a number for a colour": ("primary = 5\n", "primary = 5"),
    "a CSS colour a style cannot read": (
        'primary = "#123456"\n[variables]\nstatus-failed = "rgb(1, 2, 3)"\n',
        "variables.status-failed = 'rgb(1, 2, 3)' is not a colour; use",
    ),
    "dark that is not true or false": (
        'primary = "#123456"\ndark = "yes"\n',
        "dark = 'yes' is not allowed; use true or false",
    ),
    "variables that are not a table": (
        'primary = "#123456"\nvariables = "red"\n',
        "variables must be a table",
    ),
    "an unknown field": ('primary = "#123456"\ncolour = "red"\n', "unknown field(s) colour"),
    "no primary": ('background = "#000000"\n', "must set at least 'primary'"),
    "broken TOML": ('primary = "#12\n', "cannot be read"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_theme_file_is_one_error_naming_the_file_and_the_bad_value(
    case: str, tmp_path: Path
) -> None:
    """Every way a theme file can be wrong reads as one ConfigError that names the file and
    what is wrong in it."""
    text, says = BAD[case]
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_theme(str(bad), is_colour)
    message = str(caught.value)
    assert str(bad) in message
    assert says in message


def test_a_name_that_is_no_theme_says_what_is_allowed() -> None:
    """Neither a built-in name nor a file: the error lists the built-in themes."""
    with pytest.raises(ConfigError, match="'neon' is not a built-in theme \\(dark, light"):
        load_theme("neon", is_colour)


def test_a_bad_configured_theme_stops_the_app_before_the_screen_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agentdeck` with a bad theme file in config exits 2 with the error, drawing nothing."""
    bad = tmp_path / "bad.toml"
    bad.write_text('primary = "notacolour"\n')
    settings = Settings.load(config_path=None, theme=str(bad), home=tmp_path / "home")
    with pytest.raises(SystemExit) as exited:
        run_app(settings, control_centre(settings), read_only=False)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1
    assert f"{bad}" in err
    assert "primary = 'notacolour' is not a colour" in err
    assert not (tmp_path / "home").exists()


async def test_a_bad_theme_file_at_run_time_is_one_notice_and_keeps_the_theme(
    tmp_path: Path, app_for: Callable[..., AgentdeckApp]
) -> None:
    """`:theme bad.toml` names the file and the bad value, and the current theme stays."""
    bad = tmp_path / "bad.toml"
    bad.write_text('primary = "#123456"\n[variables]\nstatus-failed = "blorp"\n')
    app = app_for(theme="light")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await command(pilot, f"theme {bad}")
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert len(errors) == 1
        assert str(bad) in errors[0]
        assert "variables.status-failed = 'blorp' is not a colour" in errors[0]
        assert app.theme_name == "light"
