"""Per-capability limits the scheduler enforces across the whole fleet.

A provider's quota (requests or tokens per minute) or a tool's licence (so many at once) belongs
to a capability, not to one agent: ten agents each keeping under a limit of their own still
exceed it together. The leader is the one place every attempt of a capability passes through
(it dispatches them all), so it enforces:

- ``max_concurrency``: at most so many attempts of the capability in flight (dispatched or
  running, as the Store counts them);
- ``requests_per_minute``: at most so many attempts dispatched in any 60 seconds;
- ``tokens_per_minute``: no new attempt while the tokens the capability's attempts reported in
  the last 60 seconds reach the limit.

The windows live in the leader's memory: a new leader starts them empty (at worst one extra
minute's worth goes out after a failover). Pure bookkeeping with the time passed in; no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentdeck.core.models import Task

WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class CapabilityLimits:
    """A capability's limits; None: no such limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrency: int | None = None


class Limiter:
    """Decides which ready tasks may be dispatched now under the capabilities' limits."""

    def __init__(self, limits: Mapping[str, CapabilityLimits]) -> None:
        self.limits = dict(limits)
        self._sent: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}

    def __repr__(self) -> str:
        return f"<Limiter capabilities={sorted(self.limits)}>"

    def set_limits(self, limits: Mapping[str, CapabilityLimits]) -> None:
        """Enforce ``limits`` from now on (a reload). The windows of capabilities still limited
        are kept, so a lowered limit counts what was already sent this minute; those of
        capabilities no longer limited are forgotten."""
        self.limits = dict(limits)
        for windows in (self._sent, self._tokens):
            for name in [n for n in windows if n not in self.limits]:
                del windows[name]

    @property
    def counts_in_flight(self) -> bool:
        """True if some capability has ``max_concurrency`` (the caller then passes counts)."""
        return any(lim.max_concurrency for lim in self.limits.values())

    def held(self, now: float) -> dict[str, str]:
        """Capabilities whose per-minute limits are reached now, with the reason."""
        held: dict[str, str] = {}
        for name, lim in self.limits.items():
            if lim.requests_per_minute and self._sent_in_window(name, now) >= (
                lim.requests_per_minute
            ):
                held[name] = f"{lim.requests_per_minute} requests per minute reached"
            elif lim.tokens_per_minute and self.tokens_in_window(name, now) >= (
                lim.tokens_per_minute
            ):
                held[name] = f"{lim.tokens_per_minute} tokens per minute reached"
        return held

    def admit(self, ready: Sequence[Task], in_flight: Mapping[str, int], now: float) -> list[Task]:
        """The tasks of ``ready`` (in order) that may go now, counted as sent: per capability
        no more than its free concurrency (``in_flight``: its attempts dispatched or running)
        and its requests left in the window. The rest stay ready."""
        room: dict[str, float] = {}
        admitted: list[Task] = []
        for t in ready:
            lim = self.limits.get(t.capability)
            if lim is None:
                admitted.append(t)
                continue
            if t.capability not in room:
                room[t.capability] = self._room(t.capability, lim, in_flight, now)
            if room[t.capability] >= 1:
                room[t.capability] -= 1
                admitted.append(t)
                if lim.requests_per_minute:
                    self._sent.setdefault(t.capability, deque()).append(now)
        return admitted

    def record_tokens(self, capability: str, tokens: int, now: float) -> None:
        """Count ``tokens`` an attempt of ``capability`` reported at ``now``."""
        if tokens > 0 and (lim := self.limits.get(capability)) and lim.tokens_per_minute:
            self._tokens.setdefault(capability, deque()).append((now, tokens))

    def tokens_in_window(self, capability: str, now: float) -> int:
        """Tokens ``capability``'s attempts reported in the last minute."""
        window = self._tokens.get(capability)
        if not window:
            return 0
        while window and window[0][0] <= now - WINDOW:
            window.popleft()
        return sum(n for _, n in window)

    def _sent_in_window(self, capability: str, now: float) -> int:
        window = self._sent.get(capability)
        if not window:
            return 0
        while window and window[0] <= now - WINDOW:
            window.popleft()
        return len(window)

    def _room(
        self, capability: str, lim: CapabilityLimits, in_flight: Mapping[str, int], now: float
    ) -> float:
        room = float("inf")
        if lim.max_concurrency:
            room = min(room, lim.max_concurrency - in_flight.get(capability, 0))
        if lim.requests_per_minute:
            room = min(room, lim.requests_per_minute - self._sent_in_window(capability, now))
        if lim.tokens_per_minute and self.tokens_in_window(capability, now) >= (
            lim.tokens_per_minute
        ):
            room = 0
        return room
