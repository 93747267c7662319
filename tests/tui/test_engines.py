"""On a cluster the overview says where each engine is reached; embedded, it says nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from textual.widgets import Static

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.engines import engine_lines
from agentdeck.tui.sources import Sources
from tests.tui.conftest import World
from tests.tui.test_app import SIZE, ready

pytestmark = pytest.mark.tui


class ClusterBus(MemoryBus):
    """A bus that reports its broker connections as RabbitBus does."""

    @property
    def brokers(self) -> dict[str, str]:
        """Publisher and consumer both on the second node."""
        return {"publisher": "rabbit-2:5672", "consumer": "rabbit-2:5672"}


class ClusterRegistry(MemoryRegistry):
    """A registry that names its target as RedisRegistry does."""

    where = "sentinel h1:26379,h2:26379/mymaster/0"


def test_embedded_engines_say_nothing(world: World) -> None:
    """Memory bus and registry, SQLite store: no engine line."""
    assert engine_lines(world.sources) == []


def test_cluster_engines_name_their_hosts(world: World) -> None:
    """The broker the bus reached (roles sharing it on one line) and the registry's target."""
    sources = replace(
        world.sources,
        bus=ClusterBus(clock=world.clock),
        registry=ClusterRegistry(clock=world.clock),
    )
    assert engine_lines(sources) == [
        ("bus", "rabbit-2:5672 (consumer+publisher)"),
        ("registry", "sentinel h1:26379,h2:26379/mymaster/0"),
    ]


async def test_the_overview_shows_the_engines_of_a_cluster(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Under the agents card's breakers line: bus and broker; embedded, the card is as before."""
    sources = replace(world.sources, bus=ClusterBus(clock=world.clock))

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        yield sources

    app = AgentdeckApp(connect, refresh_interval=None)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        agents = str(app.screen.query_one("#agents", Static).render())
        assert "bus       rabbit-2:5672 (consumer+publisher)" in agents
    plain = app_for()
    async with plain.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "bus " not in str(plain.screen.query_one("#agents", Static).render())
