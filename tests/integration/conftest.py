"""Fixtures for the integration tests: an S3 server (moto) for the whole session.

Redis, PostgreSQL and RabbitMQ are real servers that tests find with
``tests.conftest.require_service``; S3 is served by moto in this process, so those tests
always run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from moto.server import ThreadedMotoServer

from agentdeck.backends.postgres import PostgresStore, testing
from agentdeck.core.clock import FakeClock
from tests.conftest import require_service

#: Dummy credentials: moto accepts any, and nothing may reach a real AWS account.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The ``http://127.0.0.1:<port>`` of a moto S3 server running for the session, with
    dummy AWS credentials in the environment (and no profile that could name a real one)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_AWS_ENV.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
async def fresh_postgres_store(clock: FakeClock) -> AsyncIterator[PostgresStore]:
    """A PostgresStore on a fresh, migrated scratch database of the test server (dropped
    after the test)."""
    server = urlsplit(testing.server_url())
    require_service("PostgreSQL", server.hostname or "127.0.0.1", server.port or 5432)
    async with (
        testing.scratch_database() as url,
        PostgresStore.from_url(url, clock=clock) as opened,
    ):
        await opened.migrate()
        yield opened
