"""What the control centre's screens read from, as one object the composition root hands over.

No Textual here: the composition root (``agentdeck.tui.compose``) builds it on the daemon's
import path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from agentdeck.core.client import Client
from agentdeck.core.clock import Clock
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
