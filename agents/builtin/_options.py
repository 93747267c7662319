"""Checking a built-in agent's options: one clear ConfigError per bad option.

Each error names the agent kind, the option, the value given and what is allowed, and options
a kind does not know are refused (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agentdeck.core.errors import ConfigError
from agentdeck.core.models import JSON

_MISSING: Any = object()


class Options:
    """Typed reads from one agent's ``options`` mapping; call :meth:`done` after the last read."""

    def __init__(self, kind: str, options: Mapping[str, JSON] | None) -> None:
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(
                f"{kind} agent: options must be a table of name = value, "
                f"got {type(options).__name__}"
            )
        self.kind = kind
        self._given = dict(options or {})
        self._known: list[str] = []

    def _fail(self, name: str, value: Any, allowed: str, *, show: bool = True) -> ConfigError:
        shown = f"{value!r}" if show else f"a {type(value).__name__}"
        return ConfigError(f"{self.kind} agent: option {name!r} must be {allowed}, got {shown}")

    def _get(self, name: str, default: Any) -> Any:
        self._known.append(name)
        value = self._given.get(name, default)
        if value is _MISSING:
            raise ConfigError(f"{self.kind} agent: option {name!r} is required")
        return value

    def number(
        self,
        name: str,
        default: float = _MISSING,
        *,
        minimum: float = 0.0,
        maximum: float = math.inf,
        above: bool = False,
    ) -> float:
        """A finite number in ``[minimum, maximum]`` (``(minimum, maximum]`` with ``above``)."""
        value = self._get(name, default)
        low = f"> {minimum:g}" if above else f">= {minimum:g}"
        allowed = f"a number {low}" + (f" and <= {maximum:g}" if maximum < math.inf else "")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(name, value, allowed)
        if not math.isfinite(value) or value > maximum or value < minimum:
            raise self._fail(name, value, allowed)
        if above and value == minimum:
            raise self._fail(name, value, allowed)
        return float(value)

    def optional_number(
        self, name: str, *, minimum: float = 0.0, maximum: float = math.inf
    ) -> float | None:
        """A finite number in ``[minimum, maximum]``, or None when the option is absent."""
        if name not in self._given:
            self._known.append(name)
            return None
        return self.number(name, minimum=minimum, maximum=maximum)

    def integer(self, name: str, default: int = _MISSING, *, minimum: int = 0) -> int:
        """A whole number ``>= minimum``."""
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(name, value, f"a whole number >= {minimum}")
        return int(value)

    def boolean(self, name: str, default: bool = _MISSING) -> bool:
        """``true`` or ``false``."""
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self._fail(name, value, "true or false")
        return value

    def string(self, name: str, default: str = _MISSING) -> str:
        """A non-empty string."""
        value = self._get(name, default)
        if not isinstance(value, str) or not value:
            raise self._fail(name, value, "a non-empty string")
        return value

    def optional_string(self, name: str) -> str | None:
        """A non-empty string, or None when the option is absent."""
        if name not in self._given:
            self._known.append(name)
            return None
        return self.string(name)

    def choice(self, name: str, allowed: tuple[str, ...], default: str = _MISSING) -> str:
        """One of ``allowed``."""
        value = self._get(name, default)
        if value not in allowed:
            raise self._fail(name, value, "one of " + ", ".join(repr(a) for a in allowed))
        return str(value)

    def string_list(self, name: str, default: list[str] = _MISSING) -> list[str]:
        """A non-empty list of strings."""
        value = self._get(name, default)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) for item in value)
        ):
            raise self._fail(name, value, "a non-empty list of strings")
        return list(value)

    def optional_string_list(self, name: str) -> list[str] | None:
        """A non-empty list of strings, or None when the option is absent."""
        if name not in self._given:
            self._known.append(name)
            return None
        return self.string_list(name)

    def string_map(self, name: str, *, secret: bool = False) -> dict[str, str]:
        """A table of string names to string values (empty when absent). With ``secret`` the
        values are never shown in an error (they may be tokens)."""
        value = self._get(name, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self._fail(
                name, value, "a table of string names to string values", show=not secret
            )
        return dict(value)

    def done(self) -> None:
        """Refuse options this agent kind does not know."""
        unknown = sorted(set(self._given) - set(self._known))
        if unknown:
            allowed = ", ".join(sorted(set(self._known))) or "none"
            raise ConfigError(
                f"{self.kind} agent: unknown option(s) {', '.join(map(repr, unknown))} "
                f"(allowed: {allowed})"
            )
