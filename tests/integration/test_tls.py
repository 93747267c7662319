"""TLS to every engine: PostgreSQL (``sslmode=verify-full``), Redis (``rediss://``) and RabbitMQ
(``amqps://``), each a private server of this module on a free loopback port, with a CA and
certificates made here (:mod:`tests.integration.certs`).

Each server's certificate names ``localhost`` only. A client that trusts the CA and dials
``localhost`` gets through; one that trusts another CA, or dials ``127.0.0.1`` (a name the
certificate does not carry), is refused before any query. The shared engines on 5432, 6379 and
5672 are not touched. A missing server binary skips here and fails in CI
(:func:`tests.e2e.services.need`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from agentdeck.backends.postgres import PostgresStore
from agentdeck.backends.rabbitmq import RabbitBus
from agentdeck.backends.redis import RedisRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.models import new_id
from agentdeck.core.ports import OutgoingTask
from tests.e2e.services import PostgresServer, RabbitServer, RedisServer, free_port
from tests.integration.certs import Authority, Issued, make_ca

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The one name the servers' certificates carry.
NAME = "localhost"
#: Upper bound on a refused connection: a certificate that fails must not be retried for long.
REFUSED_WITHIN = 10.0


@dataclass(frozen=True)
class Pki:
    """The CA the servers' certificates come from, another CA nobody uses, and files."""

    ca: Authority
    other: Authority
    server: Issued
    client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for ``localhost`` and a client certificate; plus a CA that
    signed none of them."""
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder / "ca")
    return Pki(
        ca=ca,
        other=make_ca(folder / "other", "someone-else-ca"),
        server=ca.issue("server", NAME),
        client=ca.issue("client", "agentdeck-node", client=True),
    )


# --------------------------------------------------------------------------- PostgreSQL


class TlsPostgres(PostgresServer):
    """A private PostgreSQL with ``ssl=on`` and the test's server certificate."""

    def __init__(self, home: Path, issued: Issued) -> None:
        super().__init__(home)
        # The server reads its key as the postgres user, and refuses one others may read.
        self.cert, self.key = self.root / "server.crt", self.root / "server.key"
        shutil.copyfile(issued.cert, self.cert)
        shutil.copyfile(issued.key, self.key)
        self.key.chmod(0o600)
        if self.user:
            for path in (self.cert, self.key):
                shutil.chown(path, self.user, self.user)

    def command(self) -> Sequence[str]:
        return [
            *super().command(),
            *("-c", "ssl=on", "-c", f"ssl_cert_file={self.cert}", "-c", f"ssl_key_file={self.key}"),
        ]

    def url(self, host: str, ca: Path) -> str:  # type: ignore[override]
        return (
            f"postgresql://postgres@{host}:{self.port}/postgres"
            f"?sslmode=verify-full&sslrootcert={ca}"
        )


@pytest.fixture(scope="module")
def postgres(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPostgres]:
    server = TlsPostgres(tmp_path_factory.mktemp("pg"), pki.server)
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_postgres_verify_full_encrypts_the_store(postgres: TlsPostgres, pki: Pki) -> None:
    """With ``sslmode=verify-full`` and the CA, the store migrates over TLS (pg_stat_ssl)."""
    url = postgres.url(NAME, pki.ca.cert)
    async with PostgresStore.from_url(url, clock=FakeClock()) as store:
        await store.migrate()
        assert await store.list_workflows() == []
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
    finally:
        await conn.close()
    assert row is not None and row["ssl"] is True
    assert row["version"].startswith("TLSv1.")


@pytest.mark.parametrize("which", ["wrong CA", "wrong host name"])
async def test_postgres_refuses_a_server_it_cannot_verify(
    postgres: TlsPostgres, pki: Pki, which: str
) -> None:
    """A server certificate from another CA, or not naming the host dialled, is refused at
    once, with one error saying the verification failed."""
    url = (
        postgres.url(NAME, pki.other.cert)
        if which == "wrong CA"
        else postgres.url("127.0.0.1", pki.ca.cert)
    )
    started = time.monotonic()
    async with PostgresStore.from_url(url, clock=FakeClock()) as store:
        with pytest.raises(
            BackendUnavailable, match=r"failed TLS verification .*certificate verify failed"
        ):
            await store.migrate()
    assert time.monotonic() - started < REFUSED_WITHIN


# --------------------------------------------------------------------------------- Redis


class TlsRedis(RedisServer):
    """A private redis-server that speaks TLS only, and asks clients for a certificate."""

    def __init__(self, home: Path, issued: Issued, ca: Path) -> None:
        super().__init__(home)
        self.issued, self.ca = issued, ca

    def command(self) -> Sequence[str]:
        plain = list(super().command())
        plain[plain.index("--port") + 1] = "0"  # no plain TCP at all
        return [
            *plain,
            *("--tls-port", str(self.port), "--tls-cert-file", str(self.issued.cert)),
            *("--tls-key-file", str(self.issued.key), "--tls-ca-cert-file", str(self.ca)),
            *("--tls-auth-clients", "yes"),
        ]

    def url(self, host: str, ca: Path, client: Issued) -> str:  # type: ignore[override]
        return (
            f"rediss://{host}:{self.port}/0?ssl_ca_certs={ca}"
            f"&ssl_certfile={client.cert}&ssl_keyfile={client.key}&prefix=tls-{new_id()}"
        )


@pytest.fixture(scope="module")
def redis_tls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path_factory.mktemp("redis"), pki.server, pki.ca.cert)
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_rediss_registry_over_tls(redis_tls: TlsRedis, pki: Pki) -> None:
    """A ``rediss://`` registry with the CA and a client certificate takes a lease."""
    registry = RedisRegistry.from_url(
        redis_tls.url(NAME, pki.ca.cert, pki.client), clock=FakeClock(), connect_attempts=1
    )
    await registry.start()
    try:
        lease = await registry.acquire_lease("scheduler", "node-a", 10.0)
        assert lease is not None and lease.holder == "node-a"
    finally:
        await registry.close()


@pytest.mark.parametrize("which", ["wrong CA", "wrong host name", "no client certificate"])
async def test_rediss_refuses_what_it_cannot_verify(
    redis_tls: TlsRedis, pki: Pki, which: str
) -> None:
    """Another CA or a host name not in the certificate is refused by the client; a client
    without a certificate is refused by the server."""
    url, expected = {
        "wrong CA": (
            redis_tls.url(NAME, pki.other.cert, pki.client),
            "certificate verify failed: self-signed certificate in certificate chain",
        ),
        "wrong host name": (
            redis_tls.url("127.0.0.1", pki.ca.cert, pki.client),
            "certificate verify failed: IP address mismatch",
        ),
        "no client certificate": (
            f"rediss://{NAME}:{redis_tls.port}/0?ssl_ca_certs={pki.ca.cert}",
            # (TLS 1.3: the server checks the client's certificate after the client's side of
            # the handshake is done, sends its alert and closes; a client that writes first
            # reads a reset instead of the alert. Either way the server refused it.)
            "CERTIFICATE_REQUIRED|Connection reset by peer",
        ),
    }[which]
    registry = RedisRegistry.from_url(url, clock=FakeClock(), connect_attempts=1)
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable, match=expected):
            await registry.start()
    finally:
        await registry.close()
    assert time.monotonic() - started < REFUSED_WITHIN


# ------------------------------------------------------------------------------ RabbitMQ


class TlsRabbit(RabbitServer):
    """A private RabbitMQ node (its own name, ports, data) whose AMQP port speaks TLS; its
    plain listener is on a port of its own, bound to loopback."""

    def __init__(self, home: Path, issued: Issued, ca: Path) -> None:
        super().__init__(home)
        self.node = f"agentdeck-tls-{os.getpid()}@localhost"
        self.plain_port = free_port()
        (home / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            f"listeners.ssl.default = {self.port}\n"
            f"ssl_options.cacertfile = {ca}\n"
            f"ssl_options.certfile = {issued.cert}\n"
            f"ssl_options.keyfile = {issued.key}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )

    def env(self) -> dict[str, str]:
        return {**super().env(), "RABBITMQ_NODE_PORT": str(self.plain_port)}

    def url(self, host: str, ca: Path) -> str:  # type: ignore[override]
        return f"amqps://guest:guest@{host}:{self.port}/?cafile={ca}&prefix=tls-{new_id()}"


@pytest.fixture(scope="module")
def rabbit_tls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRabbit]:
    server = TlsRabbit(tmp_path_factory.mktemp("rabbit"), pki.server, pki.ca.cert)
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_amqps_bus_round_trip(rabbit_tls: TlsRabbit, pki: Pki) -> None:
    """An ``amqps://`` bus trusting the CA publishes a task and consumes it back."""
    bus = RabbitBus.from_url(rabbit_tls.url(NAME, pki.ca.cert), clock=FakeClock())
    try:
        async with asyncio.timeout(30):
            await bus.start()
            await bus.publish_tasks([OutgoingTask("echo", b'{"n": 1}', {})])
            tasks = bus.consume_tasks(["echo"], prefetch=1)
            delivery = await anext(tasks)
            assert delivery.body == b'{"n": 1}'
            await delivery.ack()
            await tasks.aclose()  # type: ignore[attr-defined]
            await bus.delete_topology()
    finally:
        await bus.close()


@pytest.mark.parametrize("which", ["wrong CA", "wrong host name"])
async def test_amqps_refuses_a_broker_it_cannot_verify(
    rabbit_tls: TlsRabbit, pki: Pki, which: str
) -> None:
    """A broker certificate from another CA, or not naming the host dialled, is refused."""
    url = (
        rabbit_tls.url(NAME, pki.other.cert)
        if which == "wrong CA"
        else rabbit_tls.url("127.0.0.1", pki.ca.cert)
    )
    bus = RabbitBus.from_url(url, clock=FakeClock())
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable, match="certificate verify failed"):
            await bus.start()
    finally:
        await bus.close()
    assert time.monotonic() - started < 30
