"""What the control centre's screens read from, as one object the composition root hands over,
and whether each of them answers now (:class:`Health`).

No Textual here: the composition root (``agentdeck.tui.compose``) builds it on the daemon's
import path.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, cast

from agentdeck.core.client import Client
from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.holds import DEFAULT_POLICIES, BreakerPolicies
from agentdeck.core.ports import Bus, Registry, Store
from agentdeck.core.tracing import RecentSpans


@dataclass
class Sources:
    """Where the screens read from: the Store (through a Client), the Registry, a clock, and
    (optionally) the events stream that tells them when to look again."""

    client: Client
    registry: Registry
    clock: Clock
    events: Callable[[], AsyncIterator[bytes]] | None = None
    node: str = ""
    bus: Bus | None = None
    """The bus, for reading dead letters (None: this node cannot see them)."""
    recent: RecentSpans | None = None
    """This process's recent spans, for the traces screen (None: tracing is off)."""
    attached: bool = False
    """True when this process runs no scheduler (attached to a cluster): a leader elsewhere
    carries out the commands, and the app shows who leads, or warns that nobody does."""
    breakers: BreakerPolicies | None = DEFAULT_POLICIES
    """The breaker policy of each capability, for when an open breaker's hold ends (None:
    breakers are turned off, and no breaker hold is listed)."""

    @property
    def store(self) -> Store:
        """The Store behind the client."""
        return self.client.store


Connect = Callable[[], AbstractAsyncContextManager[Sources]]
"""Opens the data sources (and whatever runs behind them) for as long as the app runs."""


STORE, REGISTRY = "Store", "Registry"
"""The sources whose answers :class:`Health` follows, as the screens name them."""
ENGINE_OF = {STORE: "postgres", REGISTRY: "redis"}
"""The column of the engine health table (``agentdeck.tui.engines``) each source is."""
NOT_A_READ = frozenset({"probe_servers"})
"""Calls that say nothing of whether the source answers (a report that never raises)."""


@dataclass
class SourceState:
    """What is known of one source: when it last answered, and since when it has failed."""

    last_good: float | None = None
    """When a call last returned (None: never yet)."""
    failing_since: float | None = None
    """When the first call of the current run of failures failed (None: it answers)."""
    error: str = ""
    """The last failure's message (names the engine and the call; never a secret)."""


class Health:
    """Which of the screens' sources answer now, and how old the last good data from each
    is. Every call through :func:`watched` sources records here: a BackendUnavailable marks
    its source failing (from that moment, until a call returns), any answer marks it good.
    Time is the sources' clock (a fake one in tests). No Textual here."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.states = {STORE: SourceState(), REGISTRY: SourceState()}

    def good(self, name: str) -> None:
        """``name`` answered."""
        state = self.states[name]
        state.last_good, state.failing_since, state.error = self.clock.now(), None, ""

    def failed(self, name: str, error: BaseException) -> None:
        """A call to ``name`` failed because the engine did not answer."""
        state = self.states[name]
        if state.failing_since is None:
            state.failing_since = self.clock.now()
        state.error = str(error)

    def failing(self) -> dict[str, SourceState]:
        """The sources failing now, by name (empty: all answer)."""
        return {n: s for n, s in self.states.items() if s.failing_since is not None}

    def stale_for(self, name: str) -> float | None:
        """Seconds since ``name``'s last good answer while it fails (inf: it never answered);
        None while it answers."""
        state = self.states[name]
        if state.failing_since is None:
            return None
        if state.last_good is None:
            return float("inf")
        return max(0.0, self.clock.now() - state.last_good)

    def label(self, name: str) -> str:
        """``Store down, 12s stale`` while ``name`` fails ("" while it answers)."""
        age = self.stale_for(name)
        if age is None:
            return ""
        return f"{name} down, " + ("never read" if age == float("inf") else f"{_age(age)} stale")

    def summary(self, names: Iterable[str]) -> str:
        """What a card reading ``names`` says under it while some fail: ``stale 12s: Store
        down`` (the age of its oldest data), ``no data: Store down`` before any answer; ""
        while all answer."""
        ages = {n: a for n in names if (a := self.stale_for(n)) is not None}
        if not ages:
            return ""
        oldest = max(ages.values())
        age = "no data" if oldest == float("inf") else f"stale {_age(oldest)}"
        return f"{age}: {', '.join(ages)} down"


def _age(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s"


class _Watched:
    """``target`` with each of its coroutine methods recording in ``health`` whether the
    source answered; everything else (reports such as ``host_states``) passes through."""

    def __init__(self, target: object, name: str, health: Health) -> None:
        self._target, self._name, self._health = target, name, health

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if attr in NOT_A_READ or not inspect.iscoroutinefunction(value):
            return value
        name, health = self._name, self._health

        @functools.wraps(value)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await value(*args, **kwargs)
            except BackendUnavailable as exc:
                health.failed(name, exc)
                raise
            health.good(name)
            return result

        return call

    def __repr__(self) -> str:
        return repr(self._target)


def watched(sources: Sources, health: Health) -> Sources:
    """``sources``, changed in place (whoever holds it sees the same object), so that its
    Store (through its client) and its Registry record in ``health`` whether they answer. The
    client is the screens' own (the composition root makes one for them)."""
    sources.client.store = cast(Store, _Watched(_unwatched(sources.client.store), STORE, health))
    sources.registry = cast(Registry, _Watched(_unwatched(sources.registry), REGISTRY, health))
    return sources


def _unwatched(source: object) -> object:
    """The source itself, not the watch an earlier app put on it (a second app on the same
    sources watches for itself)."""
    return source._target if isinstance(source, _Watched) else source
