"""RedisRegistry against a real Redis on 127.0.0.1:6379: what the contract suite cannot see —
several nodes racing, tokens after Redis loses its data, Redis's own TTLs, the capability
index, and Redis going away.

Each test works under a random key prefix in database ``DB`` and deletes its keys after.
The test that empties a database uses ``FLUSH_DB``, which nothing else uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from agentdeck.backends import open_registry
from agentdeck.backends.redis import GC_MARGIN, RedisRegistry, split_registry_url
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, ConfigError
from agentdeck.core.models import AgentRecord, AgentState, new_id
from agentdeck.core.ports import BreakerRecord
from tests.conftest import require_service

pytestmark = pytest.mark.integration

HOST, PORT = "127.0.0.1", 6379
DB = 14
FLUSH_DB = 13
TTL = 10.0

Opener = Callable[..., Awaitable[RedisRegistry]]


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    """A plain client on the test database, to look behind the registry's back."""
    require_service("Redis", HOST, PORT)
    client = Redis(host=HOST, port=PORT, db=DB, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def open_node(clock: FakeClock, raw: Redis) -> AsyncIterator[Opener]:
    """Opens started registries (nodes) on one fresh prefix; closes them and deletes every key
    under the prefix, in each database used, after the test."""
    prefix = f"test-{new_id()}"
    nodes: list[RedisRegistry] = []
    databases = {DB}

    async def open_(db: int = DB, port: int = PORT, **kwargs: Any) -> RedisRegistry:
        url = f"redis://{HOST}:{port}/{db}?prefix={prefix}"
        node = RedisRegistry.from_url(url, clock=kwargs.pop("clock", clock), **kwargs)
        await node.start()
        nodes.append(node)
        databases.add(db)
        return node

    yield open_
    for node in nodes:
        await node.close()
    for db in databases:
        await delete_prefix(db, prefix)


async def delete_prefix(db: int, prefix: str) -> None:
    """Delete every key under ``prefix`` in database ``db``."""
    async with Redis(host=HOST, port=PORT, db=db) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.unlink(*keys)


@pytest.fixture
async def node(open_node: Opener) -> RedisRegistry:
    """One started registry."""
    return await open_node()


async def members(raw: Redis, key: str) -> set[str]:
    """The members of a set (redis-py types SMEMBERS for its sync and async clients at once)."""
    return set(await cast(Awaitable[set[str]], raw.smembers(key)))


def agent(agent_id: str, *capabilities: str) -> AgentRecord:
    """An agent record serving ``capabilities``."""
    return AgentRecord(
        id=agent_id,
        name=f"worker-{agent_id}",
        capabilities=capabilities,
        concurrency=2,
        state=AgentState.UP,
        started_at=1.0,
        last_seen=1.0,
    )


# ---------------------------------------------------------------------------- leases


async def test_lease_contention_has_exactly_one_winner_per_round(
    open_node: Opener, clock: FakeClock
) -> None:
    """Nodes asking for the lease at the same moment: one gets it, the others None, and all
    see the winner; after expiry the next round has one winner again, with a larger token."""
    nodes = [await open_node() for _ in range(4)]
    tokens = []
    for _ in range(3):
        results = await asyncio.gather(
            *(n.acquire_lease("leader", f"n{i}", TTL) for i, n in enumerate(nodes))
        )
        (winner,) = [r for r in results if r is not None]
        assert [await n.get_lease("leader") for n in nodes] == [winner] * len(nodes)
        tokens.append(winner.token)
        clock.advance(TTL + 1)
    assert tokens == sorted(set(tokens))


async def test_tokens_increase_across_expiry_release_and_holders(
    open_node: Opener, clock: FakeClock
) -> None:
    """Every new tenure (after expiry or release, same or other holder) has a larger token;
    extending keeps the token."""
    a, b = await open_node(), await open_node()
    seen = []
    for node, holder in [(a, "a"), (b, "b"), (a, "a"), (a, "a")]:
        lease = await node.acquire_lease("leader", holder, TTL)
        assert lease is not None
        extended = await node.acquire_lease("leader", holder, TTL)
        assert extended is not None
        assert extended.token == lease.token
        seen.append(lease.token)
        if holder == "b":
            await b.release_lease("leader", "b")
        else:
            clock.advance(TTL + 0.001)
    assert seen == sorted(set(seen))


async def test_lease_and_agent_keys_carry_a_redis_ttl_and_the_counter_does_not(
    node: RedisRegistry, raw: Redis
) -> None:
    """Redis collects a dead holder's lease and a dead agent's record by itself (ttl plus a
    margin), while the token counter lives on."""
    await node.acquire_lease("leader", "a", TTL)
    await node.register(agent("a1", "echo"), TTL)
    ceiling = (TTL + GC_MARGIN) * 1000
    assert TTL * 1000 < await raw.pttl(f"{node.prefix}:lease:leader") <= ceiling
    assert TTL * 1000 < await raw.pttl(f"{node.prefix}:agent:a1") <= ceiling
    assert await raw.pttl(f"{node.prefix}:lease-token:leader") == -1


# -------------------------------------------------------------------------- breakers


async def test_breaker_cas_race_has_one_winner(open_node: Opener) -> None:
    """Two nodes writing the same next version of a breaker at once: exactly one write lands,
    and the stored breaker is the winner's."""
    a, b = await open_node(), await open_node()
    for round_ in range(10):
        name = f"cap:race-{round_}"
        await a.put_breaker(BreakerRecord(name, "closed", {}, 1), None)
        results = await asyncio.gather(
            a.put_breaker(BreakerRecord(name, "open", {"by": "a"}, 2), 1),
            b.put_breaker(BreakerRecord(name, "half_open", {"by": "b"}, 2), 1),
        )
        assert sorted(results) == [False, True]
        stored = await b.get_breaker(name)
        assert stored is not None
        assert stored.data["by"] == ("a" if results[0] else "b")


# ------------------------------------------------------------------- capability index


async def test_capability_index_follows_registration_and_cleans_itself(
    node: RedisRegistry, raw: Redis
) -> None:
    """agents(cap) uses the index; ids whose record changed capabilities, was deregistered or
    was collected by Redis are dropped from it on the next read."""
    index = f"{node.prefix}:capability:echo"
    for agent_id in ("a1", "a2", "a3", "a4"):
        await node.register(agent(agent_id, "echo", "http"), TTL)
    await node.register(agent("a2", "shell"), TTL)  # changed its mind
    await node.deregister("a3")
    await raw.delete(f"{node.prefix}:agent:a4")  # as if Redis had collected it
    assert await members(raw, index) == {"a1", "a2", "a4"}
    assert [a.id for a in await node.agents("echo")] == ["a1"]
    assert await members(raw, index) == {"a1"}
    assert [a.id for a in await node.agents("shell")] == ["a2"]
    assert [a.id for a in await node.agents()] == ["a1", "a2"]
    assert await members(raw, f"{node.prefix}:agents") == {"a1", "a2"}


async def test_records_expire_by_the_readers_clock(open_node: Opener, clock: FakeClock) -> None:
    """A node whose clock is past an agent's expiry does not list it, while a node whose clock
    is not does: liveness is decided by the injected clock, not by Redis."""
    late_clock = FakeClock(clock.now() + TTL + 1)
    writer, late_reader = await open_node(), await open_node(clock=late_clock)
    await writer.register(agent("a1", "echo"), TTL)
    assert [a.id for a in await writer.agents("echo")] == ["a1"]
    assert await late_reader.agents("echo") == []


# ------------------------------------------------------------------- losing Redis data


async def test_after_redis_loses_everything_nodes_rebuild(
    open_node: Opener, clock: FakeClock
) -> None:
    """After FLUSHDB mid-run: heartbeats return False so agents register again, breakers are
    gone, and the lease is taken again with a larger token than any before."""
    node = await open_node(db=FLUSH_DB)
    await node.register(agent("a1", "echo"), TTL)
    await node.put_breaker(BreakerRecord("cap:echo", "open", {}, 3), None)
    before = await node.acquire_lease("leader", "n1", TTL)
    assert before is not None
    async with Redis(host=HOST, port=PORT, db=FLUSH_DB) as raw_flush:
        await raw_flush.flushdb()
    clock.advance(1.0)  # the next heartbeat tick
    assert not await node.heartbeat("a1", TTL, in_flight=0, state=AgentState.UP)
    assert await node.agents() == []
    await node.register(agent("a1", "echo"), TTL)
    assert [a.id for a in await node.agents("echo")] == ["a1"]
    assert await node.get_breaker("cap:echo") is None
    assert await node.breakers() == []
    assert await node.get_lease("leader") is None
    after = await node.acquire_lease("leader", "n1", TTL)
    assert after is not None
    assert after.token > before.token


# ------------------------------------------------------------------ connection faults


class Proxy:
    """A TCP relay to Redis that the test can cut and restore, as a network fault would."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, PORT)
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_redis_going_away_mid_run_is_backend_unavailable_then_recovers(
    open_node: Opener,
) -> None:
    """With Redis unreachable, calls raise BackendUnavailable naming host:port/db; once it is
    back the same registry works again without a restart."""
    proxy = Proxy()
    await proxy.start()
    try:
        node = await open_node(port=proxy.port)
        await node.register(agent("a1", "echo"), TTL)
        await proxy.cut()
        with pytest.raises(BackendUnavailable, match=rf"127\.0\.0\.1:{proxy.port}/{DB}"):
            await node.heartbeat("a1", TTL, in_flight=0, state=AgentState.UP)
        await proxy.start()
        assert await node.heartbeat("a1", TTL, in_flight=1, state=AgentState.UP)
    finally:
        await proxy.cut()


async def test_unreachable_url_fails_start_naming_the_host_without_the_password(
    clock: FakeClock,
) -> None:
    """start() against a port where nothing listens raises one BackendUnavailable line naming
    host:port/db after its bounded attempts; the password appears nowhere."""
    port = _free_port()
    node = RedisRegistry.from_url(
        f"redis://admin:hunter2@127.0.0.1:{port}/3",
        clock=clock,
        connect_attempts=2,
        connect_wait=0.01,
    )
    with pytest.raises(BackendUnavailable) as caught:
        await node.start()
    message = str(caught.value)
    assert f"127.0.0.1:{port}/3 after 2 attempt(s)" in message
    assert "\n" not in message
    assert "hunter2" not in message + repr(node) + str(caught.value.__cause__)


# ------------------------------------------------------------------------------ URLs


def test_url_gives_prefix_and_database(clock: FakeClock) -> None:
    """The prefix option is taken out of the URL redis-py sees; db and host are kept."""
    node = open_registry("redis://cache.internal:6380/2?prefix=prod&socket_timeout=3", clock=clock)
    assert isinstance(node, RedisRegistry)
    assert (node.prefix, node.where) == ("prod", "cache.internal:6380/2")
    assert split_registry_url("rediss://:pw@h/0") == ("rediss://:pw@h/0", "agentdeck")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis://", "expected 'redis://"),
        ("redis://:hunter2@host:6379/zero", "must be a number"),
        ("redis://:hunter2@host:6379/0?prefix=a*b", "bad Redis key prefix 'a\\*b'"),
        ("redis://:hunter2@host:6379/0?password=x", "unknown option.*password"),
        ("redis://:hunter2@host:port/0", "cannot parse"),
    ],
)
def test_bad_urls_are_config_errors_without_the_password(
    clock: FakeClock, url: str, complaint: str
) -> None:
    """A malformed redis URL is one ConfigError naming registry_url and the problem, never
    echoing the password."""
    with pytest.raises(ConfigError, match=complaint) as caught:
        open_registry(url, clock=clock)
    assert str(caught.value).startswith("registry_url: ")
    assert "hunter2" not in str(caught.value)
