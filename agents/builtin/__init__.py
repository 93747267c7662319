"""The built-in agents, by kind, and :func:`build` to make one from its options.

Each kind is one small module with a factory ``make(options) -> Handler`` that checks its
options and raises :class:`core.errors.ConfigError` naming any bad one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agentdeck.agents.builtin import (
    anthropic_api,
    chaos,
    claude,
    echo,
    http,
    python,
    shell,
    sleep,
)
from agentdeck.agents.context import Handler
from agentdeck.core.errors import ConfigError
from agentdeck.core.models import JSON

Factory = Callable[[Mapping[str, JSON]], Handler]

BUILTINS: dict[str, Factory] = {
    "echo": echo.make,
    "sleep": sleep.make,
    "chaos": chaos.make,
    "shell": shell.make,
    "http": http.make,
    "python": python.make,
    "claude": claude.make,
    "anthropic": anthropic_api.make,
}
"""Every built-in agent kind and its factory."""


def build(kind: str, options: Mapping[str, JSON] | None = None) -> Handler:
    """The handler of built-in ``kind`` made with ``options``. Raises ConfigError for an unknown
    kind (listing the known ones) or a bad option."""
    try:
        factory = BUILTINS[kind]
    except KeyError:
        raise ConfigError(
            f"unknown agent kind {kind!r}; the built-in kinds are {', '.join(BUILTINS)}"
        ) from None
    return factory(options or {})
