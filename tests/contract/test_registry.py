"""The Registry contract, run against every registry backend.

Written against core.ports.Registry only: a new engine is one more entry in ``REGISTRY_URLS``.
Time is the test's FakeClock, handed to the backend, so expiry is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from agentdeck import backends
from agentdeck.backends import open_registry
from agentdeck.backends.sqlite import SqliteRegistry
from agentdeck.backends.sqlite.registry import sqlite_path
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConfigError
from agentdeck.core.models import AgentRecord, AgentState, new_id
from agentdeck.core.ports import BreakerRecord, Registry
from tests.conftest import require_service

pytestmark = pytest.mark.contract

#: Every Redis key prefix of this test process starts with this; they go when it exits.
REDIS_RUN = f"contract-{new_id()}"


def _redis_url(folder: Path) -> str:
    """Redis on 127.0.0.1:6379, database 15, under a key prefix private to the test (skipped
    when Redis is absent, a failure in CI)."""
    require_service("Redis", "127.0.0.1", 6379)
    _delete_redis_keys_at_exit()
    return f"redis://127.0.0.1:6379/15?prefix={REDIS_RUN}-{new_id()}"


@functools.cache
def _delete_redis_keys_at_exit() -> None:
    atexit.register(_delete_redis_run_keys)


def _delete_redis_run_keys() -> None:
    """Delete the keys this process's tests left in Redis (breakers and lease counters never
    expire by themselves)."""
    with (
        contextlib.suppress(redis.RedisError),
        redis.Redis(host="127.0.0.1", port=6379, db=15) as client,
    ):
        keys = list(client.scan_iter(match=f"{REDIS_RUN}-*", count=1000))
        if keys:
            client.unlink(*keys)


#: Each backend as a function of a folder private to the test -> the registry's URL.
REGISTRY_URLS: list[object] = [
    pytest.param(lambda folder: "memory://", id="memory"),
    pytest.param(lambda folder: f"sqlite:///{folder}/registry.db", id="sqlite"),
    pytest.param(_redis_url, id="redis"),
]

TTL = 10.0


@pytest.fixture(params=REGISTRY_URLS)
async def registry(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Registry]:
    """A started registry of each backend on the test's clock, closed after the test."""
    url_for: Callable[[Path], str] = request.param
    instance = open_registry(url_for(tmp_path), clock=clock)
    await instance.start()
    yield instance
    await instance.close()


def agent(agent_id: str = "a1", *capabilities: str, name: str = "worker") -> AgentRecord:
    """An agent record; ``last_seen`` is deliberately stale, the registry stamps its own."""
    return AgentRecord(
        id=agent_id,
        name=name,
        capabilities=capabilities or ("echo",),
        concurrency=4,
        state=AgentState.UP,
        started_at=1.0,
        last_seen=1.0,
        host="node-1",
        pid=4242,
    )


def breaker(version: int, state: str = "closed", **data: object) -> BreakerRecord:
    """A breaker record named ``cap:echo``."""
    return BreakerRecord(name="cap:echo", state=state, data=data, version=version)


# ----------------------------------------------------------------------------------- agents


async def test_registered_agent_is_listed_with_the_registry_clock_as_last_seen(
    registry: Registry, clock: FakeClock
) -> None:
    """A registered record comes back whole, with last_seen set to the registry's now."""
    await registry.register(agent("a1", "echo", "sleep"), TTL)
    (listed,) = await registry.agents()
    assert listed == AgentRecord(
        id="a1",
        name="worker",
        capabilities=("echo", "sleep"),
        concurrency=4,
        state=AgentState.UP,
        started_at=1.0,
        last_seen=clock.now(),
        host="node-1",
        pid=4242,
    )


async def test_registering_again_replaces_the_record(registry: Registry) -> None:
    """A second register with the same id replaces the first record."""
    await registry.register(agent("a1", "echo"), TTL)
    await registry.register(agent("a1", "shell"), TTL)
    assert [a.capabilities for a in await registry.agents()] == [("shell",)]


async def test_agents_are_listed_by_name_and_filtered_by_capability(registry: Registry) -> None:
    """agents() lists every live agent by name; with a capability, only those serving it."""
    await registry.register(agent("a1", "echo", "http", name="zeta"), TTL)
    await registry.register(agent("a2", "shell", name="alpha"), TTL)
    await registry.register(agent("a3", "echo", name="mid"), TTL)
    assert [a.id for a in await registry.agents()] == ["a2", "a3", "a1"]
    assert [a.id for a in await registry.agents("echo")] == ["a3", "a1"]
    assert [a.id for a in await registry.agents("ech")] == []


async def test_record_lives_exactly_its_ttl(registry: Registry, clock: FakeClock) -> None:
    """A record is listed until its ttl has passed, and not a moment after."""
    await registry.register(agent(), TTL)
    clock.advance(TTL)
    assert [a.id for a in await registry.agents()] == ["a1"]
    clock.advance(0.001)
    assert await registry.agents() == []


async def test_heartbeat_refreshes_the_record_and_its_counters(
    registry: Registry, clock: FakeClock
) -> None:
    """A heartbeat moves last_seen and the expiry on, and stores the agent's live numbers."""
    await registry.register(agent(), TTL)
    clock.advance(TTL - 1)
    assert await registry.heartbeat(
        "a1", TTL, in_flight=3, state=AgentState.DRAINING, succeeded=7, failed=2
    )
    clock.advance(TTL - 1)  # past the first ttl, within the refreshed one
    (listed,) = await registry.agents()
    assert (listed.in_flight, listed.state, listed.succeeded, listed.failed) == (
        3,
        AgentState.DRAINING,
        7,
        2,
    )
    assert listed.last_seen == clock.now() - (TTL - 1)


async def test_heartbeat_after_expiry_returns_false_and_does_not_revive(
    registry: Registry, clock: FakeClock
) -> None:
    """An expired agent's heartbeat is refused (it must register again)."""
    await registry.register(agent(), TTL)
    clock.advance(TTL + 1)
    assert not await registry.heartbeat("a1", TTL, in_flight=0, state=AgentState.UP)
    assert await registry.agents() == []


async def test_heartbeat_of_an_unknown_agent_returns_false(registry: Registry) -> None:
    """A heartbeat for an agent never registered is refused."""
    assert not await registry.heartbeat("ghost", TTL, in_flight=0, state=AgentState.UP)


async def test_deregister_removes_the_agent_and_ignores_unknown_ones(registry: Registry) -> None:
    """deregister removes a record; an unknown id is not an error."""
    await registry.register(agent("a1"), TTL)
    await registry.register(agent("a2"), TTL)
    await registry.deregister("a1")
    await registry.deregister("ghost")
    assert [a.id for a in await registry.agents()] == ["a2"]


@pytest.mark.parametrize("ttl", [0, -1.0])
async def test_ttl_must_be_positive(registry: Registry, ttl: float) -> None:
    """register, heartbeat and acquire_lease refuse a ttl that is not positive."""
    with pytest.raises(ValueError, match="ttl"):
        await registry.register(agent(), ttl)
    with pytest.raises(ValueError, match="ttl"):
        await registry.heartbeat("a1", ttl, in_flight=0, state=AgentState.UP)
    with pytest.raises(ValueError, match="ttl"):
        await registry.acquire_lease("leader", "node-a", ttl)


# --------------------------------------------------------------------------------- breakers


async def test_unknown_breaker_is_none(registry: Registry) -> None:
    """A breaker never written has no shared state."""
    assert await registry.get_breaker("cap:echo") is None


async def test_breaker_is_created_only_when_it_does_not_exist(registry: Registry) -> None:
    """put_breaker with expected_version None creates it once; a second creation loses."""
    assert await registry.put_breaker(breaker(1, failures=[1.5, 2.5]), None)
    assert not await registry.put_breaker(breaker(1, state="open"), None)
    assert await registry.get_breaker("cap:echo") == breaker(1, failures=[1.5, 2.5])


async def test_breaker_write_needs_the_current_version(registry: Registry) -> None:
    """put_breaker writes when the stored version matches, and refuses a stale version."""
    await registry.put_breaker(breaker(1), None)
    assert await registry.put_breaker(breaker(2, state="open", opened_at=5.0), 1)
    assert not await registry.put_breaker(breaker(2, state="half_open"), 1)
    assert await registry.get_breaker("cap:echo") == breaker(2, state="open", opened_at=5.0)


async def test_breaker_write_to_a_missing_breaker_with_a_version_loses(registry: Registry) -> None:
    """A versioned write to a breaker that does not exist is refused."""
    assert not await registry.put_breaker(breaker(2), 1)
    assert await registry.get_breaker("cap:echo") is None


async def test_breakers_lists_every_breaker_by_name(registry: Registry) -> None:
    """breakers() returns every breaker with shared state, by name."""
    for name in ("cap:shell", "agent:a1", "cap:echo"):
        await registry.put_breaker(BreakerRecord(name, "closed", {}, 1), None)
    assert [b.name for b in await registry.breakers()] == ["agent:a1", "cap:echo", "cap:shell"]


# ----------------------------------------------------------------------------------- leases


async def test_free_lease_is_granted_with_a_token_and_expiry(
    registry: Registry, clock: FakeClock
) -> None:
    """A free lease goes to the first asker, expiring ttl from now."""
    lease = await registry.acquire_lease("leader", "node-a", TTL)
    assert lease is not None
    assert (lease.name, lease.holder, lease.expires_at) == ("leader", "node-a", clock.now() + TTL)
    assert await registry.get_lease("leader") == lease


async def test_held_lease_is_refused_to_another_holder(registry: Registry) -> None:
    """While the lease is held and unexpired, another holder gets None."""
    held = await registry.acquire_lease("leader", "node-a", TTL)
    assert await registry.acquire_lease("leader", "node-b", TTL) is None
    assert await registry.get_lease("leader") == held


async def test_holder_extends_its_lease_keeping_the_token(
    registry: Registry, clock: FakeClock
) -> None:
    """The holder asking again extends the expiry and keeps its fencing token."""
    first = await registry.acquire_lease("leader", "node-a", TTL)
    clock.advance(TTL - 1)
    again = await registry.acquire_lease("leader", "node-a", TTL)
    assert first is not None
    assert again is not None
    assert (again.token, again.expires_at) == (first.token, clock.now() + TTL)
    clock.advance(TTL - 1)  # past the first expiry, within the extended one
    assert await registry.acquire_lease("leader", "node-b", TTL) is None


async def test_expired_lease_is_taken_over_with_a_larger_token(
    registry: Registry, clock: FakeClock
) -> None:
    """Once the lease has lapsed another holder takes it with a strictly larger token."""
    old = await registry.acquire_lease("leader", "node-a", TTL)
    clock.advance(TTL + 0.001)
    assert await registry.get_lease("leader") is None
    new = await registry.acquire_lease("leader", "node-b", TTL)
    assert old is not None
    assert new is not None
    assert new.holder == "node-b"
    assert new.token > old.token


async def test_lease_holder_back_after_expiry_gets_a_new_token(
    registry: Registry, clock: FakeClock
) -> None:
    """A holder whose lease lapsed starts a new tenure: a larger token, not the old one."""
    old = await registry.acquire_lease("leader", "node-a", TTL)
    clock.advance(TTL + 1)
    again = await registry.acquire_lease("leader", "node-a", TTL)
    assert old is not None
    assert again is not None
    assert again.token > old.token


async def test_released_lease_goes_to_the_next_asker_with_a_larger_token(
    registry: Registry,
) -> None:
    """After its holder releases it, the lease is free at once and the token still grows."""
    old = await registry.acquire_lease("leader", "node-a", TTL)
    await registry.release_lease("leader", "node-a")
    assert await registry.get_lease("leader") is None
    new = await registry.acquire_lease("leader", "node-b", TTL)
    assert old is not None
    assert new is not None
    assert new.token > old.token


async def test_release_by_someone_else_is_ignored(registry: Registry) -> None:
    """Only the holder can release a lease."""
    held = await registry.acquire_lease("leader", "node-a", TTL)
    await registry.release_lease("leader", "node-b")
    assert await registry.get_lease("leader") == held


async def test_leases_with_different_names_are_independent(registry: Registry) -> None:
    """Holding one lease says nothing about another name."""
    await registry.acquire_lease("leader", "node-a", TTL)
    other = await registry.acquire_lease("compactor", "node-b", TTL)
    assert other is not None
    assert other.holder == "node-b"


# ---------------------------------------------------------------------- SqliteRegistry only


async def test_two_sqlite_registries_on_one_file_see_each_other(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Agents, breakers and leases written through one instance are seen through another
    (as the daemon's are by ``agentdeck agents`` in another shell)."""
    path = tmp_path / "shared" / "registry.db"
    daemon, cli = SqliteRegistry(path, clock=clock), SqliteRegistry(path, clock=clock)
    await daemon.start()
    await cli.start()
    try:
        await daemon.register(agent("a1"), TTL)
        await daemon.put_breaker(breaker(1), None)
        held = await daemon.acquire_lease("leader", "daemon", TTL)
        assert [a.id for a in await cli.agents()] == ["a1"]
        assert await cli.get_breaker("cap:echo") == breaker(1)
        assert await cli.get_lease("leader") == held
        assert await cli.acquire_lease("leader", "cli", TTL) is None
        assert not await cli.put_breaker(breaker(2), None)
    finally:
        await daemon.close()
        await cli.close()


async def test_sqlite_lease_race_has_exactly_one_winner(clock: FakeClock, tmp_path: Path) -> None:
    """Two instances asking for a free lease at the same moment: one gets it, the other None."""
    path = tmp_path / "registry.db"
    nodes = [SqliteRegistry(path, clock=clock) for _ in range(4)]
    for node in nodes:
        await node.start()
    try:
        for round_ in range(5):
            name = f"lease-{round_}"
            results = await asyncio.wait_for(
                asyncio.gather(*(n.acquire_lease(name, f"n{i}", TTL) for i, n in enumerate(nodes))),
                2,
            )
            winners = [r for r in results if r is not None]
            assert len(winners) == 1
            assert await nodes[0].get_lease(name) == winners[0]
    finally:
        for node in nodes:
            await node.close()


async def test_sqlite_tokens_keep_growing_across_restarts(clock: FakeClock, tmp_path: Path) -> None:
    """The fencing token survives closing and reopening the file."""
    path = tmp_path / "registry.db"
    first = SqliteRegistry(path, clock=clock)
    await first.start()
    old = await first.acquire_lease("leader", "node-a", TTL)
    await first.close()
    clock.advance(TTL + 1)
    second = SqliteRegistry(path, clock=clock)
    await second.start()
    new = await second.acquire_lease("leader", "node-b", TTL)
    await second.close()
    assert old is not None
    assert new is not None
    assert new.token > old.token


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/agentdeck/registry.db", "/var/lib/agentdeck/registry.db"),
        ("sqlite:////var/lib/agentdeck/registry.db", "/var/lib/agentdeck/registry.db"),
        ("sqlite:///with%20space/registry.db", "/with space/registry.db"),
    ],
)
def test_sqlite_registry_url_names_an_absolute_file(url: str, path: str) -> None:
    """sqlite:///abs (and sqlite:////abs) name the absolute file."""
    assert sqlite_path(url) == Path(path)


def test_sqlite_registry_url_may_be_relative_to_cwd_or_home() -> None:
    """sqlite://rel/x.db is under the working directory, sqlite://~/x.db under home."""
    assert sqlite_path("sqlite://state/registry.db") == Path.cwd() / "state" / "registry.db"
    assert sqlite_path("sqlite://~/registry.db") == Path.home() / "registry.db"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///var/lib/",
        "sqlite:///x.db?mode=ro",
        "sqlite://:memory:",
        "sqlite://admin:hunter2@host/x.db",
    ],
)
def test_open_registry_refuses_bad_sqlite_urls_without_showing_secrets(
    clock: FakeClock, url: str
) -> None:
    """A malformed sqlite URL is a ConfigError naming registry_url, never echoing a password."""
    with pytest.raises(ConfigError, match=r"^registry_url: ") as caught:
        open_registry(url, clock=clock)
    assert "hunter2" not in str(caught.value)


def test_open_registry_memory_url_takes_nothing_after_the_scheme(clock: FakeClock) -> None:
    """memory:// with a host or path is refused."""
    with pytest.raises(ConfigError, match="memory://"):
        open_registry("memory://somewhere/registry", clock=clock)


# ------------------------------------------------------------------------------ URL choice


def test_open_registry_says_when_a_known_backend_module_is_missing(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A known scheme whose backend module is absent is a ConfigError saying so."""
    monkeypatch.setitem(backends.REGISTRY, "etcd", "agentdeck.backends.no_such_module:EtcdRegistry")
    with pytest.raises(ConfigError, match=r"registry_url: the etcd:// backend .* is not part"):
        open_registry("etcd://host:2379", clock=clock)


def test_open_registry_says_which_driver_to_install(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A backend whose driver is not installed is a ConfigError naming the package to install,
    without the URL's password."""
    (tmp_path / "fake_registry_backend.py").write_text("import agentdeck_absent_driver.client\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setitem(backends.REGISTRY, "fake", "fake_registry_backend:FakeRegistry")
    with pytest.raises(ConfigError) as caught:
        open_registry("fake://:topsecret@cache:6379/0", clock=clock)
    message = str(caught.value)
    assert message.startswith("registry_url: the fake:// backend needs")
    assert "pip install agentdeck_absent_driver" in message
    assert "topsecret" not in message
