"""PostgresStore's query plans follow the tables' current size (see docs/performance.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from agentdeck.backends.postgres import PostgresStore, testing
from agentdeck.core.clock import FakeClock
from tests.conftest import require_service

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[PostgresStore]:
    """A migrated store on a fresh database."""
    server = urlsplit(testing.server_url())
    require_service("PostgreSQL", server.hostname or "127.0.0.1", server.port or 5432)
    async with (
        testing.scratch_database() as url,
        PostgresStore.from_url(url, clock=clock) as opened,
    ):
        await opened.migrate()
        yield opened


async def test_the_pool_plans_every_statement_for_its_arguments(store: PostgresStore) -> None:
    """Pooled connections use custom plans, so a generic plan made while a table was tiny (a
    sequential scan) is never kept once the table has grown."""
    pool = store._pool
    assert pool is not None
    assert await pool.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
