"""Capabilities on hold: the scheduler dispatches none of their ready tasks, for a reason.

Three kinds of hold: a capability an operator **paused** (until resumed), a capability its
provider **rate-limited** (until the time the provider gave; it ends by itself), and a
capability whose circuit **breaker** is open (until it half-opens after its cool-down, or until
reset when an operator tripped it) or half-open (one trial at a time, until a trial succeeds).
:meth:`CapabilityHolds.holds` lists all three with their reason and end, the same way for the
CLI and the control centre.

The breaker holds are derived from the breakers' own records (:mod:`core.breaker` state, the
cool-down from the policy), never stored a second time; the scheduler enforces them through
:class:`core.breakers.Breakers` (which lets a half-open breaker's trial through), so
:meth:`CapabilityHolds.held` leaves them out.

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

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from agentdeck.core.ahead import EARLY, Ahead
from agentdeck.core.breaker import BreakerPolicy, BreakerState, BreakerStatus
from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.ports import BreakerRecord, Registry

log = structlog.get_logger(__name__)

PREFIX = "paused:"
LIMITED_PREFIX = "ratelimited:"
CAPABILITY_BREAKER = "capability:"
PAUSED, ACTIVE, LIMITED = "paused", "active", "limited"
RATE_LIMITED, BREAKER = "rate_limited", "breaker"
KIND_ORDER = (PAUSED, BREAKER, RATE_LIMITED)
"""How holds of one capability sort: an operator's pause first, the provider's limit last."""

BreakerPolicies = Callable[[str], BreakerPolicy]
"""The breaker policy of a capability (its cool-down says when an open breaker half-opens)."""


def breaker_policies(
    default: BreakerPolicy | None = None, capabilities: Mapping[str, BreakerPolicy] | None = None
) -> BreakerPolicies:
    """The lookup of ``[breakers]`` settings: ``capabilities``' own policies, else ``default``."""
    fallback, own = default or BreakerPolicy(), dict(capabilities or {})
    return lambda capability: own.get(capability, fallback)


DEFAULT_POLICIES = breaker_policies()
"""Every capability on the default breaker policy."""


@dataclass(frozen=True, slots=True)
class Hold:
    """``capability`` may not start new work: ``kind`` ``paused`` (an operator's; ``until`` is
    None, it lasts until resumed), ``rate_limited`` (its provider's; it ends at ``until``) or
    ``breaker`` (open: it half-opens at ``until``; tripped by hand or half-open: ``until`` is
    None and ``ends`` says what ends it)."""

    capability: str
    kind: str
    reason: str
    until: float | None = None
    since: float | None = None
    ends: str = "until resumed"
    """What ends the hold when ``until`` is None."""


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
    per scheduler round would be wasteful), writes from this node clear the cache. Once
    three quarters of ``refresh`` have gone by the next read may start ahead (:meth:`read_ahead`,
    :mod:`core.ahead`), so a call finds the cache fresh instead of waiting for the Registry;
    what a call returns is never older than ``refresh`` (counted from when its read started),
    as before.

    ``breakers`` gives each capability's breaker policy, for the end of an open breaker's hold
    (the defaults when not given); None when breakers are turned off: then none is listed."""

    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        *,
        refresh: float = 1.0,
        breakers: BreakerPolicies | None = DEFAULT_POLICIES,
    ) -> None:
        self.registry, self.clock, self.refresh = registry, clock, refresh
        self.breakers = breakers
        self._cache: list[Hold] = []
        self._read_at: float | None = None
        self._ahead: Ahead[list[BreakerRecord]] = Ahead("capability_holds")

    async def holds(self) -> list[Hold]:
        """Every hold in force now, by capability then kind (the last ones read if the Registry
        cannot be read: an outage must not stop dispatching, nor forget a pause)."""
        now = self.clock.now()
        early = self._ahead.take()
        if early is not None and early[0] >= (self._read_at or 0.0):
            # Read from the Registry since the last read, and since this node's last write.
            self._read_at = early[0]
            self._install(early[1])
        if self._read_at is None or now - self._read_at >= self.refresh:
            self._ahead.cancel()
            self._read_at = now
            try:
                records = await self.registry.breakers()
            except AgentdeckError as exc:
                log.warning("capability_holds_unreadable", error=str(exc))
                records = None
            if records is not None:
                self._install(records)
        # An open breaker past its cool-down still holds until the scheduler half-opens it.
        return [h for h in self._cache if h.kind == BREAKER or h.until is None or h.until > now]

    def read_ahead(self) -> None:
        """Start the next read if :data:`~core.ahead.EARLY` of ``refresh`` has gone by since
        the last one (for a caller with nothing else to do now, as the scheduler between
        rounds): the call that comes once the period is over then takes it instead of waiting
        for the Registry."""
        now = self.clock.now()
        if self._read_at is not None and now - self._read_at >= self.refresh * EARLY:
            self._ahead.start(self._read, now)

    async def settle(self) -> None:
        """Wait for a read ahead in flight, if any, and take it (a scheduler stepping down
        leaves no Registry call behind it)."""
        early = await self._ahead.wait()
        if early is not None and early[0] >= (self._read_at or 0.0):
            self._read_at = early[0]
            self._install(early[1])

    async def _read(self) -> list[BreakerRecord]:
        return await self.registry.breakers()

    def _install(self, records: list[BreakerRecord]) -> None:
        self._cache = sorted(
            (h for r in records if (h := self._hold(r)) is not None),
            key=lambda h: (h.capability, KIND_ORDER.index(h.kind)),
        )

    def _wrote(self) -> None:
        """This node changed a hold: read again at the next call (an early read that started
        before the write does not count)."""
        self._ahead.cancel()
        self._read_at = None

    async def held(self) -> set[str]:
        """The capabilities paused or rate-limited now (the holds this module enforces; the
        scheduler asks :class:`core.breakers.Breakers` about breakers, which lets trials by)."""
        return {h.capability for h in await self.holds() if h.kind != BREAKER}

    def _hold(self, record: BreakerRecord) -> Hold | None:
        if record.name.startswith(CAPABILITY_BREAKER):
            if self.breakers is None:
                return None
            state = BreakerState.from_record(record)
            return breaker_hold(state, self.breakers(state.target))
        return _hold(record)

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
                self._wrote()
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
                self._wrote()
                return True
        raise AgentdeckError(f"could not write {name}: too many concurrent changes")


def breaker_hold(state: BreakerState, policy: BreakerPolicy) -> Hold | None:
    """The hold a capability breaker in ``state`` puts on its capability (None when closed):
    open, until it half-opens (``opened_at`` + the policy's cool-down), or until reset when an
    operator tripped it; half-open, until a trial succeeds. The reason is the breaker's own
    (the failures it counted, or who tripped it)."""
    if state.status is BreakerStatus.CLOSED or state.kind != "capability":
        return None
    why = state.reason or "failures counted"
    since = state.opened_at if state.opened_at is not None else state.changed_at
    if state.status is BreakerStatus.HALF_OPEN:
        trial = "trial in flight" if state.trial_in_flight else "one trial may go"
        return Hold(state.target, BREAKER, f"half-open, {trial}: {why}", None, since, "trial ok")
    if state.manual or state.opened_at is None:
        return Hold(state.target, BREAKER, why, None, since, "until reset")
    return Hold(state.target, BREAKER, why, state.opened_at + policy.cool_down, since)


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
            RATE_LIMITED,
            str(data.get("reason") or "rate-limited by its provider"),
            float(until) if isinstance(until, int | float) else None,
            since_at,
        )
    return None
