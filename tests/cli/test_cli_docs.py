"""docs/cli.md holds every command and option as the command line itself describes them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    """scripts/cli_docs.py, loaded as a module."""
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_in_docs_cli_md_is_what_the_command_line_says() -> None:
    """The generated block equals a fresh rendering of every command's --help (regenerate it
    with ``scripts/cli_docs.py --write`` after changing a command)."""
    docs = generator()
    text = docs.DOC.read_text()
    block = text.split(docs.BEGIN, 1)[1].split(docs.END, 1)[0].strip("\n")
    assert block == docs.reference()


def test_the_reference_covers_every_command_and_sub_command() -> None:
    """Each command and each sub-command of a group has its own section."""
    import click

    from agentdeck.tui.cli import main

    docs = generator()
    text = docs.DOC.read_text()
    assert isinstance(main, click.Group)
    for name, command in main.commands.items():
        assert f"### `agentdeck {name}`" in text
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert f"### `agentdeck {name} {sub}`" in text
