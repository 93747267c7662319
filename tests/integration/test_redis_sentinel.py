"""RedisRegistry on a Redis Sentinel URL, against a real primary, replica and three sentinels.

The module starts them (``redis-server``, ``redis-server --sentinel``) on free ports of
127.0.0.1 in a temporary folder and stops them after; every wait on them is bounded. The
Registry contract suite runs again here on ``redis+sentinel://...``, and a forced failover
(``SENTINEL FAILOVER``) shows the registry following the new primary.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from agentdeck.backends import open_registry
from agentdeck.backends.redis_url import (
    DEFAULT_SENTINEL_TIMEOUT,
    parse_sentinel_url,
    split_registry_url,
)
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConfigError
from agentdeck.core.models import AgentState, new_id
from agentdeck.core.ports import Registry
from tests.conftest import IN_CI
from tests.contract.test_registry import (  # the contract, collected again against Sentinel
    agent,
    breaker,
    test_agents_are_listed_by_name_and_filtered_by_capability,
    test_breaker_is_created_only_when_it_does_not_exist,
    test_breaker_write_needs_the_current_version,
    test_breaker_write_to_a_missing_breaker_with_a_version_loses,
    test_breakers_lists_every_breaker_by_name,
    test_deregister_removes_the_agent_and_ignores_unknown_ones,
    test_expired_lease_is_taken_over_with_a_larger_token,
    test_free_lease_is_granted_with_a_token_and_expiry,
    test_heartbeat_after_expiry_returns_false_and_does_not_revive,
    test_heartbeat_of_an_unknown_agent_returns_false,
    test_heartbeat_refreshes_the_record_and_its_counters,
    test_held_lease_is_refused_to_another_holder,
    test_holder_extends_its_lease_keeping_the_token,
    test_lease_holder_back_after_expiry_gets_a_new_token,
    test_leases_with_different_names_are_independent,
    test_record_lives_exactly_its_ttl,
    test_registered_agent_is_listed_with_the_registry_clock_as_last_seen,
    test_registering_again_replaces_the_record,
    test_release_by_someone_else_is_ignored,
    test_released_lease_goes_to_the_next_asker_with_a_larger_token,
    test_ttl_must_be_positive,
    test_unknown_breaker_is_none,
)

pytestmark = pytest.mark.integration

CONTRACT = (
    test_agents_are_listed_by_name_and_filtered_by_capability,
    test_breaker_is_created_only_when_it_does_not_exist,
    test_breaker_write_needs_the_current_version,
    test_breaker_write_to_a_missing_breaker_with_a_version_loses,
    test_breakers_lists_every_breaker_by_name,
    test_deregister_removes_the_agent_and_ignores_unknown_ones,
    test_expired_lease_is_taken_over_with_a_larger_token,
    test_free_lease_is_granted_with_a_token_and_expiry,
    test_heartbeat_after_expiry_returns_false_and_does_not_revive,
    test_heartbeat_of_an_unknown_agent_returns_false,
    test_heartbeat_refreshes_the_record_and_its_counters,
    test_held_lease_is_refused_to_another_holder,
    test_holder_extends_its_lease_keeping_the_token,
    test_lease_holder_back_after_expiry_gets_a_new_token,
    test_leases_with_different_names_are_independent,
    test_record_lives_exactly_its_ttl,
    test_registered_agent_is_listed_with_the_registry_clock_as_last_seen,
    test_registering_again_replaces_the_record,
    test_release_by_someone_else_is_ignored,
    test_released_lease_goes_to_the_next_asker_with_a_larger_token,
    test_ttl_must_be_positive,
    test_unknown_breaker_is_none,
)
"""The contract tests imported above (named here so the imports read as used)."""

HOST = "127.0.0.1"
SERVICE = "mymaster"
#: Upper bound on the cluster settling (start, discovery) or a failover completing.
SETTLE = 30.0
TTL = 10.0


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def wait_for(what: str, check: Callable[[], bool], limit: float = SETTLE) -> None:
    """Poll ``check`` (other processes' state) until true; fail naming ``what`` after ``limit``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass  # not up yet
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {limit:.0f} s")


class SentinelCluster:
    """A Redis primary, one replica and three sentinels on free ports of 127.0.0.1."""

    def __init__(self, folder: Path, server: str) -> None:
        self._folder, self._server = folder, server
        self._processes: list[subprocess.Popen[bytes]] = []
        self.primary, self.replica = free_port(), free_port()
        self.sentinels = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        self._redis(self.primary)
        self._redis(self.replica, "--replicaof", HOST, str(self.primary))
        for port in self.sentinels:
            config = self._folder / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind {HOST}\ndir {self._folder}\n"
                f"sentinel monitor {SERVICE} {HOST} {self.primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 2000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            self._spawn(str(config), "--sentinel")
        wait_for("the replica's sync", lambda: self._link_up(self.replica))
        wait_for("the sentinels' discovery", self._discovered)

    def _redis(self, port: int, *more: str) -> None:
        folder = self._folder / str(port)
        folder.mkdir()
        self._spawn(
            "--port", str(port), "--bind", HOST, "--dir", str(folder), "--save", "",
            "--appendonly", "no", *more,
        )  # fmt: skip

    def _spawn(self, *args: str) -> None:
        with (self._folder / f"process-{len(self._processes)}.log").open("wb") as log:
            self._processes.append(
                subprocess.Popen([self._server, *args], stdout=log, stderr=subprocess.STDOUT)
            )

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True)

    def _link_up(self, port: int) -> bool:
        with self.client(port) as replica:
            return bool(replica.info("replication").get("master_link_status") == "up")

    def _discovered(self) -> bool:
        """Every sentinel knows the replica (a failover needs one) and the other sentinels."""
        for port in self.sentinels:
            with self.client(port) as sentinel:
                master = sentinel.execute_command("SENTINEL", "MASTER", SERVICE)
                state = dict(zip(master[::2], master[1::2], strict=True))
                if state.get("num-slaves") != "1" or state.get("num-other-sentinels") != "2":
                    return False
                replicas = sentinel.execute_command("SENTINEL", "REPLICAS", SERVICE)
                for reply in replicas:
                    replica = dict(zip(reply[::2], reply[1::2], strict=True))
                    if replica.get("flags") != "slave" or replica.get("master-link-status") != "ok":
                        return False
        return True

    def master(self) -> int:
        """The primary's port, as the first sentinel reports it."""
        with self.client(self.sentinels[0]) as sentinel:
            _, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def failover(self) -> int:
        """Force a failover and wait until the replica is the primary; its port."""
        old = self.master()
        new = self.replica if old == self.primary else self.primary

        def asked() -> bool:
            """The sentinel took the failover. It answers NOGOODSLAVE while it has not yet seen
            the replica as healthy (its INFO of the replica is stale, or its link is still
            connecting); that passes within seconds, so ask again."""
            with self.client(self.sentinels[0]) as sentinel:
                try:
                    sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
                except redis.ResponseError as error:
                    if str(error).startswith("NOGOODSLAVE"):
                        return False
                    raise
            return True

        wait_for("the sentinel taking the failover", asked)

        def done() -> bool:
            """The replica is primary, every sentinel says so, and the old primary follows it
            (so a client still talking to it is told READONLY, not silently served)."""
            with self.client(new) as promoted, self.client(old) as demoted:
                role = promoted.info("replication").get("role")
                following = demoted.info("replication")
            return (
                role == "master"
                and following.get("role") == "slave"
                and following.get("master_port") == new
                and all(self._reports(port, new) for port in self.sentinels)
            )

        wait_for("the failover", done)
        return new

    def _reports(self, sentinel_port: int, port: int) -> bool:
        with self.client(sentinel_port) as sentinel:
            reply = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(reply[1]) == port

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextlib.contextmanager
def sentinel_cluster(folder: Path) -> Iterator[SentinelCluster]:
    """One primary + replica + three sentinels in ``folder``, stopped on the way out. Without
    redis-server: skipped locally, failed in CI."""
    server = shutil.which("redis-server")
    if server is None:
        if IN_CI:
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    running = SentinelCluster(folder, server)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    """One primary + replica + three sentinels for this module, stopped after it."""
    with sentinel_cluster(tmp_path_factory.mktemp("sentinel")) as running:
        yield running


@pytest.fixture
async def registry(cluster: SentinelCluster, clock: FakeClock) -> AsyncIterator[Registry]:
    """A started registry on the sentinel URL, under a key prefix private to the test."""
    instance = open_registry(f"{cluster.url}?prefix=t-{new_id()}", clock=clock)
    await instance.start()
    yield instance
    await instance.close()


async def test_the_registry_follows_a_failover(
    registry: Registry, cluster: SentinelCluster
) -> None:
    """After ``SENTINEL FAILOVER`` the registry works on the new primary: what was written
    (and replicated) before is there, and writes succeed, with no restart."""
    await registry.register(agent("a1", "echo"), TTL)
    lease = await registry.acquire_lease("scheduler", "node-1", TTL)
    assert lease is not None
    with cluster.client(cluster.master()) as primary:
        primary.execute_command("WAIT", 1, 5000)  # the replica has it all

    new = cluster.failover()

    # The first write finds its connection's server demoted (READONLY) and reconnects
    # through the sentinels: no error reaches the caller.
    assert await registry.heartbeat("a1", TTL, in_flight=1, state=AgentState.UP) is True
    assert await registry.put_breaker(breaker(1), expected_version=None) is True
    assert [a.id for a in await registry.agents("echo")] == ["a1"]
    again = await registry.acquire_lease("scheduler", "node-1", TTL)
    assert again is not None and again.token == lease.token
    prefix = getattr(registry, "prefix")  # noqa: B009 - a RedisRegistry, typed as the port
    with cluster.client(new) as primary:
        assert primary.exists(f"{prefix}:breaker:{breaker(1).name}") == 1  # written after


def test_a_sentinel_url_names_every_bad_part_without_the_password() -> None:
    """One ConfigError per bad sentinel URL, naming the part and the allowed form."""
    cases = {
        "redis+sentinel://:pw@h1:26379/": "must name the service",
        "redis+sentinel://:pw@h1,,h2/mymaster": "has an empty sentinel host",
        "redis+sentinel://:pw@h1:2x/mymaster": "'h1:2x' is not host:port",
        "redis+sentinel://:pw@h1/mymaster/zero": "must be a number such as /0",
        "redis+sentinel://:pw@h1/mymaster?ssl_ca_certs=x": "unknown option(s) ssl_ca_certs",
        "redis+sentinel://:pw@h1/mymaster?sentinel_password=pw&bad=1": "unknown option(s) bad",
        "redis+sentinel://:pw@h1/mymaster?sentinel_timeout=0": (
            "sentinel_timeout in 'redis+sentinel://:***@h1/mymaster?sentinel_timeout=0' must be "
            "seconds above 0 and at most 60, got '0'"
        ),
        "redis+sentinel://:pw@h1/mymaster?sentinel_timeout=soon": "at most 60, got 'soon'",
    }
    for url, complaint in cases.items():
        with pytest.raises(ConfigError) as caught:
            split_registry_url(url)
        assert complaint in str(caught.value), url
        assert "pw" not in str(caught.value).replace("sentinel_password", ""), url


def test_each_sentinel_is_asked_once_within_sentinel_timeout() -> None:
    """The connections to the sentinels get ``sentinel_timeout`` (1 s unless given) to connect
    and answer, and no retry of their own: a sentinel that does not answer is passed over for
    the next at once (redis-py's default, 3 more tries with backoff, held a discovery ~15 s
    behind a cut-off first sentinel: scripts/sentinel_follow_bench.py)."""
    default = parse_sentinel_url("redis+sentinel://h1,h2/mymaster")
    given = parse_sentinel_url("redis+sentinel://h1,h2/mymaster?sentinel_timeout=0.25")
    for target, seconds in ((default, DEFAULT_SENTINEL_TIMEOUT), (given, 0.25)):
        options = target.sentinel
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (seconds,) * 2
        assert options["retry"].get_retries() == 0
    assert DEFAULT_SENTINEL_TIMEOUT == 1.0
    assert "sentinel_timeout" not in given.connection  # the data connections' own stay theirs


def test_a_sentinel_registry_names_its_sentinels_and_service_not_its_passwords() -> None:
    """``where`` and repr show the sentinels, service and database, never a password."""
    url = "redis+sentinel://u:secret1@h1:26379,h2/mymaster/3?sentinel_password=secret2"
    instance = open_registry(url, clock=FakeClock())
    assert "sentinel h1:26379,h2:26379/mymaster/3" in repr(instance)
    assert "secret" not in repr(instance)
