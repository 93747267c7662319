"""Holds shown the same way everywhere: the capabilities screen, ``agentdeck holds`` and
``agentdeck show`` of a held task all put a :class:`core.holds.Hold` through these functions
(DESIGN §9: one table of holds). No Textual, no rich: the command line imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentdeck.core.clock import Clock
from agentdeck.core.holds import BreakerPolicies, CapabilityHolds, Hold, breaker_policies
from agentdeck.core.ports import Registry
from agentdeck.core.settings import BreakerSettings
from agentdeck.tui.table import format_table, when

#: The columns of the one table of holds, in order.
COLUMNS = ("capability", "kind", "reason", "since", "until", "left")


def policies_of(breakers: BreakerSettings) -> BreakerPolicies | None:
    """Each capability's breaker policy as the ``[breakers]`` settings give it (None when they
    are turned off: then no breaker hold is listed)."""
    return breaker_policies(breakers.default, breakers.capabilities) if breakers.enabled else None


def reader(registry: Registry, clock: Clock, breakers: BreakerSettings) -> CapabilityHolds:
    """The holds in force, read afresh each time, breakers judged by the ``[breakers]``
    settings."""
    return CapabilityHolds(registry, clock, refresh=0, breakers=policies_of(breakers))


def left(hold: Hold, now: float) -> str:
    """The time left: ``42s``, ``3m05s``, ``1h02m``; when no time ends it, what does (``until
    resumed``, ``until reset``, ``trial ok``)."""
    if hold.until is None:
        return hold.ends
    secs = max(0, round(hold.until - now))
    if secs >= 3600:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    if secs >= 60:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs}s"


def hold_row(hold: Hold, now: float) -> tuple[str, ...]:
    """One hold as the cells of :data:`COLUMNS`."""
    return (
        hold.capability,
        hold.kind,
        hold.reason,
        when(hold.since),
        when(hold.until),
        left(hold, now),
    )


def hold_json(hold: Hold, now: float) -> dict[str, Any]:
    """One hold as JSON data (``left_seconds`` null when only an operator ends it)."""
    return {
        "capability": hold.capability,
        "kind": hold.kind,
        "reason": hold.reason,
        "since": hold.since,
        "until": hold.until,
        "left_seconds": None if hold.until is None else max(0.0, hold.until - now),
        "ends": hold.ends if hold.until is None else None,
    }


def hold_line(hold: Hold, now: float) -> str:
    """One hold in a sentence: ``echo rate_limited: 429 from the provider (until 2026-12-07
    10:00:42, 42s left)``."""
    end = hold.ends if hold.until is None else f"until {when(hold.until)}, {left(hold, now)} left"
    return f"{hold.capability} {hold.kind}: {hold.reason} ({end})"


def holds_table(holds: Sequence[Hold], now: float) -> str:
    """The one table of holds, as plain text (``(none)`` when nothing is held)."""
    return format_table(COLUMNS, [hold_row(h, now) for h in holds])
