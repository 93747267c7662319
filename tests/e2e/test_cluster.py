"""The HA test hosts of ``scripts/cluster.sh``: each engine answers, fails over and rejoins.

One cluster (``tests/e2e/conftest.py``'s ``shared_cluster``: ``down`` first, so it starts new
with every primary on h1; ``down`` at the end of the session, also after a failure;
``test_cluster_faults.py``, next in file order, renews it). The tests talk to the
engines from the root namespace at the URLs ``scripts/cluster.sh env`` prints, with the engines'
own client libraries: asyncpg (a multi-host URL, read-write target), redis-py's Sentinel client,
aio-pika; and agentdeck's own registry (its Sentinel client: each sentinel asked once per
discovery within ``sentinel_timeout``) for the time a daemon takes to follow a cut. They run in
file order: the cut and the kill come last, and leave the cluster healthy.

The figures (how long ``up`` took, each failover) are printed past the capture:
``.venv/bin/python -m pytest -q -p no:cacheprovider -m cluster tests/e2e/test_cluster.py``.

Needs root (network namespaces); a missing ``ip`` or a non-root user skips, except in CI
(``CI=true``) where it is a failure. The script installs the engines it needs itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
import asyncpg
import pytest
from redis.asyncio.sentinel import Sentinel

from agentdeck.backends.postgres.url import parse_url
from agentdeck.backends.redis import RedisRegistry
from agentdeck.core.clock import SystemClock
from tests.conftest import ROOT
from tests.e2e.cluster_hosts import SharedCluster

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.slow,
    # The first test also waits for `up`; a failover is expected in ~5 s (Redis) and ~15 s
    # (Patroni), but the machine may be busy.
    pytest.mark.timeout(1500),
]

SCRIPT = ROOT / "scripts" / "cluster.sh"
UP_TIMEOUT = 900.0
"""Seconds `scripts/cluster.sh up` may take (~75 s on an idle machine; installs may add more)."""
FAILOVER_LIMIT = 90.0
"""Seconds a new primary may take to take writes after its host is cut off (goal: < 30 s)."""
REJOIN_LIMIT = 300.0
"""Seconds a healed or restarted host may take to be back in every cluster."""
RABBIT_RESUME_LIMIT = 90.0
"""Seconds a RabbitMQ node paused by pause_minority may take to resume after a heal."""
HOST_IPS = {"h1": "10.213.7.1", "h2": "10.213.7.2", "h3": "10.213.7.3"}


def run(*args: str, timeout: float = 120.0) -> str:
    """``scripts/cluster.sh *args``'s output; a failure or a time-out fails the test."""
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/cluster.sh {' '.join(args)} took more than {timeout:.0f} s")
    if done.returncode != 0:
        pytest.fail(
            f"scripts/cluster.sh {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
        )
    return done.stdout


def status() -> dict[str, dict[str, str]]:
    """``status`` as {host: {field: value}}, e.g. ``status()["h1"]["redis"] == "primary"``."""
    hosts = {}
    for line in run("status").splitlines():
        name, ip, *fields = line.split()
        hosts[name] = {"ip": ip, **dict(field.split("=", 1) for field in fields)}
    return hosts


@dataclass(frozen=True)
class Cluster:
    """The URLs of a running cluster and how long ``up`` took to bring it up."""

    bus_url: str = field(repr=False)  # the URLs hold passwords: never in a failure report
    registry_url: str = field(repr=False)
    store_url: str = field(repr=False)
    up_seconds: float

    def amqp_url(self, host: str) -> str:
        """The bus URL narrowed to one node (``h1``, ``h2`` or ``h3``)."""
        scheme, rest = self.bus_url.split("://", 1)
        netloc, vhost = rest.split("/", 1)
        userinfo = netloc.rsplit("@", 1)[0]
        return f"{scheme}://{userinfo}@{host}:5672/{vhost}"

    def store_url_for(self, host: str) -> str:
        """The store URL narrowed to one host."""
        head, tail = self.store_url.split("@", 1)
        return f"{head}@{host}:5432/{tail.split('/', 1)[1]}"

    def sentinels(self) -> list[tuple[str, int]]:
        """The Sentinels named in the registry URL."""
        netloc = self.registry_url.split("://", 1)[1].split("/", 1)[0]
        return [(host, int(port)) for host, port in (a.split(":") for a in netloc.split(","))]


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Prints a figure past pytest's capture."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\ncluster: {line}")

    return write


@pytest.fixture(scope="module")
def cluster(shared_cluster: SharedCluster) -> Cluster:
    """The session's cluster (``tests/e2e/conftest.py``): new, with its primaries on h1, when
    this module starts first (as in the whole suite); ``test_cluster_faults.py`` renews it."""
    urls = shared_cluster.ensure()
    return Cluster(
        bus_url=urls["AGENTDECK_BUS_URL"],
        registry_url=urls["AGENTDECK_REGISTRY_URL"],
        # asyncpg itself is the client here: the URL without agentdeck's own options
        # (command_timeout=10), which it would send to the server as settings.
        store_url=parse_url(urls["AGENTDECK_STORE_URL"]).dsn,
        up_seconds=shared_cluster.up_seconds,
    )


async def eventually(what: str, limit: float, probe: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until ``probe()`` is true, polling; fails the test after ``limit`` seconds."""
    started = time.monotonic()
    last: BaseException | None = None
    while True:
        try:
            if await probe():
                return time.monotonic() - started
        except Exception as exc:  # any failure of the engine or the probe: try again
            last = exc
        if time.monotonic() - started > limit:
            pytest.fail(f"{what}: not within {limit:.0f} s (last error: {last!r})")
        await asyncio.sleep(0.5)


async def pg_primary(url: str, timeout: float = 20) -> str:
    """The address of the read-write server ``url`` connects to, after a write there."""
    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        assert await conn.fetchval("select not pg_is_in_recovery()")
        await conn.execute("create table if not exists smoke (at timestamptz default now())")
        await conn.execute("insert into smoke default values")
        address: str = await conn.fetchval("select host(inet_server_addr())")
        return address
    finally:
        await conn.close(timeout=5)


@contextlib.asynccontextmanager
async def sentinel_client(cluster: Cluster) -> AsyncIterator[Sentinel]:
    """One Sentinel client for a test, as a long-lived registry holds one; closed at the end."""
    sentinel = Sentinel(cluster.sentinels(), socket_timeout=2, socket_connect_timeout=2)
    try:
        yield sentinel
    finally:
        for client in sentinel.sentinels:
            await client.aclose()


async def redis_primary(sentinel: Sentinel) -> str:
    """The address the Sentinels name as primary, after a write through Sentinel discovery."""
    primary = sentinel.master_for("mymaster", socket_timeout=2, socket_connect_timeout=2)
    try:
        host, _port = await sentinel.discover_master("mymaster")
        await primary.set("cluster:smoke", host)
        assert await primary.get("cluster:smoke") == host.encode()
        return str(host)
    finally:
        await primary.aclose()


def test_up_brings_every_engine_up_with_its_primaries_on_h1(
    cluster: Cluster, report: Callable[[str], None]
) -> None:
    """After `up`, status shows every engine on every host and h1 holding every primary."""
    report(f"`scripts/cluster.sh up` (new cluster) took {cluster.up_seconds:.1f} s")
    hosts = status()
    assert sorted(hosts) == ["h1", "h2", "h3"]
    for name, host in hosts.items():
        assert host["ip"] == HOST_IPS[name]
        assert host["link"] == "up"
        assert host["rabbitmq"] == "running:3", host
        assert host["patroni"] == "up"
        assert host["sentinel"] == f"primary@{HOST_IPS['h1']}", host
    assert [hosts[h]["redis"] for h in ("h1", "h2", "h3")] == ["primary", "replica", "replica"]
    assert hosts["h1"]["postgres"] == "leader"
    assert sorted(hosts[h]["postgres"] for h in ("h2", "h3")) == ["replica", "sync_standby"]
    assert sorted(hosts[h]["etcd"] for h in hosts) == ["follower", "follower", "leader"], hosts


def test_up_again_changes_nothing(cluster: Cluster, report: Callable[[str], None]) -> None:
    """A second `up` on a healthy cluster starts nothing and leaves the primaries where they are."""
    before = status()
    started = time.monotonic()
    run("up", timeout=UP_TIMEOUT)
    report(f"`scripts/cluster.sh up` (already up) took {time.monotonic() - started:.1f} s")
    assert status() == before


async def test_the_store_url_reaches_the_read_write_primary(cluster: Cluster) -> None:
    """asyncpg with the multi-host URL (target_session_attrs=read-write) writes on h1."""
    assert await pg_primary(cluster.store_url) == HOST_IPS["h1"]


async def test_sentinels_name_the_redis_primary(cluster: Cluster) -> None:
    """Sentinel discovery from the root namespace finds h1's Redis and writes to it."""
    async with sentinel_client(cluster) as sentinel:
        assert await redis_primary(sentinel) == HOST_IPS["h1"]


async def test_every_rabbitmq_node_serves_one_cluster(cluster: Cluster) -> None:
    """Each node takes an AMQP connection; a message published on h1 is read on h3."""
    for host in ("h1", "h2", "h3"):
        conn = await aio_pika.connect(cluster.amqp_url(host), timeout=15)
        await conn.close()
    async with await aio_pika.connect(cluster.amqp_url("h1"), timeout=15) as conn:
        channel = await conn.channel()
        queue = await channel.declare_queue("cluster.smoke.nodes", durable=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"across", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue.name,
        )
    async with await aio_pika.connect(cluster.amqp_url("h3"), timeout=15) as conn:
        channel = await conn.channel()
        queue = await channel.declare_queue("cluster.smoke.nodes", passive=True)
        message = await queue.get(timeout=10, fail=True)
        assert message is not None and message.body == b"across"
        await message.ack()
        await queue.delete(if_unused=False, if_empty=False)


async def test_cut_host_1_moves_every_primary_and_heal_brings_it_back(
    cluster: Cluster, report: Callable[[str], None]
) -> None:
    """Cut h1 off: Sentinel and Patroni promote on h2/h3 in bounded time; heal: h1 rejoins."""
    stack = contextlib.AsyncExitStack()
    before = status()
    assert before["h1"]["redis"] == "primary" and before["h1"]["postgres"] == "leader", before
    # agentdeck's registry, connected to h1's primary before the cut as a daemon's is.
    registry = RedisRegistry.from_url(cluster.registry_url, clock=SystemClock())
    await registry.start()
    stack.push_async_callback(registry.close)
    assert await registry.acquire_lease("cluster-smoke", "test_cluster", 120) is not None
    run("cut", "1")
    try:
        sentinel = await stack.enter_async_context(sentinel_client(cluster))

        async def redis_moved() -> bool:
            return await redis_primary(sentinel) != HOST_IPS["h1"]

        async def postgres_moved() -> bool:
            # Each host on its own, 3 s each: the engine's failover, not a client's time-outs.
            for host in ("h2", "h3"):
                with contextlib.suppress(Exception):
                    await pg_primary(cluster.store_url_for(host), timeout=3)
                    return True
            return False

        async def url_moved() -> bool:
            return await pg_primary(cluster.store_url, timeout=20) != HOST_IPS["h1"]

        async def registry_moved() -> bool:
            # The write can only land on a primary the root namespace reaches: not h1, cut.
            return await registry.acquire_lease("cluster-smoke", "test_cluster", 120) is not None

        redis_s, registry_s, pg_s, url_s = await asyncio.gather(
            eventually("a Redis primary off h1", FAILOVER_LIMIT, redis_moved),
            eventually("agentdeck's registry writing off h1", FAILOVER_LIMIT, registry_moved),
            eventually("a PostgreSQL primary on h2 or h3", FAILOVER_LIMIT, postgres_moved),
            eventually("the store URL reaching the new primary", REJOIN_LIMIT, url_moved),
        )
        report(f"cut h1: Redis (Sentinel) took writes on a new primary after {redis_s:.1f} s")
        report(f"cut h1: agentdeck's registry (RedisRegistry) wrote there after {registry_s:.1f} s")
        report(f"cut h1: PostgreSQL (Patroni) took writes on a new primary after {pg_s:.1f} s")
        report(f"cut h1: asyncpg with the multi-host store URL wrote there after {url_s:.1f} s")
        assert (await asyncio.to_thread(status))["h1"]["link"] == "cut"
    finally:
        run("heal", "1")
        await stack.aclose()

    async def h1_rejoined() -> bool:
        h1 = (await asyncio.to_thread(status))["h1"]
        assert h1["link"] == "up", h1
        assert h1["redis"] == "replica", h1
        assert h1["postgres"] in ("replica", "sync_standby"), h1
        assert h1["etcd"] in ("leader", "follower"), h1
        assert h1["sentinel"] != f"primary@{HOST_IPS['h1']}", h1
        return True

    rejoin_s = await eventually("h1 back in etcd, Redis, PostgreSQL", REJOIN_LIMIT, h1_rejoined)
    report(f"heal h1: back in etcd, Redis and PostgreSQL as a replica after {rejoin_s:.1f} s")

    async def rabbit_back() -> bool:
        return (await asyncio.to_thread(status))["h1"]["rabbitmq"] == "running:3"

    try:
        rabbit_s = await eventually("RabbitMQ on h1 resuming", RABBIT_RESUME_LIMIT, rabbit_back)
        report(f"heal h1: RabbitMQ on h1 resumed by itself after {rabbit_s:.1f} s")
    except pytest.fail.Exception:
        # RabbitMQ 3.10 on OTP 25 (Debian 12) may hang in `global` while a node paused by
        # pause_minority boots again (the log says "Global hang workaround"): restart it.
        report(f"heal h1: RabbitMQ on h1 had not resumed after {RABBIT_RESUME_LIMIT:.0f} s")
        started = time.monotonic()
        run("kill", "1", "rabbitmq")
        await asyncio.to_thread(run, "up", timeout=UP_TIMEOUT)
        report(
            f"heal h1: kill + `up` restarted RabbitMQ on h1 in {time.monotonic() - started:.1f} s"
        )
    assert (await asyncio.to_thread(status))["h1"]["rabbitmq"] == "running:3"


# aiormq leaves a stream open when the broker closes a connection under a call in flight, as it
# does with `nodedown` while the killed leader's queue elects a new one (the probe retries).
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning"
)
async def test_killing_the_rabbitmq_node_leading_a_queue_leaves_two_serving(
    cluster: Cluster, report: Callable[[str], None]
) -> None:
    """SIGKILL h1's RabbitMQ (the queue's leader): h2, h3 keep its messages; `up` restarts it."""
    async with await aio_pika.connect(cluster.amqp_url("h1"), timeout=15) as conn:
        channel = await conn.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            "cluster.smoke.kill", durable=True, arguments={"x-queue-type": "quorum"}
        )
        for i in range(10):
            await channel.default_exchange.publish(
                aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue.name,
            )
    run("kill", "1", "rabbitmq")

    got: list[bytes] = []

    async def h2_serves() -> bool:
        async with await aio_pika.connect(cluster.amqp_url("h2"), timeout=10) as conn:
            channel = await conn.channel()
            queue = await channel.declare_queue("cluster.smoke.kill", passive=True)
            while (message := await queue.get(timeout=10, fail=False)) is not None:
                got.append(message.body)
                await message.ack()
        return len(got) == 10

    served_s = await eventually("h2 serving the queue after h1's kill", FAILOVER_LIMIT, h2_serves)
    report(f"kill h1 rabbitmq: the queue served on h2 after {served_s:.1f} s")
    assert sorted(got, key=int) == [str(i).encode() for i in range(10)]

    async with await aio_pika.connect(cluster.amqp_url("h3"), timeout=15) as conn:
        channel = await conn.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"after", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="cluster.smoke.kill",
        )
        queue = await channel.declare_queue("cluster.smoke.kill", passive=True)
        message = await queue.get(timeout=10, fail=True)
        assert message is not None and message.body == b"after"
        await message.ack()
    assert (await asyncio.to_thread(status))["h1"]["rabbitmq"] == "down"

    started = time.monotonic()
    await asyncio.to_thread(run, "up", timeout=UP_TIMEOUT)
    report(f"`scripts/cluster.sh up` restarted h1's RabbitMQ in {time.monotonic() - started:.1f} s")
    assert all(h["rabbitmq"] == "running:3" for h in (await asyncio.to_thread(status)).values())
