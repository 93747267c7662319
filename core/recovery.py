"""Lost agents: running attempts whose agent stopped sending heartbeats.

An agent's registry record expires ``agent_ttl`` seconds after its last heartbeat. Its running
attempts would otherwise wait for their deadline (timeout + grace, often minutes); the
scheduler asks :class:`LostAgents` each round for those attempts and fails them as ``lost`` at
once, so the retry policy sends them elsewhere within seconds.

An agent must be missing for ``grace`` seconds before its work is taken away: a registry that
was wiped (Redis restarted with its data gone) is refilled by the agents' next heartbeats, and
work must not run twice because of that gap.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentdeck.core.clock import Clock
from agentdeck.core.discovery import Discovery
from agentdeck.core.models import Task
from agentdeck.core.ports import Registry, Store
from agentdeck.core.states import TaskStatus


class LostAgents:
    """Finds running attempts of agents missing from the registry for ``grace`` seconds.

    Looks at most every ``interval`` seconds of ``clock`` time (a listing of running tasks and
    of agents each time).
    """

    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        *,
        grace: float = 4.0,
        interval: float = 1.0,
        limit: int = 100_000,
    ) -> None:
        self.discovery = Discovery(registry)
        self.clock = clock
        self.grace, self.interval, self.limit = grace, interval, limit
        self._missing_since: dict[str, float] = {}
        self._checked_at: float | None = None

    def __repr__(self) -> str:
        return f"<LostAgents missing={sorted(self._missing_since)}>"

    async def orphans(self, store: Store) -> list[Task]:
        """Running tasks whose agent has been gone from the registry for ``grace`` seconds."""
        now = self.clock.now()
        if self._checked_at is not None and now - self._checked_at < self.interval:
            return []
        self._checked_at = now
        running = await store.list_tasks(status=[TaskStatus.RUNNING], limit=self.limit)
        owners = {t.agent_id for t in running if t.agent_id}
        if not owners:
            self._missing_since.clear()
            return []
        live = {a.id for a in await self.discovery.live()}
        gone = owners - live
        self._missing_since = {a: self._missing_since.get(a, now) for a in gone}
        lost = {a for a, since in self._missing_since.items() if now - since >= self.grace}
        return [t for t in running if t.agent_id in lost]


def describe(tasks: Sequence[Task]) -> dict[str, int]:
    """How many orphaned tasks each lost agent had (for the log line)."""
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.agent_id or "?"] = counts.get(t.agent_id or "?", 0) + 1
    return counts
