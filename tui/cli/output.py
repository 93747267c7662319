"""How the command line answers: plain tables for people, ``--json`` for scripts, errors as one
line on stderr with a non-zero exit code."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict, is_dataclass
from enum import Enum
from typing import Any, NoReturn, TypeVar

import click

from agentdeck.core.errors import AgentdeckError
from agentdeck.tui.table import format_table

R = TypeVar("R")
EXIT_ERROR = 1
EXIT_USAGE = 2


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses as dicts, enums as their values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    click.echo(json.dumps(jsonable(value), indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the ``fast`` extra: less CPU per message for
    the daemon and agents, docs/performance.md), else None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine (on uvloop when installed); AgentdeckErrors become one line on stderr
    and exit code 1."""
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(coro)
    except AgentdeckError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)


def tasks_table(tasks: list[Any]) -> str:
    """Tasks as a table: id, capability, status, attempt, agent, and output or error."""
    return format_table(
        ["task", "capability", "status", "attempt", "agent", "output / error"],
        [
            [
                t.id,
                t.capability,
                t.status.value,
                t.attempt,
                t.agent_id,
                (f"{t.error.kind}: {t.error.message}" if t.error else json.dumps(t.output)),
            ]
            for t in tasks
        ],
    )
