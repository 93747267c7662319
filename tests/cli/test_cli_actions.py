"""The command line's action commands are the actions table's rows, one command each."""

from __future__ import annotations

import dataclasses

import click
import pytest

from agentdeck.core.actions import ACTIONS, Action
from agentdeck.tui.cli import main
from agentdeck.tui.cli.actions import group_for


def _command(group: str | None, name: str) -> click.Command:
    parent = main if group is None else main.commands[group]
    assert isinstance(parent, click.Group)
    return parent.commands[name]


def test_every_action_is_one_command_in_its_group_with_its_help_and_metavar() -> None:
    """`agentdeck retry`, `agentdeck breaker trip`, ...: help and target name from the row."""
    for action, spec in ACTIONS.items():
        command = _command(spec.group, action.value)
        assert command.help == spec.help
        target = next(p for p in command.params if isinstance(p, click.Argument))
        optional = spec.default_target is not None
        assert target.metavar == (f"[{spec.metavar}]" if optional else spec.metavar), action
        assert (target.required, target.default) == (not optional, spec.default_target), action
        assert {"no_wait", "timeout", "as_json"} <= {p.name for p in command.params}
    assert _command("breaker", "trip").help == ACTIONS[Action.TRIP].help


def test_an_action_naming_an_unknown_group_is_refused() -> None:
    """A row whose group the command line lacks fails loudly, naming the groups it has."""
    bad = dataclasses.replace(ACTIONS[Action.TRIP], group="fuse")
    with pytest.raises(LookupError, match="'fuse'; known: breaker"):
        group_for(bad)
