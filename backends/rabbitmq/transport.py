"""aio-pika's robust connection and channel, adjusted: a channel closed on purpose stays closed,
and the frames of one event-loop turn leave in one socket write."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq.connection
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

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


class CoalescingTransportFactory(aiormq.connection.TransportFactory):
    """aiormq's own TCP/TLS connection, its writer wrapped in :class:`CoalescingWriter`."""

    def __init__(self, tls: bool) -> None:
        self._inner: aiormq.connection.TransportFactory = (
            aiormq.connection.TLSTransportFactory()
            if tls
            else aiormq.connection.TCPTransportFactory()
        )

    async def create(self, url: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, Any]:
        reader, writer = await self._inner.create(url, **kwargs)
        return reader, CoalescingWriter(writer)


class Connection(aio_pika.RobustConnection):
    """A robust connection whose channels are :class:`Channel` and whose frames leave in one
    socket write per event-loop turn (:class:`CoalescingWriter`; also after reconnecting)."""

    CHANNEL_CLASS = Channel

    def __init__(self, url: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self.kwargs["transport_factory"] = CoalescingTransportFactory(self.url.scheme == "amqps")


def retire(channel: AbstractRobustChannel) -> None:
    """Make sure ``channel`` is never re-opened by a reconnection."""
    if isinstance(channel, Channel):
        channel.retired = True


async def connect(
    url: str, *, attempts: int, timeout: float, reconnect_interval: float
) -> AbstractRobustConnection:
    """A robust :class:`Connection` to ``url``, after at most ``attempts`` tries with jittered
    backoff, each bounded by ``timeout`` seconds. Raises the last connection error."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
        retry=retry_if_exception_type(RETRYABLE),
        reraise=True,
    ):
        with attempt:
            return await aio_pika.connect_robust(
                url,
                timeout=timeout,
                reconnect_interval=reconnect_interval,
                connection_class=Connection,
            )
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
