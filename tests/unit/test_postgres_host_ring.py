"""HostRing: each host of a multi-host store URL on its own time-out, the last primary first."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from agentdeck.backends.postgres import connections
from agentdeck.backends.postgres.connections import MULTI_HOST_IDLE, PostgresConnections
from agentdeck.backends.postgres.hosts import MIN_HOST_TIMEOUT, HostRing, dsn_for
from agentdeck.backends.postgres.url import parse_url

DSN = "postgresql://app:s3cret@h1:5432,h2:5432,h3:5433/agentdeck?target_session_attrs=read-write"
HOSTS = [("h1", 5432), ("h2", 5432), ("h3", 5433)]
ONE_HOST = "postgresql://app:s3cret@h1:5432/agentdeck"


class Hosts:
    """A fake ``asyncpg.connect``: each host answers as told, and every call is recorded."""

    def __init__(self, **answers: str) -> None:
        self.answers = answers  # host -> "primary" | "standby" | "silent" | "refused"
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, dsn: str, *, timeout: float, **kwargs: Any) -> Any:
        host = dsn.split("@", 1)[1].split(":", 1)[0]
        self.calls.append((host, timeout))
        answer = self.answers.get(host, "refused")
        if answer == "silent":
            raise TimeoutError
        if answer == "refused":
            raise ConnectionRefusedError(f"{host} refused")
        if answer == "standby":
            raise asyncpg.TargetServerAttributeNotMatched("standby")
        return f"conn-{host}"


def test_dsn_for_names_one_host_and_keeps_the_rest() -> None:
    """The per-host DSN keeps user, password, database and options."""
    assert dsn_for(DSN, "h2", 5432) == (
        "postgresql://app:s3cret@h2:5432/agentdeck?target_session_attrs=read-write"
    )


async def test_a_silent_first_host_costs_its_share_and_the_primary_is_found() -> None:
    """h1 drops packets, h2 is a standby, h3 the primary: each tried with a third of the time."""
    fake = Hosts(h1="silent", h2="standby", h3="primary")
    ring = HostRing(HOSTS, connect_timeout=9.0, opener=fake)
    assert await ring.connect(DSN, timeout=9.0, command_timeout=60) == "conn-h3"
    assert fake.calls == [("h1", 3.0), ("h2", 3.0), ("h3", 3.0)]


async def test_the_next_connection_starts_with_the_last_primary() -> None:
    """Once the new primary is found, later connections go to it first."""
    fake = Hosts(h1="silent", h2="primary")
    ring = HostRing(HOSTS, connect_timeout=9.0, opener=fake)
    await ring.connect(DSN)
    fake.calls.clear()
    assert await ring.connect(DSN) == "conn-h2"
    assert [host for host, _ in fake.calls] == ["h2"]
    assert ring.current == ("h2", 5432)


async def test_no_host_answering_raises_the_last_error() -> None:
    """Every host down: the last host's error, after one try each."""
    fake = Hosts(h1="refused", h2="silent", h3="refused")
    ring = HostRing(HOSTS, connect_timeout=1.0, opener=fake)
    with pytest.raises(ConnectionRefusedError, match="h3"):
        await ring.connect(DSN)
    assert [t for _, t in fake.calls] == [MIN_HOST_TIMEOUT] * 3


async def test_a_refused_password_is_not_hidden_behind_other_hosts() -> None:
    """An error that another host would repeat (authentication) is raised at once."""

    async def denied(dsn: str, **kwargs: Any) -> Any:
        raise asyncpg.InvalidPasswordError("password authentication failed")

    ring = HostRing(HOSTS, connect_timeout=9.0, opener=denied)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await ring.connect(DSN)


class Clock:
    """Monotonic seconds, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_silent_host_is_skipped_while_others_answer_during_a_failover() -> None:
    """h1 was the primary and went silent (cut off); h2 and h3 are standbys until h2 is
    promoted. After h1's first time-out, each try asks only h2 and h3 (a round trip each), so
    the new primary is taken at the first try after its promotion, not a time-out later."""
    fake = Hosts(h1="primary")
    clock = Clock()
    ring = HostRing(HOSTS, connect_timeout=9.0, opener=fake, clock=clock)
    await ring.connect(DSN)  # h1 is the last primary
    fake.answers = {"h1": "silent", "h2": "standby", "h3": "standby"}
    fake.calls.clear()
    with pytest.raises(asyncpg.TargetServerAttributeNotMatched):
        await ring.connect(DSN)
    assert [h for h, _ in fake.calls] == ["h1", "h2", "h3"]  # h1's time-out paid once
    fake.calls.clear()
    clock.now += 5
    with pytest.raises(asyncpg.TargetServerAttributeNotMatched):
        await ring.connect(DSN)
    assert [h for h, _ in fake.calls] == ["h2", "h3"]
    fake.answers["h2"] = "primary"
    fake.calls.clear()
    assert await ring.connect(DSN) == "conn-h2"
    assert [h for h, _ in fake.calls] == ["h2"]


async def test_a_silent_host_is_tried_last_when_nobody_else_answers_and_after_its_quiet() -> None:
    """No other host answered: the silent one is still tried (last). Its quiet time over, it is
    tried again in its turn, and found as the primary if it only was slow for a moment."""
    fake = Hosts(h1="silent", h2="refused", h3="refused")
    clock = Clock()
    ring = HostRing(HOSTS, connect_timeout=9.0, opener=fake, clock=clock)
    with pytest.raises(ConnectionRefusedError):
        await ring.connect(DSN)
    fake.answers = {"h1": "silent", "h2": "silent", "h3": "silent"}
    fake.calls.clear()
    with pytest.raises(TimeoutError):
        await ring.connect(DSN)
    assert [h for h, _ in fake.calls] == ["h2", "h3", "h1"]  # nobody answered: all tried
    fake.answers = {"h1": "primary", "h2": "standby", "h3": "standby"}
    clock.now += ring.quiet + 0.1
    fake.calls.clear()
    assert await ring.connect(DSN) == "conn-h1"
    assert ring.silent() == set()


@pytest.mark.parametrize(("url", "idle"), [(DSN, MULTI_HOST_IDLE), (ONE_HOST, 300.0)])
async def test_a_multi_host_pool_closes_idle_connections_soon(
    monkeypatch: pytest.MonkeyPatch, url: str, idle: float
) -> None:
    """Several hosts: a pooled connection idle for MULTI_HOST_IDLE seconds is closed (a standby
    scheduler's next statement then takes a new connection through the ring, not one to a host
    that may have been cut off meanwhile); one host keeps asyncpg's 300 s."""
    seen: dict[str, Any] = {}

    class Pool:
        async def execute(self, sql: str) -> None:
            pass

    async def create_pool(dsn: str, **kwargs: Any) -> Pool:
        seen.update(kwargs)
        return Pool()

    monkeypatch.setattr(connections.asyncpg, "create_pool", create_pool)
    await PostgresConnections(parse_url(url))._open_pool()
    assert seen["max_inactive_connection_lifetime"] == idle
    assert (seen["connect"] is not None) == (url == DSN)
    # asyncpg never closes the connections that make up min_size: none by default with several
    # hosts, unless the URL asks for some.
    assert seen["min_size"] == (0 if url == DSN else 1)
    assert parse_url(DSN + "&min_size=2").min_size == 2
