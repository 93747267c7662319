"""A node rebuilt from S3 alone: PostgreSQL -> snapshot in S3 (moto) -> a fresh SQLite file and
a fresh PostgreSQL database, each holding the same state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from agentdeck.backends.postgres import PostgresStore, testing
from agentdeck.backends.s3 import S3BlobStore
from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.models import Change, ErrorInfo, new_id
from agentdeck.core.ports import Store
from agentdeck.core.snapshot import create_snapshot, list_snapshots, restore_snapshot
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T
from tests.conftest import require_service

pytestmark = pytest.mark.integration

SPEC = """
name: {name}
tasks:
  - {{key: a, capability: echo, input: {{text: "hé ✓", n: 1.5, big: 9007199254740993}}}}
  - {{key: b, capability: echo, needs: [a]}}
  - {{key: c, capability: sleep, needs: [a, b], retry: {{max_attempts: 4}}}}
"""


async def postgres_url() -> AsyncIterator[str]:
    server = urlsplit(testing.server_url())
    require_service("PostgreSQL", server.hostname or "127.0.0.1", server.port or 5432)
    async with testing.scratch_database() as url:
        yield url


@pytest.fixture
async def source(clock: FakeClock) -> AsyncIterator[PostgresStore]:
    """A migrated PostgreSQL store on a fresh database."""
    async for url in postgres_url():
        async with PostgresStore.from_url(url, clock=clock) as store:
            await store.migrate()
            yield store


@pytest.fixture
async def blobs(s3_endpoint: str, clock: FakeClock) -> AsyncIterator[S3BlobStore]:
    """A started S3 blob store in a new bucket of the moto server."""
    bucket = f"snap-{new_id()}"
    client: Any = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.close()
    store = S3BlobStore.from_url(
        f"s3://{bucket}/site-a?endpoint_url={s3_endpoint}&region=us-east-1", clock=clock
    )
    await store.start()
    yield store
    await store.close()


async def populate(store: Store, clock: FakeClock) -> None:
    client = Client(store, clock, poll=0.001)
    ids = []
    for i in range(4):
        spec = parse_spec(SPEC.format(name=f"w{i}"), fmt="yaml", limits=SpecLimits())
        ids.append((await client.submit(spec)).id)
        clock.advance(1)
    a = f"{ids[0]}/a"
    await store.apply(
        [Change(a, T.DISPATCHED, frozenset({T.READY}), attempt=0, values={"attempt": 1})],
        clock.now(),
    )
    await store.apply(
        [
            Change(
                a,
                T.RETRYING,
                frozenset({T.DISPATCHED}),
                attempt=1,
                values={"error": ErrorInfo("lost", "gone", True, 3.0), "not_before": 5.0},
                detail={"delay": 3.0},
            )
        ],
        clock.now(),
    )
    await client.command("cancel", ids[1], wait=None)


async def state(store: Store) -> tuple[Any, ...]:
    return (
        await store.dump_workflows(limit=100_000),
        await store.dump_tasks(limit=100_000),
        await store.events_since(0, limit=100_000),
        await store.dump_commands(limit=100_000),
    )


async def test_postgres_state_rebuilt_from_s3_into_sqlite_and_postgres(
    source: PostgresStore, blobs: S3BlobStore, clock: FakeClock, tmp_path: Path
) -> None:
    """The snapshot in S3 alone rebuilds the same state in SQLite and in a new PostgreSQL."""
    await populate(source, clock)
    info = await create_snapshot(source, blobs, clock, node="site-a")
    assert [s.id for s in await list_snapshots(blobs)] == [info.id]
    expected = await state(source)
    async with SqliteStore(tmp_path / "site-b.db", clock=clock) as sqlite:
        await sqlite.migrate()
        await restore_snapshot(sqlite, blobs, info.id)
        assert await state(sqlite) == expected
    async for url in postgres_url():
        async with PostgresStore.from_url(url, clock=clock) as other:
            await other.migrate()
            await restore_snapshot(other, blobs, info.id)
            assert await state(other) == expected
