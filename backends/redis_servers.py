"""Which Redis server is the primary now, for reports (the control centre's overview).

:class:`ServerStates` asks, at most every :data:`INTERVAL` seconds of the registry's clock,
and keeps the answer: with Sentinel, the primary and replicas the sentinels name now (redis-py's
public ``Sentinel.discover_master`` / ``discover_slaves``); with one server, whether it answers
a PING. Asking never raises and is bounded by :data:`TIMEOUT`; reading the answer
(:attr:`ServerStates.states`) does no I/O. Nothing here decides anything: the registry's own
connections follow a failover by themselves (``redis_url.FollowingConnection``).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from agentdeck.core.clock import Clock

INTERVAL = 5.0
"""Seconds between two questions to the sentinels (or PINGs): a repaint never asks."""
TIMEOUT = 10.0
"""Seconds one round of questions may take (a sentinel cut off costs its socket time-out)."""

PRIMARY, REPLICA, DOWN, CONNECTED, UNKNOWN = "primary", "replica", "down", "connected", "?"


class ServerStates:
    """The Redis servers of one registry as last asked: ``host:port`` -> ``primary``,
    ``replica``, ``down`` (known before, not named now, or not answering), ``connected`` (a
    lone server that answers) or ``?`` (nobody could say)."""

    def __init__(
        self,
        clock: Clock,
        *,
        sentinel: Sentinel | None = None,
        service: str = "",
        server: str = "",
        interval: float = INTERVAL,
    ) -> None:
        self.states: dict[str, str] = {server: UNKNOWN} if server else {}
        """The last answer (no I/O to read it)."""
        self.asked_at: float | None = None
        """When the last round of questions started (the registry's clock), None: never."""
        self._clock, self._interval = clock, interval
        self._sentinel, self._service, self._server = sentinel, service, server

    def __repr__(self) -> str:
        return f"<ServerStates {self.states} asked_at={self.asked_at}>"

    async def refresh(self, client: Redis | None) -> dict[str, str]:
        """Ask again if :data:`INTERVAL` has passed since the last time (a call meanwhile,
        or one made while a round is under way, returns the last answer); never raises."""
        now = self._clock.now()
        if self.asked_at is not None and now - self.asked_at < self._interval:
            return self.states
        self.asked_at = now
        try:
            async with asyncio.timeout(TIMEOUT):
                if self._sentinel is not None:
                    self.states = await self._ask_sentinels(self._sentinel)
                elif self._server:
                    self.states = {self._server: await self._ping(client)}
        except (TimeoutError, RedisError, OSError):  # (what discover_* do not catch themselves)
            self.states = dict.fromkeys(self.states, UNKNOWN)
        return self.states

    async def _ask_sentinels(self, sentinel: Sentinel) -> dict[str, str]:
        try:
            primary: tuple[Any, Any] | None = await sentinel.discover_master(self._service)
        except RedisError:  # MasterNotFoundError: no sentinel names a healthy primary
            primary = None
        replicas = await sentinel.discover_slaves(self._service)
        if primary is None and not replicas:
            # No sentinel answered, or none knows the service: nobody can say.
            return dict.fromkeys(self.states, UNKNOWN)
        named = {_address(host, port): REPLICA for host, port in replicas}
        if primary is not None:
            named[_address(*primary)] = PRIMARY
        # A server known before and named by no sentinel now (an old primary that is down,
        # a replica marked down) is down.
        return {**dict.fromkeys(self.states, DOWN), **named}

    @staticmethod
    async def _ping(client: Redis | None) -> str:
        if client is None:
            return UNKNOWN
        try:
            answer = client.ping()
            if inspect.isawaitable(answer):
                await answer
        except RedisError:
            return DOWN
        return CONNECTED


def _address(host: Any, port: Any) -> str:
    host = host.decode() if isinstance(host, bytes) else str(host)
    return f"{host}:{int(port)}"
