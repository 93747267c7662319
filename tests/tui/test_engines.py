"""On a cluster the overview shows each engine's health per host (which broker node the bus
is on, which Redis and which PostgreSQL is the primary); embedded, it shows nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widgets import Static

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.engines import HostRow, host_rows, host_table
from agentdeck.tui.sources import Sources
from tests.tui.conftest import START, World, build_world
from tests.tui.test_app import SIZE, ready
from tests.tui.test_snapshots import Snap, steps

pytestmark = pytest.mark.tui


class ClusterBus(MemoryBus):
    """A bus that reports its brokers as RabbitBus does: on h2 now, h1 gone, h3 not tried."""

    broker_states = {"h1:5672": "down", "h2:5672": "connected", "h3:5672": "?"}


class ClusterRegistry(MemoryRegistry):
    """A registry that reports its servers as RedisRegistry does, and counts the probes
    started (each answers at once, as the real one does from its cache)."""

    def __init__(self, clock: FakeClock, states: dict[str, str]) -> None:
        super().__init__(clock=clock)
        self.server_states = states
        self.probes = 0

    async def probe_servers(self) -> dict[str, str]:
        """Count the call; the states are what the test set."""
        self.probes += 1
        return self.server_states


REDIS = {"10.0.0.3:6379": "primary", "10.0.0.1:6379": "down", "10.0.0.2:6379": "replica"}
POSTGRES = {"h1:5432": "down", "h2:5432": "replica", "h3:5432": "primary"}


class ClusterStore(SqliteStore):
    """The world's SQLite file, reporting its hosts as a multi-host PostgresStore does."""

    host_states = POSTGRES


def _cluster(world: World, store: SqliteStore | None = None) -> Sources:
    registry = ClusterRegistry(world.clock, dict(REDIS))
    client = Client(store, world.clock) if store is not None else world.sources.client
    return replace(
        world.sources, bus=ClusterBus(clock=world.clock), registry=registry, client=client
    )


def test_embedded_engines_say_nothing(world: World) -> None:
    """Memory bus and registry, SQLite store: no row, no table."""
    assert host_rows(world.sources) == []
    assert host_table(world.sources) == []


def test_one_row_per_host_joins_the_engines_on_it(world: World, tmp_path: Path) -> None:
    """A host's broker, Redis and PostgreSQL share its row (ports left out); an engine with
    nothing on a host leaves its cell empty."""
    sources = _cluster(world, ClusterStore(tmp_path / "agentdeck.db", clock=world.clock))
    assert host_rows(sources) == [
        HostRow("10.0.0.1", redis="down"),
        HostRow("10.0.0.2", redis="replica"),
        HostRow("10.0.0.3", redis="primary"),
        HostRow("h1", broker="down", postgres="down"),
        HostRow("h2", broker="connected", postgres="replica"),
        HostRow("h3", broker="?", postgres="primary"),
    ]


def test_servers_sharing_a_host_are_told_apart_by_port(world: World) -> None:
    """Several servers of one engine on one machine (a test box): each row is ``host:port``."""
    registry = ClusterRegistry(
        world.clock, {"127.0.0.1:7001": "primary", "127.0.0.1:7002": "replica"}
    )
    sources = replace(world.sources, registry=registry)
    assert host_rows(sources) == [
        HostRow("127.0.0.1:7001", redis="primary"),
        HostRow("127.0.0.1:7002", redis="replica"),
    ]
    header, first, second = (line.plain for line in host_table(sources))
    assert header.split() == ["host", "broker", "redis", "postgres"]
    assert first.index("primary") == header.index("redis")  # the columns line up
    assert first.rindex("-") == header.index("postgres")
    assert first.split() == ["…0.0.1:7001", "-", "primary", "-"]
    assert second.split() == ["…0.0.1:7002", "-", "replica", "-"]


def test_more_hosts_than_rows_say_how_many_are_left_out(world: World, tmp_path: Path) -> None:
    """Six hosts in three lines: two hosts, then how many more."""
    sources = _cluster(world, ClusterStore(tmp_path / "agentdeck.db", clock=world.clock))
    lines = [line.plain.rstrip() for line in host_table(sources, rows=3)]
    assert lines[1:] == [
        "10.0.0.1 -      down    -",
        "10.0.0.2 -      replica -",
        "… 4 more hosts",
    ]
    assert all(len(line) <= 35 for line in lines)  # the agents card's width at 80x24


async def test_reading_the_table_probes_the_registry_in_the_background(world: World) -> None:
    """A paint starts the registry's probe without waiting for it, and a paint right after
    starts none (at most one a second, whatever the repaint rate)."""
    sources = _cluster(world)
    registry = sources.registry
    assert isinstance(registry, ClusterRegistry)
    host_table(sources)
    assert registry.probes == 0  # started, not run: the paint did not wait
    await asyncio.sleep(0)
    assert registry.probes == 1
    host_table(sources)
    await asyncio.sleep(0)
    assert registry.probes == 1


async def test_the_overview_shows_the_cluster_table(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Under the agents card's breakers line: the header and a row per host; embedded, the
    card is as before."""
    sources = _cluster(world)

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        yield sources

    app = AgentdeckApp(connect, refresh_interval=None)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        agents = str(app.screen.query_one("#agents", Static).render())
        assert "host     broker redis   postgres\n10.0.0.1 -      down    -" in agents
        assert "… 4 more hosts" in agents
    plain = app_for()
    async with plain.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "broker" not in str(plain.screen.query_one("#agents", Static).render())


def test_the_overview_of_a_three_host_cluster_at_80x24(snap_compare: Snap, tmp_path: Path) -> None:
    """Three hosts, each with a broker, a Redis and a PostgreSQL: the bus on h2, h1's engines
    down after a failover, Redis and PostgreSQL primaries on h3."""
    path = tmp_path / "agentdeck.db"

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        world = await build_world(path, FakeClock(START))
        registry = ClusterRegistry(
            world.clock, {"h1:6379": "down", "h2:6379": "replica", "h3:6379": "primary"}
        )
        for agent in await world.registry.agents():  # the world's fleet, on the cluster
            await registry.register(agent, ttl=3600)
        for breaker in await world.registry.breakers():
            await registry.put_breaker(breaker, expected_version=None)
        try:
            yield replace(
                world.sources,
                bus=ClusterBus(clock=world.clock),
                registry=registry,
                client=Client(ClusterStore(path, clock=world.clock), world.clock),
            )
        finally:
            await world.close()

    app = AgentdeckApp(connect, refresh_interval=None)
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps())
