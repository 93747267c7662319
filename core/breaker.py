"""The circuit breaker as a pure state machine: frozen state in, new state and events out.

A breaker guards one capability (``capability:<name>``) or one agent (``agent:<id>``).

- **closed**: outcomes are counted. It opens after ``failure_threshold`` failures in a row, or
  when, over the last ``window_seconds``, at least ``min_calls`` outcomes were seen and the share
  of failures reached ``failure_rate``.
- **open**: nothing goes through. After ``cool_down`` seconds it becomes half-open, unless an
  operator tripped it by hand: then it stays open until reset.
- **half_open**: one trial goes through (``trial_in_flight``); a success closes the breaker, a
  failure opens it again for another cool-down. A trial that never reports back (its task was
  cancelled) is given up after ``trial_timeout`` and another one may go; a trial whose task
  was never sent (the publish failed) is given back at once (:func:`give_back_trial`).

Nothing here does I/O or reads a clock: every function takes ``now``. :mod:`core.breakers`
persists the state in the Registry and runs these functions under compare-and-set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from agentdeck.core.errors import ConfigError
from agentdeck.core.models import JSON
from agentdeck.core.ports import BreakerRecord


class BreakerStatus(StrEnum):
    """Where a breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# ------------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open. Validated on creation."""

    failure_threshold: int = 5
    """Failures in a row that open the breaker. 1..10000."""

    failure_rate: float = 0.5
    """Share of failures over the window that opens the breaker (1 = only all failed). 0.01..1."""

    window_seconds: float = 60.0
    """How far back the failure rate looks. 1..86400."""

    min_calls: int = 10
    """Outcomes the window must hold before the rate counts. 1..100000."""

    cool_down: float = 30.0
    """Seconds open before a trial is let through. 0.1..86400."""

    trial_timeout: float = 600.0
    """Seconds a half-open trial may go unanswered before another may go. 1..86400."""

    def __post_init__(self) -> None:
        problems = [
            *_range("failure_threshold", self.failure_threshold, 1, 10_000, integer=True),
            *_range("failure_rate", self.failure_rate, 0.01, 1.0),
            *_range("window_seconds", self.window_seconds, 1, 86_400),
            *_range("min_calls", self.min_calls, 1, 100_000, integer=True),
            *_range("cool_down", self.cool_down, 0.1, 86_400),
            *_range("trial_timeout", self.trial_timeout, 1, 86_400),
        ]
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "breaker") -> BreakerPolicy:
        """A policy from a config mapping; absent keys keep their defaults. Raises ConfigError
        (starting with ``where``) for unknown keys, wrong types and values out of range."""
        at = f"{where}: " if where else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{at}expected a mapping of breaker settings, got {data!r}")
        allowed = cls.__dataclass_fields__
        unknown = [repr(k) for k in data if k not in allowed]
        if unknown:
            raise ConfigError(
                f"{at}unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
            )
        values: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str):  # environment variables arrive as text
                with contextlib.suppress(ValueError):
                    value = float(value) if "." in value or "e" in value.lower() else int(value)
            values[key] = value
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{at}{exc}") from None

    def to_dict(self) -> dict[str, JSON]:
        """As a JSON object :meth:`from_mapping` reads back."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _range(
    name: str, value: object, low: float, high: float, *, integer: bool = False
) -> list[str]:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if integer and not isinstance(value, int):
        ok = False
    if ok and isinstance(value, int | float) and low <= value <= high:  # NaN fails here too
        return []
    kind = "an integer" if integer else "a number"
    return [f"{name} must be {kind} from {low:g} to {high:g}, got {value!r}"]


# -------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A breaker's state. ``window`` counts the outcomes of the last ``window_seconds`` while
    closed, in buckets ``(start, successes, failures)`` of :func:`bucket_seconds` each, so its
    size stays bounded however busy the capability; ``manual`` is True when an operator
    tripped it."""

    name: str
    status: BreakerStatus = BreakerStatus.CLOSED
    consecutive_failures: int = 0
    window: tuple[tuple[float, int, int], ...] = ()
    opened_at: float | None = None
    trial_in_flight: bool = False
    trial_at: float | None = None
    manual: bool = False
    reason: str = ""
    changed_at: float | None = None

    @property
    def kind(self) -> str:
        """``capability`` or ``agent`` (the part of the name before ``:``)."""
        return self.name.partition(":")[0]

    @property
    def target(self) -> str:
        """The capability name or agent id the breaker guards."""
        return self.name.partition(":")[2]

    def calls(self) -> int:
        """Outcomes counted in the window."""
        return sum(ok + bad for _, ok, bad in self.window)

    def failure_rate(self) -> float:
        """Share of failures in the window (0 when empty)."""
        calls = self.calls()
        return sum(bad for _, _, bad in self.window) / calls if calls else 0.0

    def to_record(self, version: int) -> BreakerRecord:
        """As the Registry stores it."""
        data: dict[str, JSON] = {
            "consecutive_failures": self.consecutive_failures,
            "window": [list(bucket) for bucket in self.window],
            "opened_at": self.opened_at,
            "trial_in_flight": self.trial_in_flight,
            "trial_at": self.trial_at,
            "manual": self.manual,
            "reason": self.reason,
            "changed_at": self.changed_at,
        }
        return BreakerRecord(self.name, self.status.value, data, version)

    @classmethod
    def from_record(cls, record: BreakerRecord) -> BreakerState:
        """From what the Registry stores (unknown status reads as closed: fail open)."""
        d = record.data
        try:
            status = BreakerStatus(record.state)
        except ValueError:
            status = BreakerStatus.CLOSED
        return cls(
            name=record.name,
            status=status,
            consecutive_failures=int(d.get("consecutive_failures") or 0),
            window=tuple((float(at), int(ok), int(bad)) for at, ok, bad in d.get("window") or ()),
            opened_at=_opt_float(d.get("opened_at")),
            trial_in_flight=bool(d.get("trial_in_flight")),
            trial_at=_opt_float(d.get("trial_at")),
            manual=bool(d.get("manual")),
            reason=str(d.get("reason") or ""),
            changed_at=_opt_float(d.get("changed_at")),
        )


def bucket_seconds(window_seconds: float) -> float:
    """The width of one window bucket: a sixtieth of the window, at least a second."""
    return max(1.0, window_seconds / 60)


def _counted(
    window: tuple[tuple[float, int, int], ...], ok: bool, now: float, window_seconds: float
) -> tuple[tuple[float, int, int], ...]:
    """``window`` without buckets older than ``window_seconds``, with one more outcome."""
    width = bucket_seconds(window_seconds)
    start = now - now % width
    kept = [b for b in window if b[0] + width > now - window_seconds]
    if kept and kept[-1][0] == start:
        _, good, bad = kept.pop()
    else:
        good = bad = 0
    kept.append((start, good + ok, bad + (not ok)))
    return tuple(kept)


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


# ------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """Something that happened to a breaker; subclasses name what, in the past tense."""

    name: str
    at: float
    reason: str = ""
    detail: Mapping[str, JSON] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The event's class name (``BreakerOpened``, ...)."""
        return type(self).__name__


class BreakerOpened(BreakerEvent):
    """Too many failures: the breaker opened (or re-opened after a failed trial)."""


class BreakerHalfOpened(BreakerEvent):
    """The cool-down passed: one trial may go through."""


class BreakerClosed(BreakerEvent):
    """A trial succeeded: traffic flows again."""


class BreakerTripped(BreakerEvent):
    """An operator opened the breaker by hand; it stays open until reset."""


class BreakerReset(BreakerEvent):
    """An operator closed the breaker by hand and cleared its counts."""


Result = tuple[BreakerState, list[BreakerEvent]]


# ---------------------------------------------------------------------------- functions


def _closed(state: BreakerState, now: float) -> BreakerState:
    return replace(
        state,
        status=BreakerStatus.CLOSED,
        consecutive_failures=0,
        window=(),
        opened_at=None,
        trial_in_flight=False,
        trial_at=None,
        manual=False,
        reason="",
        changed_at=now,
    )


def _opened(state: BreakerState, now: float, reason: str, *, manual: bool = False) -> BreakerState:
    return replace(
        state,
        status=BreakerStatus.OPEN,
        opened_at=now,
        trial_in_flight=False,
        trial_at=None,
        manual=manual,
        reason=reason,
        changed_at=now,
    )


def record(state: BreakerState, ok: bool, now: float, policy: BreakerPolicy) -> Result:
    """Count one outcome (``ok`` True for a success) seen at ``now``.

    Closed: the outcome joins the window and may open the breaker. Half-open: a success closes
    it, a failure opens it again. Open: outcomes of work sent before it opened change nothing.
    """
    if state.status is BreakerStatus.OPEN:
        return state, []
    if state.status is BreakerStatus.HALF_OPEN:
        if ok:
            return _closed(state, now), [BreakerClosed(state.name, now, "trial succeeded")]
        reason = "trial failed"
        return _opened(state, now, reason), [BreakerOpened(state.name, now, reason)]
    window = _counted(state.window, ok, now, policy.window_seconds)
    consecutive = 0 if ok else state.consecutive_failures + 1
    state = replace(state, window=window, consecutive_failures=consecutive)
    if ok:
        return state, []
    reason = ""
    if consecutive >= policy.failure_threshold:
        reason = f"{consecutive} failures in a row (threshold {policy.failure_threshold})"
    elif state.calls() >= policy.min_calls and state.failure_rate() >= policy.failure_rate:
        reason = (
            f"{state.failure_rate():.0%} of {state.calls()} calls failed in "
            f"{policy.window_seconds:g}s (limit {policy.failure_rate:.0%})"
        )
    if not reason:
        return state, []
    return _opened(state, now, reason), [BreakerOpened(state.name, now, reason)]


def tick(state: BreakerState, now: float, policy: BreakerPolicy) -> Result:
    """Let time pass: an open breaker whose cool-down is over becomes half-open (unless it was
    tripped by hand); a half-open trial unanswered for ``trial_timeout`` is given up."""
    if (
        state.status is BreakerStatus.OPEN
        and not state.manual
        and state.opened_at is not None
        and now >= state.opened_at + policy.cool_down
    ):
        half = replace(state, status=BreakerStatus.HALF_OPEN, changed_at=now)
        return half, [
            BreakerHalfOpened(state.name, now, f"cool-down of {policy.cool_down:g}s over")
        ]
    if (
        state.status is BreakerStatus.HALF_OPEN
        and state.trial_in_flight
        and state.trial_at is not None
        and now >= state.trial_at + policy.trial_timeout
    ):
        return replace(state, trial_in_flight=False, trial_at=None), []
    return state, []


def allows(state: BreakerState) -> bool:
    """True if work may be sent now: closed, or half-open with no trial out yet."""
    if state.status is BreakerStatus.CLOSED:
        return True
    return state.status is BreakerStatus.HALF_OPEN and not state.trial_in_flight


def begin_trial(state: BreakerState, now: float) -> BreakerState:
    """Mark the one half-open trial as sent. Closed breakers are returned unchanged."""
    if state.status is not BreakerStatus.HALF_OPEN or state.trial_in_flight:
        return state
    return replace(state, trial_in_flight=True, trial_at=now)


def give_back_trial(state: BreakerState, trial_at: float) -> BreakerState:
    """Free the half-open trial claimed at ``trial_at`` whose task never left (its publish
    failed): another trial may go at once instead of after ``trial_timeout``.

    ``trial_at`` (the claim's time, from :func:`begin_trial`) names the trial, so a claim made
    since (by another node, once this one's was given up) or a breaker that moved on (the trial
    reported, an operator tripped it) is returned unchanged.
    """
    if (
        state.status is not BreakerStatus.HALF_OPEN
        or not state.trial_in_flight
        or state.trial_at != trial_at
    ):
        return state
    return replace(state, trial_in_flight=False, trial_at=None)


def trip(state: BreakerState, now: float, reason: str = "tripped by an operator") -> Result:
    """Open by hand; it stays open (no cool-down) until :func:`reset`."""
    return _opened(state, now, reason, manual=True), [BreakerTripped(state.name, now, reason)]


def reset(state: BreakerState, now: float, reason: str = "reset by an operator") -> Result:
    """Close by hand and forget the counts."""
    return _closed(state, now), [BreakerReset(state.name, now, reason)]
