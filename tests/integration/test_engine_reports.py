"""What the backends report of their hosts, against real engines on 127.0.0.1: a PostgreSQL
URL whose first host is a closed port, a RabbitMQ URL with dead brokers around the live one
(and a broker that dies, played by a proxy), a Redis Sentinel set this module starts (a
primary, a replica, three sentinels) and a forced failover of it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from textual.widgets import Static

from agentdeck.backends import open_registry
from agentdeck.backends.postgres import PostgresStore
from agentdeck.backends.rabbitmq import RabbitBus
from agentdeck.backends.redis import RedisRegistry
from agentdeck.backends.redis_servers import INTERVAL
from agentdeck.core.clock import FakeClock
from agentdeck.core.models import new_id
from agentdeck.core.settings import Settings
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.compose import control_centre
from agentdeck.tui.engines import HostRow, host_rows
from tests.conftest import require_service
from tests.integration.test_postgres_hosts import url, with_hosts
from tests.integration.test_rabbitmq import AIORMQ_WRITER_LEAK, HOST, PORT, publish
from tests.integration.test_rabbitmq_ha import LIVE, Proxy, dead_port, proxy, started
from tests.integration.test_redis_sentinel import SentinelCluster, sentinel_cluster
from tests.tui.test_app import SIZE, ready

pytestmark = pytest.mark.integration

FIXTURES = (url, proxy)
"""Fixtures imported from the other modules (named here so the imports read as used)."""


async def test_a_multi_host_store_reports_the_primary_and_the_dead_host(
    url: str, clock: FakeClock
) -> None:
    """Host 1 is a closed port: after the first statement it is down and the live server,
    taken read-write, is the primary."""
    store = PostgresStore.from_url(with_hosts(url, "127.0.0.1:1,127.0.0.1:5432"), clock=clock)
    try:
        assert store.host_states == {"127.0.0.1:1": "?", "127.0.0.1:5432": "?"}
        await store.migrate()
        assert store.host_states == {"127.0.0.1:1": "down", "127.0.0.1:5432": "primary"}
    finally:
        await store.close()


async def test_a_single_host_store_is_connected_while_its_pool_is_open(
    url: str, clock: FakeClock
) -> None:
    """One host: ``?`` before the pool opens, ``connected`` once it has."""
    store = PostgresStore.from_url(url, clock=clock)
    try:
        [host] = store.host_states
        assert store.host_states == {host: "?"}
        await store.migrate()
        assert store.host_states == {host: "connected"}
    finally:
        await store.close()


async def test_the_bus_reports_the_broker_it_is_on_and_those_that_failed(clock: FakeClock) -> None:
    """A dead broker listed first is down, the live one connected, one listed after it and
    never needed is ``?``."""
    require_service("RabbitMQ", HOST, PORT)
    first, last = dead_port(), dead_port()
    hosts = f"{HOST}:{first},{LIVE},{HOST}:{last}"
    async with started(f"amqp://guest:guest@{hosts}/?prefix=test-{new_id()}", clock) as bus:
        assert bus.broker_states == {
            f"{HOST}:{first}": "down",
            LIVE: "connected",
            f"{HOST}:{last}": "?",
        }


@pytest.mark.filterwarnings(AIORMQ_WRITER_LEAK)
async def test_a_broker_that_dies_is_reported_lost_and_the_new_one_connected(
    clock: FakeClock, proxy: Proxy
) -> None:
    """The bus on a node that dies reconnects to the next one: that one is connected, the
    dead node lost."""
    via = f"{HOST}:{proxy.port}"
    url = f"amqp://guest:guest@{via},{LIVE}/?prefix=test-{new_id()}&reconnect_interval=0.1"
    async with started(url, clock) as bus:
        assert bus.broker_states == {via: "connected", LIVE: "?"}
        await proxy.stop()
        await publish(bus, "ha", "after")  # waits for the reconnection, to the live broker
        assert bus.broker_states == {via: "lost", LIVE: "connected"}
    gc.collect()  # report the driver's leaked writers here, where they are expected


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    """A primary, a replica and three sentinels for this module, stopped after it."""
    with sentinel_cluster(tmp_path_factory.mktemp("sentinel-reports")) as running:
        yield running


@pytest.fixture
async def sentinel_registry(
    sentinels: SentinelCluster, clock: FakeClock
) -> AsyncIterator[RedisRegistry]:
    """A started registry on the module's sentinel URL."""
    registry = open_registry(f"{sentinels.url}?prefix=t-{new_id()}", clock=clock)
    assert isinstance(registry, RedisRegistry)
    await registry.start()
    yield registry
    await registry.close()


async def test_the_registry_reports_what_the_sentinels_name_and_follows_a_failover(
    sentinel_registry: RedisRegistry, sentinels: SentinelCluster, clock: FakeClock
) -> None:
    """The primary and the replica as the sentinels name them; after ``SENTINEL FAILOVER``
    the old answer stands until the interval has passed, then the roles are swapped."""
    registry = sentinel_registry
    assert registry.server_states == {}  # nothing asked yet
    old = sentinels.master()
    other = sentinels.replica if old == sentinels.primary else sentinels.primary
    before = {f"{HOST}:{old}": "primary", f"{HOST}:{other}": "replica"}
    assert await registry.probe_servers() == before
    assert registry.server_states == before

    await asyncio.to_thread(sentinels.failover)
    assert await registry.probe_servers() == before  # (asked less than INTERVAL ago)
    clock.advance(INTERVAL)
    after = await registry.probe_servers()
    # The demoted primary may be listed again as a replica only once the sentinels have seen
    # it follow the new one; until then it is named by none of them: down.
    assert after[f"{HOST}:{other}"] == "primary"
    assert after[f"{HOST}:{old}"] in ("replica", "down")


async def test_a_lone_redis_is_connected_while_it_answers(clock: FakeClock) -> None:
    """A plain ``redis://`` registry: its one server, ``connected`` once PINGed."""
    require_service("Redis", "127.0.0.1", 6379)
    registry = open_registry(f"redis://127.0.0.1:6379/0?prefix=t-{new_id()}", clock=clock)
    assert isinstance(registry, RedisRegistry)
    await registry.start()
    try:
        assert registry.server_states == {"127.0.0.1:6379": "?"}
        assert await registry.probe_servers() == {"127.0.0.1:6379": "connected"}
    finally:
        await registry.close()


async def test_an_attached_control_centre_shows_the_engines_per_host(
    url: str, tmp_path: Path
) -> None:
    """The real wiring, attached to RabbitMQ, Redis and PostgreSQL whose URLs list a dead
    port on 127.0.0.1 before the live server on ``localhost``: the overview's table has a row
    for each, the dead one down for the broker and PostgreSQL, the live one in use, Redis in
    use, PostgreSQL primary."""
    require_service("RabbitMQ", HOST, PORT)
    require_service("Redis", "127.0.0.1", 6379)
    dead = dead_port()
    bus_url = f"amqp://guest:guest@127.0.0.1:{dead},localhost:{PORT}/?prefix=test-{new_id()}"
    settings = Settings.load(
        config_path=None,
        home=tmp_path,
        node="tui-engines",
        bus_url=bus_url,
        registry_url=f"redis://localhost:6379/0?prefix=t-{new_id()}",
        store_url=with_hosts(url, f"127.0.0.1:{dead},localhost:5432"),
    )
    app = AgentdeckApp(control_centre(settings), refresh_interval=None)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert app.sources is not None
            await app.sources.registry.probe_servers()  # type: ignore[attr-defined]
            await app.refresh_now()
            await pilot.pause()
            assert host_rows(app.sources) == [
                HostRow("127.0.0.1", broker="down", postgres="down"),
                HostRow("localhost", broker="connected", redis="connected", postgres="primary"),
            ]
            agents = str(app.screen.query_one("#agents", Static).render())
            assert "host      broker redis   postgres\n127.0.0.1 down   -       down" in agents
            assert "localhost in use in use  primary" in agents
    finally:
        # The attached control centre declared the prefix's reports and dead queues: gone too.
        await RabbitBus.from_url(bus_url, clock=FakeClock()).delete_topology()
