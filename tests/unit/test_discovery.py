"""Discovery: live agents by capability and the least-loaded pick."""

from __future__ import annotations

from agentdeck.backends.memory import MemoryRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.discovery import Discovery, pick_least_loaded
from agentdeck.core.models import AgentRecord, AgentState


def record(
    agent_id: str,
    in_flight: int,
    concurrency: int = 4,
    state: AgentState = AgentState.UP,
    caps: tuple[str, ...] = ("echo",),
) -> AgentRecord:
    return AgentRecord(agent_id, agent_id, caps, concurrency, state, 0.0, 0.0, in_flight)


def test_pick_prefers_the_lowest_share_of_busy_slots() -> None:
    """The agent with the smallest load wins; full and draining agents are never picked."""
    agents = [
        record("a", 3),
        record("b", 1),
        record("c", 0, state=AgentState.DRAINING),
        record("d", 4),
    ]
    chosen = pick_least_loaded(agents)
    assert chosen is not None and chosen.id == "b"


def test_pick_breaks_ties_by_free_slots_then_id() -> None:
    """Equal load: more free slots first, then the lowest id, so the choice is stable."""
    assert pick_least_loaded([record("z", 0, 2), record("y", 0, 8)]).id == "y"  # type: ignore[union-attr]
    assert pick_least_loaded([record("b", 0), record("a", 0)]).id == "a"  # type: ignore[union-attr]
    assert pick_least_loaded([record("a", 4)]) is None
    assert pick_least_loaded([]) is None


async def test_discovery_sees_only_live_agents(clock: FakeClock) -> None:
    """Agents whose heartbeats lapse drop out of discovery; capability counts follow."""
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await registry.start()
    await registry.register(record("a", 0, caps=("echo", "sleep")), ttl=10)
    await registry.register(record("b", 2, caps=("echo",)), ttl=30)
    discovery = Discovery(registry)
    assert {a.id for a in await discovery.live("echo")} == {"a", "b"}
    assert await discovery.capabilities() == {"echo": 2, "sleep": 1}
    assert (await discovery.pick("echo")).id == "a"  # type: ignore[union-attr]
    clock.advance(11)
    assert [a.id for a in await discovery.live()] == ["b"]
    assert await discovery.pick("sleep") is None
    await registry.close()
