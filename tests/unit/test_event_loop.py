"""The command line runs on uvloop when it is installed (the ``fast`` extra), on asyncio's own
loop otherwise, and runs the same either way."""

from __future__ import annotations

import asyncio
import sys

import pytest

from agentdeck.tui.cli.output import loop_factory, run


def test_without_uvloop_the_command_line_uses_asyncio_s_own_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No uvloop: no factory, and a coroutine still runs to its result."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import raises ImportError
    assert loop_factory() is None

    async def loop_kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(loop_kind()).startswith("asyncio")


def test_with_uvloop_installed_its_loop_runs_the_commands() -> None:
    """uvloop installed: its loop runs the coroutine."""
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory() is uvloop.new_event_loop

    async def loop_kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(loop_kind()).startswith("uvloop")
