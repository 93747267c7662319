"""What each engine's backend reports of its hosts, for the overview: the PostgreSQL hosts as
the last connection found them, the RabbitMQ brokers as the bus's connections saw them, the
Redis servers as the sentinels name them (asked at most every few seconds)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from agentdeck.backends.postgres.hosts import HostRing
from agentdeck.backends.rabbitmq.transport import (
    BrokerRing,
    CoalescingTransportFactory,
    Connection,
    broker_states,
)
from agentdeck.backends.redis_servers import INTERVAL, ServerStates
from agentdeck.core.clock import FakeClock
from tests.unit.test_postgres_host_ring import DSN, HOSTS, Hosts

# ---------------------------------------------------------------------------- PostgreSQL


async def test_postgres_hosts_are_unknown_until_a_connection_tries_them() -> None:
    """Before any connection every host is ``?``."""
    ring = HostRing(HOSTS, connect_timeout=9.0, opener=Hosts())
    assert ring.states() == {"h1:5432": "?", "h2:5432": "?", "h3:5433": "?"}


async def test_the_host_taken_read_write_is_the_primary_and_a_refusing_one_a_replica() -> None:
    """h1 silent (down), h2 refused as the wrong kind (a standby), h3 took it (primary)."""
    ring = HostRing(
        HOSTS, connect_timeout=9.0, opener=Hosts(h1="silent", h2="standby", h3="primary")
    )
    await ring.connect(DSN)
    assert ring.states() == {"h1:5432": "down", "h2:5432": "replica", "h3:5433": "primary"}


async def test_after_a_failover_the_old_primary_is_down_and_the_new_one_primary() -> None:
    """The last primary is tried first: when it stops answering, the next connection marks it
    down and names the new primary; a host not tried since keeps what was last seen."""
    hosts = Hosts(h1="primary", h2="standby")
    ring = HostRing(HOSTS, connect_timeout=9.0, opener=hosts)
    await ring.connect(DSN)
    assert ring.states() == {"h1:5432": "primary", "h2:5432": "?", "h3:5433": "?"}
    hosts.answers = {"h1": "refused", "h2": "primary", "h3": "standby"}
    await ring.connect(DSN)
    assert ring.states() == {"h1:5432": "down", "h2:5432": "primary", "h3:5433": "?"}


async def test_asking_for_a_standby_turns_the_kinds_round() -> None:
    """With ``target_session_attrs=standby`` the host that takes it is the replica and one
    that refuses as the wrong kind is the primary; with no kind asked, just ``connected``."""
    hosts = Hosts(h1="standby", h2="primary")  # (the fake refuses h1 as "the wrong kind")
    ring = HostRing(HOSTS, connect_timeout=9.0, opener=hosts)
    await ring.connect(DSN.replace("read-write", "standby"))
    assert ring.states()["h1:5432"] == "primary" and ring.states()["h2:5432"] == "replica"
    anyone = HostRing(HOSTS, connect_timeout=9.0, opener=Hosts(h1="primary"))
    await anyone.connect(DSN.split("?")[0])
    assert anyone.states()["h1:5432"] == "connected"


# ------------------------------------------------------------------------------ RabbitMQ


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections (and holds them open)."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class _Connected:
    """The two public parts of a robust connection ``broker_states`` reads."""

    def __init__(self, ring: BrokerRing, connected: bool) -> None:
        self.ring = ring
        self.connected = asyncio.Event()
        if connected:
            self.connected.set()


def _states(brokers: list[tuple[str, int]], *connections: _Connected | None) -> dict[str, str]:
    return broker_states(brokers, cast("list[Connection | None]", list(connections)))


async def test_brokers_are_connected_down_or_not_tried_as_the_transport_found_them(
    listener: int,
) -> None:
    """A dead first broker is passed over (down), the live one taken (connected), the third
    never tried (?)."""
    dead, spare = _closed_port(), _closed_port()
    brokers = [("127.0.0.1", dead), ("127.0.0.1", listener), ("127.0.0.1", spare)]
    ring = BrokerRing(brokers)
    factory = CoalescingTransportFactory(False, ring, host_timeout=2.0)
    _, writer = await factory.create("amqp://guest:guest@127.0.0.1/")
    try:
        assert _states(brokers, _Connected(ring, True)) == {
            f"127.0.0.1:{dead}": "down",
            f"127.0.0.1:{listener}": "connected",
            f"127.0.0.1:{spare}": "?",
        }
        # The connection dropped and is reconnecting: its broker is no longer "connected".
        assert _states(brokers, _Connected(ring, False))[f"127.0.0.1:{listener}"] == "lost"
    finally:
        writer.close()


def test_a_broker_left_for_another_is_lost_and_the_newest_sight_wins() -> None:
    """A connection that moved from a to b marks a lost; another connection that later found
    a refusing marks it down; a broker on which some connection is live is connected."""
    brokers = [("a", 1), ("b", 2), ("c", 3)]
    publisher, consumer = BrokerRing(brokers), BrokerRing(brokers)
    publisher.reached(("a", 1))
    publisher.reached(("b", 2))
    assert _states(brokers, _Connected(publisher, True), None) == {
        "a:1": "lost",
        "b:2": "connected",
        "c:3": "?",
    }
    consumer.failed(("a", 1))
    consumer.reached(("c", 3))
    assert _states(brokers, _Connected(publisher, True), _Connected(consumer, True)) == {
        "a:1": "down",
        "b:2": "connected",
        "c:3": "connected",
    }


# --------------------------------------------------------------------------------- Redis


class FakeSentinel:
    """``discover_master`` / ``discover_slaves`` as redis-py's Sentinel answers them, from
    what the test sets; counts the questions."""

    def __init__(self, primary: tuple[str, int] | None, replicas: list[tuple[str, int]]) -> None:
        self.primary, self.replicas = primary, replicas
        self.reachable = True
        self.asked = 0

    async def discover_master(self, service: str) -> tuple[str, int]:
        self.asked += 1
        if not self.reachable:
            raise MasterNotFoundError(f"No master found for {service!r} : refused")
        if self.primary is None:
            raise MasterNotFoundError(f"No master found for {service!r}")
        return self.primary

    async def discover_slaves(self, service: str) -> list[tuple[str, int]]:
        return list(self.replicas) if self.reachable else []


def _servers(sentinel: FakeSentinel, clock: FakeClock) -> ServerStates:
    return ServerStates(clock, sentinel=cast(Sentinel, sentinel), service="mymaster")


async def test_the_sentinels_name_the_primary_and_the_replicas() -> None:
    """One round: the primary and replicas as named, ports as numbers, hosts as text."""
    sentinel = FakeSentinel(("h1", 6379), [("h2", 6379), ("h3", 6379)])
    servers = _servers(sentinel, FakeClock(0.0))
    assert servers.states == {}
    assert await servers.refresh(None) == {
        "h1:6379": "primary",
        "h2:6379": "replica",
        "h3:6379": "replica",
    }


async def test_the_sentinels_are_asked_at_most_every_interval() -> None:
    """A refresh sooner than INTERVAL answers from the last round; after it, a new round
    sees the failover: the new primary, and the old one (named by nobody now) down."""
    clock = FakeClock(0.0)
    sentinel = FakeSentinel(("h1", 6379), [("h2", 6379)])
    servers = _servers(sentinel, clock)
    await servers.refresh(None)
    sentinel.primary, sentinel.replicas = ("h2", 6379), []
    clock.advance(INTERVAL / 2)
    assert await servers.refresh(None) == {"h1:6379": "primary", "h2:6379": "replica"}
    assert sentinel.asked == 1
    clock.advance(INTERVAL / 2)
    assert await servers.refresh(None) == {"h1:6379": "down", "h2:6379": "primary"}
    assert sentinel.asked == 2


async def test_mid_failover_the_old_primary_is_down_and_unreachable_sentinels_say_nothing() -> None:
    """No healthy primary yet but a replica named: the old primary is down. No sentinel
    answering at all: every server is ``?``, not down."""
    clock = FakeClock(0.0)
    sentinel = FakeSentinel(("h1", 6379), [("h2", 6379)])
    servers = _servers(sentinel, clock)
    await servers.refresh(None)
    sentinel.primary = None
    clock.advance(INTERVAL)
    assert await servers.refresh(None) == {"h1:6379": "down", "h2:6379": "replica"}
    sentinel.reachable = False
    clock.advance(INTERVAL)
    assert await servers.refresh(None) == {"h1:6379": "?", "h2:6379": "?"}


async def test_a_sentinel_error_the_client_does_not_catch_leaves_every_server_unknown() -> None:
    """A refusal redis-py passes on (a sentinel that wants a password, say) is not raised to
    the screen: the servers are ``?`` until the next round."""
    clock = FakeClock(0.0)
    sentinel = FakeSentinel(("h1", 6379), [("h2", 6379)])
    servers = _servers(sentinel, clock)
    await servers.refresh(None)

    async def refused(service: str) -> list[tuple[str, int]]:
        raise ResponseError("NOAUTH Authentication required.")

    sentinel.discover_slaves = refused  # type: ignore[method-assign]
    clock.advance(INTERVAL)
    assert await servers.refresh(None) == {"h1:6379": "?", "h2:6379": "?"}


class FakeRedis:
    """A lone server's client: PING answers or fails as the test says."""

    def __init__(self) -> None:
        self.up = True

    async def ping(self) -> bool:
        if not self.up:
            raise RedisConnectionError("refused")
        return True


async def test_a_lone_server_is_connected_while_it_answers_a_ping() -> None:
    """Without Sentinel: ``?`` before any PING, ``connected`` when it answers, ``down`` not."""
    clock = FakeClock(0.0)
    client: Any = FakeRedis()
    servers = ServerStates(clock, server="r1:6379")
    assert servers.states == {"r1:6379": "?"}
    assert await servers.refresh(client) == {"r1:6379": "connected"}
    client.up = False
    clock.advance(INTERVAL)
    assert await servers.refresh(client) == {"r1:6379": "down"}
