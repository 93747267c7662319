"""aio-pika's robust connection and channel, adjusted: each (re)connection picks a live broker of
the URL's list, a channel closed on purpose stays closed, and the frames of one event-loop turn
leave in one socket write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq.connection
import structlog
from aio_pika.abc import AbstractRobustChannel
from aiormq.exceptions import AMQPConnectionError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from yarl import URL

from agentdeck.backends.rabbitmq.failures import RETRYABLE

log = structlog.get_logger(__name__)


class QuietConnectFailures(logging.Filter):
    """Drop aiormq's "error when creating transport" line: every failed connect is already
    reported by us (the start-up error, or aio-pika's reconnect warnings), and the raw line,
    printed once per try, would bury the one clear error a failed start-up ends with."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(QuietConnectFailures())


class Channel(aio_pika.RobustChannel):
    """A robust channel that stays closed once closed on purpose.

    aio-pika 9.6 restores every robust channel of a connection after a reconnect, including
    one closed with ``close()``, and with it that channel's consumers: a consumer whose
    iterator is gone would come back and sit on messages nobody will ever ack.
    """

    retired = False

    async def restore(self, channel: Any = None) -> None:
        if not self.retired:
            await super().restore(channel)


class CoalescingWriter:
    """A ``StreamWriter`` that sends the frames written in one turn of the event loop with one
    socket write.

    aiormq writes every frame on its own (each publish, each ack): one ``send`` system call per
    message, the largest single cost of both the scheduler and the agents under load. Here the
    frames of one turn are joined and written at the end of it, in order. ``drain`` keeps its
    meaning (flow control: it waits while the socket's buffer is full) and flushes at once past
    :attr:`LIMIT`; ``close`` and ``write_eof`` flush first. Nothing is acked or confirmed
    earlier than before: acks were already only queued in the transport, and confirms come
    from the broker.
    """

    LIMIT = 64 * 1024

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(data)
        self._size += len(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        if self._size >= self.LIMIT:
            self._flush()
        await self._writer.drain()

    def write_eof(self) -> None:
        self._flush()
        self._writer.write_eof()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, can_write_eof, wait_closed, ...
        return getattr(self._writer, name)


class BrokerRing:
    """The brokers of one connection, in the URL's order, tried in turn.

    Every (re)connection walks the whole ring once, starting after the broker it last reached:
    a reconnection so tries another node first (the one it lost is probably down), and a
    cluster's nodes share the load of many processes' reconnections.
    """

    def __init__(self, brokers: Sequence[tuple[str, int]]) -> None:
        if not brokers:
            raise ValueError("a BrokerRing needs at least one (host, port)")
        self.brokers = tuple(brokers)
        self._start = 0
        self.current: tuple[str, int] | None = None
        """The broker of the last transport made (None before the first)."""
        self.seen: dict[tuple[str, int], tuple[str, float]] = {}
        """Each broker tried so far: how it was last seen, ``reached`` (a transport to it
        opened), ``lost`` (the next transport went elsewhere) or ``down`` (a try failed), and
        when (``time.monotonic``). For reports only (:func:`broker_states`)."""

    def order(self) -> list[tuple[str, int]]:
        """Every broker once, from the one after the last reached."""
        return [*self.brokers[self._start :], *self.brokers[: self._start]]

    def reached(self, broker: tuple[str, int]) -> None:
        """A transport to ``broker`` is open: the next (re)connection starts after it."""
        now = time.monotonic()
        if self.current is not None and self.current != broker:
            # A new transport elsewhere: the connection on the last one was lost.
            self.seen[self.current] = ("lost", now)
        self.current = broker
        self._start = (self.brokers.index(broker) + 1) % len(self.brokers)
        self.seen[broker] = ("reached", now)

    def failed(self, broker: tuple[str, int]) -> None:
        """A try of ``broker`` failed (refused, timed out): noted for reports only."""
        self.seen[broker] = ("down", time.monotonic())


class CoalescingTransportFactory(aiormq.connection.TransportFactory):
    """aiormq's own TCP/TLS connection to the first broker of the ring that answers (each try
    bounded by ``host_timeout``), its writer wrapped in :class:`CoalescingWriter`."""

    def __init__(self, tls: bool, ring: BrokerRing, host_timeout: float) -> None:
        self._inner: aiormq.connection.TransportFactory = (
            aiormq.connection.TLSTransportFactory()
            if tls
            else aiormq.connection.TCPTransportFactory()
        )
        self.ring = ring
        self._host_timeout = host_timeout

    async def create(self, url: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, Any]:
        failures: list[str] = []
        for host, port in self.ring.order():
            try:
                async with asyncio.timeout(self._host_timeout):
                    # The URL's host also names the TLS server (SNI, certificate check).
                    reader, writer = await self._inner.create(
                        URL(url).with_host(host).with_port(port), **kwargs
                    )
            except (OSError, AMQPConnectionError, TimeoutError) as exc:
                failures.append(f"{host}:{port}: {type(exc).__name__}: {exc}".rstrip(": "))
                self.ring.failed((host, port))
                continue
            if len(self.ring.brokers) > 1:
                log.info("rabbit_broker_chosen", broker=f"{host}:{port}", tried=len(failures) + 1)
            self.ring.reached((host, port))
            return reader, CoalescingWriter(writer)
        raise AMQPConnectionError(f"no broker answered ({'; '.join(failures)})")


class Connection(aio_pika.RobustConnection):
    """A robust connection to one of ``brokers`` (:class:`BrokerRing`, on every reconnection
    too), whose channels are :class:`Channel` and whose frames leave in one socket write per
    event-loop turn (:class:`CoalescingWriter`)."""

    CHANNEL_CLASS = Channel

    def __init__(
        self, url: URL, *, brokers: Sequence[tuple[str, int]], host_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(url, **kwargs)
        self.ring = BrokerRing(brokers)
        self.kwargs["transport_factory"] = CoalescingTransportFactory(
            self.url.scheme == "amqps", self.ring, host_timeout
        )

    def __del__(self) -> None:
        # aio-pika's __del__ schedules close() on a connection that never finished opening
        # (``is_closed`` stays false without a transport) even after close() was called;
        # collected while no loop runs, that coroutine is never awaited (a RuntimeWarning,
        # an error under pytest). One whose close() was called needs nothing more.
        if not self.close_called:
            super().__del__()


def broker_states(
    brokers: Sequence[tuple[str, int]], connections: Sequence[Connection | None]
) -> dict[str, str]:
    """Each of ``brokers`` (``host:port``) as ``connections`` last saw it, for reports:
    ``connected`` (one of them is connected to it now), ``lost`` (a connection was on it and
    is not any more), ``down`` (its last try failed), ``?`` (never tried). The newest
    observation among the connections decides; nothing is asked of the brokers."""
    opened = [c for c in connections if c is not None]
    live = {c.ring.current for c in opened if c.connected.is_set()}
    states: dict[str, str] = {}
    for broker in brokers:
        seen = [c.ring.seen[broker] for c in opened if broker in c.ring.seen]
        if broker in live:
            state = "connected"
        elif seen:
            last = max(seen, key=lambda s: s[1])[0]
            # reached but not connected now: that connection is down and reconnecting
            state = "down" if last == "down" else "lost"
        else:
            state = "?"
        states[f"{broker[0]}:{broker[1]}"] = state
    return states


def retire(channel: AbstractRobustChannel) -> None:
    """Make sure ``channel`` is never re-opened by a reconnection."""
    if isinstance(channel, Channel):
        channel.retired = True


async def connect(
    url: str,
    *,
    brokers: Sequence[tuple[str, int]],
    attempts: int,
    timeout: float,
    reconnect_interval: float,
) -> Connection:
    """A robust :class:`Connection` to one of ``brokers`` (``url`` gives the rest: user,
    vhost, options), after at most ``attempts`` tries with jittered backoff, each bounded by
    ``timeout`` seconds and walking every broker once. Raises the last connection error."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
        retry=retry_if_exception_type(RETRYABLE),
        reraise=True,
    ):
        with attempt:
            # What aio_pika.connect_robust does, with our connection's own arguments.
            connection = Connection(
                URL(url),
                brokers=brokers,
                host_timeout=timeout / len(brokers),
                reconnect_interval=reconnect_interval,
            )
            try:
                await connection.connect(timeout=timeout)
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.close()
                raise
            return connection
    raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises


def role_url(url: str, role: str) -> str:
    """``url`` with a connection name for the management UI, unless it names one already."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if not any(k == "name" for k, _ in query):
        query.append(("name", f"agentdeck-{role}-{socket.gethostname()}-{os.getpid()}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


async def close_channel(channel: AbstractRobustChannel | None, timeout: float) -> None:
    """Close a channel for good, bounded by ``timeout``; one whose connection is down counts
    as closed (and is never re-opened)."""
    if channel is None:
        return
    retire(channel)
    if not channel.is_initialized:
        return
    try:
        async with asyncio.timeout(timeout):
            await channel.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # aiormq cancels a channel's closing when its connection closes first: closed.
    except Exception as exc:
        log.debug("rabbit_channel_close_failed", error=type(exc).__name__)
