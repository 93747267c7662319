"""HostRing: each host of a multi-host store URL on its own time-out, the last primary first."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from agentdeck.backends.postgres.hosts import MIN_HOST_TIMEOUT, HostRing, dsn_for

DSN = "postgresql://app:s3cret@h1:5432,h2:5432,h3:5433/agentdeck?target_session_attrs=read-write"
HOSTS = [("h1", 5432), ("h2", 5432), ("h3", 5433)]


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
