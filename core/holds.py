"""Capabilities on hold: the scheduler dispatches none of their ready tasks, for a reason.

Two kinds of hold, one mechanism: a capability an operator **paused** (until resumed) and a
capability its provider **rate-limited** (until the time the provider gave; it ends by itself).
:meth:`CapabilityHolds.holds` lists them with their reason and end, the same way for the
scheduler, the CLI and the control centre.

Where the paused set lives: in the Registry, as breaker-like records named ``paused:<capability>``
(state ``paused`` or ``active``). The Registry is what every node already shares for breakers
(memory when embedded, SQLite/Redis in a cluster), it has compare-and-set writes, and a new
leader reads it at once, so a pause survives a leader change exactly like a manual breaker
trip. The Store would need a new table (and a port change) for one set of names. The Registry
has no delete, so resuming writes ``active`` rather than removing the record. Other readers of
the breaker records read an unknown state as closed and a ``paused:`` kind as no capability, so
these records never hold anything through the breaker code.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.ports import BreakerRecord, Registry

log = structlog.get_logger(__name__)

PREFIX = "paused:"
LIMITED_PREFIX = "ratelimited:"
PAUSED, ACTIVE, LIMITED = "paused", "active", "limited"


@dataclass(frozen=True, slots=True)
class Hold:
    """``capability`` may not start new work: ``kind`` ``paused`` (an operator's; ``until`` is
    None, it lasts until resumed) or ``rate_limited`` (its provider's; it ends at ``until``)."""

    capability: str
    kind: str
    reason: str
    until: float | None = None
    since: float | None = None


def is_hold_record(name: str) -> bool:
    """True for the records this module keeps (screens listing breakers skip them)."""
    return name.startswith((PREFIX, LIMITED_PREFIX))


def check_capability(name: str) -> str:
    """``name`` if it can be a capability; AgentdeckError naming it otherwise."""
    if not name or any(c.isspace() for c in name) or ":" in name:
        raise AgentdeckError(
            f"capability {name!r} is not a capability name (non-empty, no spaces or ':')"
        )
    return name


class CapabilityHolds:
    """Reads and writes the paused set; reads are cached ``refresh`` seconds (one Registry call
    per scheduler round would be wasteful), writes from this node clear the cache."""

    def __init__(self, registry: Registry, clock: Clock, *, refresh: float = 1.0) -> None:
        self.registry, self.clock, self.refresh = registry, clock, refresh
        self._cache: list[Hold] = []
        self._read_at: float | None = None

    async def holds(self) -> list[Hold]:
        """Every hold in force now, by capability then kind (the last ones read if the Registry
        cannot be read: an outage must not stop dispatching, nor forget a pause)."""
        now = self.clock.now()
        if self._read_at is None or now - self._read_at >= self.refresh:
            self._read_at = now
            try:
                records = await self.registry.breakers()
            except AgentdeckError as exc:
                log.warning("capability_holds_unreadable", error=str(exc))
                records = None
            if records is not None:
                self._cache = sorted(
                    (h for r in records if (h := _hold(r)) is not None),
                    key=lambda h: (h.capability, h.kind),
                )
        return [h for h in self._cache if h.until is None or h.until > now]

    async def held(self) -> set[str]:
        """The capabilities with any hold in force now."""
        return {h.capability for h in await self.holds()}

    async def paused(self) -> set[str]:
        """The capabilities an operator paused."""
        return {h.capability for h in await self.holds() if h.kind == PAUSED}

    async def rate_limit(self, capability: str, until: float, reason: str) -> bool:
        """Hold ``capability`` until ``until`` (a later end than the one in force wins; an
        earlier one changes nothing, and False is returned)."""
        name = LIMITED_PREFIX + check_capability(capability)
        for _ in range(10):  # compare-and-set: another node may write between read and put
            current = await self.registry.get_breaker(name)
            hold = _hold(current) if current is not None else None
            if hold is not None and hold.until is not None and hold.until >= until:
                return False
            record = BreakerRecord(
                name,
                LIMITED,
                {"until": until, "since": self.clock.now(), "reason": reason},
                (current.version + 1) if current else 1,
            )
            if await self.registry.put_breaker(record, current.version if current else None):
                self._read_at = None
                log.info("capability_rate_limited", capability=capability, until=until)
                return True
        raise AgentdeckError(f"could not write {name}: too many concurrent changes")

    async def set(self, capability: str, *, paused: bool, actor: str = "") -> bool:
        """Pause or resume ``capability``; False if it already was so."""
        name = PREFIX + check_capability(capability)
        state = PAUSED if paused else ACTIVE
        for _ in range(10):  # compare-and-set: another node may write between read and put
            current = await self.registry.get_breaker(name)
            if (current.state if current else ACTIVE) == state:
                return False
            record = BreakerRecord(
                name,
                state,
                {"changed_at": self.clock.now(), "by": actor},
                (current.version + 1) if current else 1,
            )
            if await self.registry.put_breaker(record, current.version if current else None):
                self._read_at = None
                return True
        raise AgentdeckError(f"could not write {name}: too many concurrent changes")


def _hold(record: BreakerRecord) -> Hold | None:
    """The hold a Registry record stands for, if it is one of ours and says hold."""
    data = record.data
    since = data.get("changed_at", data.get("since"))
    since_at = float(since) if isinstance(since, int | float) else None
    if record.name.startswith(PREFIX) and record.state == PAUSED:
        by = data.get("by") or "an operator"
        return Hold(record.name.removeprefix(PREFIX), PAUSED, f"paused by {by}", None, since_at)
    if record.name.startswith(LIMITED_PREFIX) and record.state == LIMITED:
        until = data.get("until")
        return Hold(
            record.name.removeprefix(LIMITED_PREFIX),
            "rate_limited",
            str(data.get("reason") or "rate-limited by its provider"),
            float(until) if isinstance(until, int | float) else None,
            since_at,
        )
    return None
