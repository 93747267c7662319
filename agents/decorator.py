"""Writing your own agent: the ``@agent`` decorator, and loading callables by dotted path.

A user module declares its agents with a decorator::

    from agentdeck.agents import agent

    @agent("summarise", concurrency=4)
    async def summarise(ctx):
        return {"words": len(ctx.input["text"].split())}

Importing the module records each one in :data:`AGENTS`, where the command line (``agentdeck
agent --module my.agents``) and the ``python`` built-in find them. Plain ``def`` functions work
too; they run in a worker thread so they cannot stall the event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from agentdeck.agents.context import Handler
from agentdeck.core.errors import ConfigError
from agentdeck.core.models import JSON
from agentdeck.core.spec import CAPABILITY_PATTERN, check_name

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class AgentDef:
    """An agent declared with :func:`agent`: its capability, its slots and its handler."""

    capability: str
    concurrency: int
    handler: Handler
    """The function as an async handler (sync functions wrapped to run in a thread)."""
    func: Callable[..., Any]
    """The function as written, for display and identity."""

    @property
    def qualname(self) -> str:
        """``module:function`` of the declared function."""
        return f"{self.func.__module__}:{self.func.__qualname__}"


AGENTS: dict[str, AgentDef] = {}
"""Every agent declared with :func:`agent` so far in this process, by capability."""


def to_async(func: Callable[[Any], Any]) -> Callable[[Any], Awaitable[JSON]]:
    """``func`` as a coroutine function: async ones as they are, sync ones in a thread.

    A sync function cannot be interrupted: on timeout or cancel the attempt ends at once, but
    the thread runs on until the function returns (Python has no way to stop a thread).
    """
    if inspect.iscoroutinefunction(func):
        return func

    @wraps(func)
    async def in_thread(arg: Any) -> JSON:
        return await asyncio.to_thread(func, arg)

    return in_thread


def agent(
    capability: str,
    *,
    concurrency: int = 1,
    into: MutableMapping[str, AgentDef] | None = None,
) -> Callable[[F], F]:
    """Declare the decorated function as the handler of ``capability``.

    ``concurrency`` is how many of its tasks may run at once. ``into`` is the collection to
    record it in (default :data:`AGENTS`; tests pass their own). The function is returned
    unchanged, so it stays callable and testable on its own. Raises ConfigError for a bad
    capability name or concurrency, or when another function already serves ``capability``.
    """
    try:
        check_name("capability", capability, CAPABILITY_PATTERN)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(
            f"@agent({capability!r}): concurrency must be a whole number >= 1, got {concurrency!r}"
        )
    collection = AGENTS if into is None else into

    def decorate(func: F) -> F:
        if not callable(func):
            raise ConfigError(f"@agent({capability!r}) must decorate a function, got {func!r}")
        new = AgentDef(capability, concurrency, to_async(func), func)
        old = collection.get(capability)
        # Re-importing a module (reloads, tests) declares the same function again: not a clash.
        if old is not None and old.qualname != new.qualname:
            raise ConfigError(
                f"capability {capability!r} is served by both {old.qualname} and {new.qualname}; "
                "each capability may have one handler"
            )
        collection[capability] = new
        return func

    return decorate


def load_callable(path: str) -> Callable[..., Any]:
    """The callable named by ``path``: ``"pkg.mod:func"`` (or ``"pkg.mod:Class.method"``) or
    ``"pkg.mod.func"``. Raises ConfigError naming what is missing or wrong."""
    module_name, attr = _split_path(path)
    module = _import(module_name, path)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"callable {path!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(target):
        raise ConfigError(
            f"callable {path!r} is a {type(target).__name__}, not a function or other callable"
        )
    return target  # type: ignore[no-any-return]


def import_agents(modules: Iterable[str]) -> dict[str, AgentDef]:
    """Import each module so its ``@agent`` declarations run; return :data:`AGENTS`.

    Raises ConfigError when a module cannot be imported.
    """
    for name in modules:
        _import(name, name)
    return dict(AGENTS)


_PATH_RE = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?")


def _split_path(path: str) -> tuple[str, str]:
    if not isinstance(path, str) or not _PATH_RE.fullmatch(path) or ".." in path:
        raise ConfigError(
            f"callable {path!r} is not a dotted path; write 'package.module:function' "
            "or 'package.module.function'"
        )
    if ":" in path:
        module_name, attr = path.split(":", 1)
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr or module_name.endswith(".") or attr.endswith("."):
        raise ConfigError(
            f"callable {path!r} names no function; write 'package.module:function' "
            "or 'package.module.function'"
        )
    return module_name, attr


def _import(module_name: str, wanted: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{wanted!r}: cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:
        # A module that raises while importing is a broken config from our point of view; the
        # chained exception keeps its traceback for whoever debugs it.
        raise ConfigError(
            f"{wanted!r}: importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


__all__ = [
    "AGENTS",
    "AgentDef",
    "agent",
    "import_agents",
    "load_callable",
    "to_async",
]
