"""A store URL with several hosts: a primary and its standbys, the primary found by libpq's
``target_session_attrs`` (read-write unless the URL says otherwise)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from agentdeck.backends.postgres import PostgresStore, testing
from agentdeck.backends.postgres.url import parse_url
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, ConfigError
from agentdeck.core.models import Workflow
from agentdeck.core.states import WorkflowStatus as W
from tests.conftest import require_service


def test_several_hosts_are_one_target_that_wants_the_primary() -> None:
    """Every host is named in messages (never the password); read-write is asked for."""
    target = parse_url("postgresql://deck:s3cret@db1:5432,db2,[::1]:5433/agentdeck")
    assert target.where == "db1:5432,db2:5432,[::1]:5433/agentdeck"
    assert "target_session_attrs=read-write" in target.dsn
    assert "s3cret" not in repr(target)


def test_the_url_may_ask_for_other_session_attrs_but_not_unknown_ones() -> None:
    """An explicit target_session_attrs is kept; a bogus one is one error listing the known."""
    kept = parse_url("postgresql://deck@db1,db2/agentdeck?target_session_attrs=any")
    assert "target_session_attrs=any" in kept.dsn and "read-write" not in kept.dsn
    assert "target_session_attrs" not in parse_url("postgresql://deck@db1/agentdeck").dsn
    with pytest.raises(ConfigError, match="'primry' is not one of any, primary, standby"):
        parse_url("postgresql://deck@db1,db2/agentdeck?target_session_attrs=primry")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://deck:s3cret@db1,,db2/agentdeck", "host entry '' names no host"),
        ("postgresql://deck:s3cret@db1:5432,db2:x/agentdeck", "port 'x' of 'db2:x'"),
        ("postgresql://deck:s3cret@db1:99999/agentdeck", "port '99999'"),
    ],
)
def test_a_bad_host_entry_is_named(url: str, named: str) -> None:
    """One ConfigError naming the bad entry, never the password."""
    with pytest.raises(ConfigError, match=named) as caught:
        parse_url(url)
    assert "s3cret" not in str(caught.value)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """A scratch database on the test server."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    async with testing.scratch_database() as database_url:
        yield database_url


def with_hosts(url: str, netloc_hosts: str, query: str = "") -> str:
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    extra = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, f"{user}@{netloc_hosts}", parts.path, extra, ""))


async def test_a_dead_first_host_is_passed_over_for_the_live_primary(
    url: str, clock: FakeClock
) -> None:
    """Host 1 answers nothing; the store migrates and writes on host 2, the primary."""
    store = PostgresStore.from_url(with_hosts(url, "127.0.0.1:1,127.0.0.1:5432"), clock=clock)
    try:
        await store.migrate()
        now = clock.now()
        await store.create_workflow(Workflow("w1", "w", W.RUNNING, now, now, 0), [])
        assert (await store.get_workflow("w1")).status == W.RUNNING
    finally:
        await store.close()


async def test_no_host_of_the_asked_kind_is_a_clear_unavailability(
    url: str, clock: FakeClock
) -> None:
    """Asking for a standby where only a primary runs fails as BackendUnavailable naming the
    hosts (no standby to connect to), after bounded attempts."""
    store = PostgresStore.from_url(
        with_hosts(url, "127.0.0.1:5432,localhost:5432", "target_session_attrs=standby"),
        clock=clock,
        connect_wait=0.001,
    )
    try:
        with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:5432,localhost:5432"):
            await store.migrate()
    finally:
        await store.close()
