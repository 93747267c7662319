"""Connecting to one of a store URL's PostgreSQL hosts: each host on its own time-out, the one
that last took a connection first.

asyncpg tries a multi-host DSN's hosts in order within one time-out for them all. A host cut
off the network drops packets instead of refusing them, so it used the whole time-out up and
the hosts after it were never tried: after a partition of the primary's host, every new
connection failed until the kernel gave up on that address, and the store reached the new
primary 35 s after the cut (``tests/e2e/test_cluster.py``), past the 30 s goal.
:class:`HostRing` gives each host ``connect_timeout / hosts`` (at least
:data:`MIN_HOST_TIMEOUT`), and starts with the host that last served, so once a failover is
found every later connection goes straight to the new primary.

A host that did not answer within its time-out (a cut-off host: its packets are dropped) is
**silent** for ``connect_timeout`` seconds after: it is tried last, and not at all while another
host answers (refuses, or is not the primary yet). During a failover the store then asks the
answering hosts every round at the cost of a round trip each, instead of waiting the silent
host's share each time, and takes the new primary the round after it is promoted. Once its
quiet time is over, a silent host is tried again (last), so a primary that was only slow for
a moment is found again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg

__all__ = ["MIN_HOST_TIMEOUT", "HostRing", "dsn_for"]

#: What a host is when it takes a connection asking for ``target_session_attrs``, and what it
#: is when it refuses as the wrong kind.
_KINDS = {
    "read-write": ("primary", "replica"),
    "primary": ("primary", "replica"),
    "standby": ("replica", "primary"),
    "read-only": ("replica", "primary"),
}

MIN_HOST_TIMEOUT = 2.0
"""Seconds a host is given at least: a loaded server still answers in that time."""

#: Failures that say "not this host, now": try the next one.
_NEXT_HOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # refused, starting up, shutting down
    asyncpg.CannotConnectNowError,
    asyncpg.TargetServerAttributeNotMatched,  # a standby, when the URL wants the primary
)


def dsn_for(dsn: str, host: str, port: int) -> str:
    """``dsn`` naming only ``host:port`` (user, password, database and options kept)."""
    parts = urlsplit(dsn)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{port}"))


class HostRing:
    """The hosts of one store URL, tried one at a time (the pool's ``connect``).

    ``opener`` makes one connection (``asyncpg.connect``; tests pass a fake); ``clock`` gives
    monotonic seconds (tests pass a fake)."""

    def __init__(
        self,
        hosts: Sequence[tuple[str, int]],
        connect_timeout: float,
        opener: Callable[..., Awaitable[asyncpg.Connection]] = asyncpg.connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not hosts:
            raise ValueError("a HostRing needs at least one (host, port)")
        self.hosts = tuple(hosts)
        self._opener = opener
        self._clock = clock
        self.host_timeout = max(connect_timeout / len(self.hosts), MIN_HOST_TIMEOUT)
        self.quiet = max(connect_timeout, self.host_timeout)
        """Seconds a host that did not answer stays silent (see the module docstring)."""
        self._start = 0
        self._seen: dict[tuple[str, int], str] = {}
        self._silent_until: dict[tuple[str, int], float] = {}

    @property
    def current(self) -> tuple[str, int]:
        """The host that took the last connection (the first host before any)."""
        return self.hosts[self._start]

    def silent(self) -> set[tuple[str, int]]:
        """The hosts that did not answer within their time-out in the last ``quiet`` seconds."""
        now = self._clock()
        return {h for h, until in self._silent_until.items() if until > now}

    def order(self) -> list[tuple[str, int]]:
        """Every host once: the one that last took a connection first, silent ones last."""
        ring = [*self.hosts[self._start :], *self.hosts[: self._start]]
        silent = self.silent()
        return [h for h in ring if h not in silent] + [h for h in ring if h in silent]

    async def connect(self, dsn: str, **kwargs: Any) -> asyncpg.Connection:
        """A connection to the first host, in :meth:`order`, that takes one within its
        time-out and is of the kind the DSN asks for; raises the last host's error. A silent
        host is skipped when another host answered this time."""
        kwargs.pop("timeout", None)
        last: BaseException | None = None
        silent = self.silent()
        answered = False
        for host, port in self.order():
            if (host, port) in silent and answered:
                continue
            try:
                conn = await self._opener(
                    dsn_for(dsn, host, port), timeout=self.host_timeout, **kwargs
                )
            except _NEXT_HOST as exc:
                last = exc
                self.note(host, port, exc, dsn)
                if isinstance(exc, asyncio.TimeoutError):
                    self._silent_until[(host, port)] = self._clock() + self.quiet
                else:
                    answered = True
                continue
            self._silent_until.pop((host, port), None)
            self._start = self.hosts.index((host, port))
            self.note(host, port, None, dsn)
            return conn
        assert last is not None
        raise last

    # ------------------------------------------------------------------- reports only

    def note(self, host: str, port: int, error: BaseException | None, dsn: str = "") -> None:
        """Remember what the last try of ``host:port`` said, for :meth:`states`. Taken, or
        refused as the wrong kind, it is the kind the DSN's ``target_session_attrs`` asks
        for, or the other (a standby refused where the primary is asked for is a replica);
        taken with no kind asked, just connected; any other failure, down."""
        key = (host, port)
        if error is None or isinstance(error, asyncpg.TargetServerAttributeNotMatched):
            attrs = dict(parse_qsl(urlsplit(dsn).query)).get("target_session_attrs")
            asked, other = _KINDS.get(attrs or "", ("connected", "connected"))
            self._seen[key] = asked if error is None else other
        else:
            self._seen[key] = "down"

    def states(self) -> dict[str, str]:
        """Every host (``host:port``) as the last connection tried it: ``primary``,
        ``replica``, ``down``, ``connected`` (any kind was asked for) or ``?`` (not tried
        yet). Known only as new connections are made: a pool that holds its connections
        learns of a failover on its next connection. No I/O."""
        return {f"{h}:{p}": self._seen.get((h, p), "?") for h, p in self.hosts}
