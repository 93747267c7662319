"""Capabilities an operator paused: the scheduler dispatches none of their ready tasks.

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

import structlog

from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.ports import BreakerRecord, Registry

log = structlog.get_logger(__name__)

PREFIX = "paused:"
PAUSED, ACTIVE = "paused", "active"


def is_hold_record(name: str) -> bool:
    """True for the records this module keeps (screens listing breakers skip them)."""
    return name.startswith(PREFIX)


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
        self._cache: set[str] = set()
        self._read_at: float | None = None

    async def paused(self) -> set[str]:
        """The capabilities paused now (the last set read if the Registry cannot be read: an
        outage must not stop dispatching, nor forget a pause)."""
        now = self.clock.now()
        if self._read_at is None or now - self._read_at >= self.refresh:
            self._read_at = now
            try:
                records = await self.registry.breakers()
            except AgentdeckError as exc:
                log.warning("capability_holds_unreadable", error=str(exc))
                return set(self._cache)
            self._cache = {
                r.name.removeprefix(PREFIX)
                for r in records
                if is_hold_record(r.name) and r.state == PAUSED
            }
        return set(self._cache)

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
