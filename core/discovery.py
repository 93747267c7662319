"""Discovery: which agents are alive, what they serve, and which is least loaded."""

from __future__ import annotations

from collections.abc import Sequence

from agentdeck.core.models import AgentRecord, AgentState
from agentdeck.core.ports import Registry


class Discovery:
    """A read view over the Registry's agent records (records expire by TTL there)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def live(self, capability: str | None = None) -> list[AgentRecord]:
        """Agents whose heartbeats are current, optionally serving ``capability``."""
        return [a for a in await self.registry.agents(capability) if a.state != AgentState.DOWN]

    async def pick(self, capability: str) -> AgentRecord | None:
        """The least-loaded agent that is up (not draining) and serves ``capability``."""
        return pick_least_loaded(await self.live(capability))

    async def capabilities(self) -> dict[str, int]:
        """For each capability, how many agents that are up serve it."""
        counts: dict[str, int] = {}
        for agent in await self.live():
            if agent.state == AgentState.UP:
                for cap in agent.capabilities:
                    counts[cap] = counts.get(cap, 0) + 1
        return counts


def pick_least_loaded(agents: Sequence[AgentRecord]) -> AgentRecord | None:
    """The up agent with the most free share of its slots; ties go to the one with most free
    slots, then to the lowest id, so the choice is deterministic."""
    candidates = [a for a in agents if a.state == AgentState.UP and a.in_flight < a.concurrency]
    if not candidates:
        return None
    return min(candidates, key=lambda a: (a.load, -(a.concurrency - a.in_flight), a.id))
