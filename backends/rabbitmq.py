"""The RabbitMQ message bus, ``RabbitBus`` (``amqp://`` and ``amqps://``), on aio-pika.

Every name lives under a prefix (URL option ``prefix``, default ``agentdeck``); docs/rabbitmq.md
lists them and says why each is shaped so:

- ``<prefix>.task.<capability>`` and ``<prefix>.reports``: durable quorum queues with a delivery
  limit, dead-lettering through the fanout exchange ``<prefix>.dlx`` into the quorum queue
  ``<prefix>.dead``. Messages are persistent and published with confirms, a whole
  batch in flight at once; consumers ack by hand.
- ``<prefix>.events`` (topic) and ``<prefix>.control`` (fanout): each subscriber owns an
  exclusive, auto-deleted, length-capped queue (oldest dropped first), so a slow watcher loses
  old events instead of slowing publishers.

Publishers and consumers use two robust connections (a broker blocking a busy publisher must not
stall the acks of consumers). After a broker restart aio-pika reconnects, re-opens every channel,
re-declares queues and bindings and re-consumes; publishes wait for that (up to
``publish_timeout``) and consumer iterators keep waiting instead of ending.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq.connection
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
    DeliveryMode,
    ExchangeType,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_exponential_jitter,
)

from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError, BackendUnavailable, ConfigError, NotFound
from agentdeck.core.metrics import backend_reconnected
from agentdeck.core.ports import DeadLetter, Delivery, OutgoingTask
from agentdeck.core.settings import redact_url

log = structlog.get_logger(__name__)


class _QuietConnectFailures(logging.Filter):
    """Drop aiormq's "error when creating transport" line: every failed connect is already
    reported by us (the start-up error, or aio-pika's reconnect warnings), and the raw line,
    printed once per try, would bury the one clear error a failed start-up ends with."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_QuietConnectFailures())

T = TypeVar("T")

DEFAULT_PREFIX = "agentdeck"
#: Deliveries of one message before the broker dead-letters it (a poison message that kills
#: every agent taking it, or a task requeued by drains over and over).
DEFAULT_DELIVERY_LIMIT = 10
#: How many reports the scheduler may hold unacked; it acks them in batches after each write.
REPORT_PREFETCH = 256
#: Messages an event/control subscriber's queue keeps, by default, before dropping its oldest.
SUBSCRIBER_BUFFER = 1000
#: Unacked messages in flight to one subscriber; the rest wait (bounded) in its queue.
SUBSCRIBER_PREFETCH = 100
#: Most dead letters one listing reads (each is a basic.get round trip).
DEAD_SCAN_LIMIT = 10_000

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: The topic of an encoded core.messages.Event: the first keys of its JSON (``v``, ``type``,
#: ``topic``), so a look at its start is enough and the body is never parsed.
_TOPIC_RE = re.compile(rb'"topic"\s*:\s*"([A-Za-z0-9_-]{1,64})"')
#: Header of an events message that carries several events, one per line (see publish_event).
EVENT_BATCH_HEADER = "x-agentdeck-events"
#: The most events in one message. A subscriber keeps at most ``subscriber_buffer`` events of a
#: message it splits (the oldest go first, as in its queue), so this stays under the default.
EVENT_BATCH_MAX = 256
#: Query options handed to aiormq untouched (TLS files, heartbeat, connection name, auth).
_DRIVER_OPTIONS = frozenset(
    {
        "heartbeat",
        "name",
        "auth",
        "cafile",
        "capath",
        "cadata",
        "keyfile",
        "certfile",
        "no_verify_ssl",
    }
)
_OWN_OPTIONS = frozenset({"prefix", "delivery_limit", "reconnect_interval"})
#: Errors that mean "the broker or the connection is not there right now": worth retrying.
_RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, TimeoutError)


class _Unconfirmed(AgentdeckError):
    """Part of a batch was not confirmed (retried, then reported as BackendUnavailable)."""


_RETRY_PUBLISH: tuple[type[BaseException], ...] = (*_RETRYABLE, _Unconfirmed)
#: Channel errors that trying again cannot fix: a queue with other arguments, no permission.
_PERMANENT: tuple[type[BaseException], ...] = (
    ChannelPreconditionFailed,
    ChannelAccessRefused,
    ChannelNotFoundEntity,
    ChannelLockedResource,
)


def _transient(exc: BaseException) -> bool:
    """True for errors a reconnection or a moment's wait may cure."""
    return isinstance(exc, _RETRY_PUBLISH) and not isinstance(exc, _PERMANENT)


# -------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class RabbitConfig:
    """Where the broker is and how to use it, from a bus URL.

    ``url`` still holds the password, so it is left out of ``repr``; ``where`` is the
    ``host:port/vhost`` shown in messages.
    """

    url: str = field(repr=False)
    where: str
    prefix: str = DEFAULT_PREFIX
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    reconnect_interval: float = 1.0


def parse_url(url: str) -> RabbitConfig:
    """Read ``amqp[s]://user:pass@host:port/vhost?prefix=...``. Raises ConfigError naming the
    bad part and what is allowed."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    except ValueError as exc:
        raise ConfigError(f"bad RabbitMQ URL {shown!r}: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"expected an amqp:// or amqps:// URL, got {shown!r}")
    if not parts.hostname:
        raise ConfigError(f"RabbitMQ URL {shown!r} has no host; use amqp://user:pass@host:5672/")
    own: dict[str, str] = {}
    driver: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OWN_OPTIONS:
            own[key] = value
        elif key in _DRIVER_OPTIONS:
            driver.append((key, value))
        else:
            allowed = ", ".join(sorted(_OWN_OPTIONS | _DRIVER_OPTIONS))
            raise ConfigError(f"unknown option {key!r} in {shown!r}; allowed: {allowed}")
    prefix = own.get("prefix", DEFAULT_PREFIX)
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigError(
            f"prefix {prefix!r} in {shown!r} is not allowed; use 1-64 of A-Z a-z 0-9 _ . -"
        )
    delivery_limit = _number(own, "delivery_limit", DEFAULT_DELIVERY_LIMIT, int, shown)
    reconnect_interval = _number(own, "reconnect_interval", 1.0, float, shown)
    vhost = parts.path[1:] if parts.path.startswith("/") else parts.path
    return RabbitConfig(
        url=urlunsplit(parts._replace(query=urlencode(driver))),
        where=f"{parts.hostname}:{port}/{vhost}",
        prefix=prefix,
        delivery_limit=delivery_limit,
        reconnect_interval=reconnect_interval,
    )


N = TypeVar("N", int, float)


def _number(options: Mapping[str, str], key: str, default: N, kind: type[N], shown: str) -> N:
    if key not in options:
        return default
    try:
        value = kind(options[key])
    except ValueError:
        value = kind(0)
    if not value > 0:
        raise ConfigError(f"{key}={options[key]!r} in {shown!r} must be a positive {kind.__name__}")
    return value


@dataclass(frozen=True, slots=True)
class RabbitNames:
    """Every queue and exchange name of one prefix."""

    prefix: str

    @property
    def reports(self) -> str:
        """The quorum queue of agents' reports for the scheduler."""
        return f"{self.prefix}.reports"

    @property
    def dead(self) -> str:
        """The quorum queue holding dead letters."""
        return f"{self.prefix}.dead"

    @property
    def dlx(self) -> str:
        """The fanout exchange the broker dead-letters into; bound to :attr:`dead`."""
        return f"{self.prefix}.dlx"

    @property
    def events(self) -> str:
        """The topic exchange of events (routing key: the event's topic)."""
        return f"{self.prefix}.events"

    @property
    def control(self) -> str:
        """The fanout exchange of control messages for agents."""
        return f"{self.prefix}.control"

    def task(self, capability: str) -> str:
        """The quorum queue of ``capability``'s task messages."""
        return f"{self.prefix}.task.{capability}"

    def subscriber(self, exchange: str) -> str:
        """A fresh name for one subscriber's queue on ``exchange``."""
        return f"{exchange}.{os.urandom(6).hex()}"


# ------------------------------------------------------------------------------ deliveries


def _text_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """Scalar headers as text (the port's headers are strings); lists and tables dropped."""
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            out[key] = value.decode("utf-8", "replace")
        elif isinstance(value, str | int | float | bool):
            out[key] = str(value)
    return out


def _own_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The headers agentdeck set, without the ``x-`` ones the broker and dead-lettering add."""
    return {k: v for k, v in _text_headers(headers).items() if not k.startswith("x-")}


def _stale(message: AbstractIncomingMessage) -> bool:
    """True if the channel that delivered ``message`` is gone: the broker has already put it
    back in its queue, so settling it is impossible and running it would duplicate work."""
    try:
        message.channel  # noqa: B018 - the property raises once that channel is closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return True
    return False


class RabbitDelivery:
    """A message held by one consumer until acked, rejected or requeued.

    Only the first settle counts. Settling after the consumer closed, or after the connection
    that delivered it dropped, does nothing: the broker has already given the message back.
    """

    __slots__ = (
        "_consumer",
        "_message",
        "body",
        "headers",
        "message_id",
        "queue",
        "redelivered",
        "settled",
    )

    def __init__(self, consumer: _Consumer, queue: str, message: AbstractIncomingMessage):
        self._consumer, self._message = consumer, message
        self.body: bytes = message.body
        self.headers: Mapping[str, str] = _text_headers(message.headers)
        self.redelivered: bool = bool(message.redelivered)
        self.queue = queue
        """The queue the message came from."""
        self.message_id: str = message.message_id or ""
        self.settled = False

    async def ack(self) -> None:
        """Settle the message as done; the broker forgets it."""
        if self._settle():
            await self._send(self._message.ack(), "ack")

    async def reject(self, reason: str) -> None:
        """Publish the message to the dead queue with ``reason`` (confirmed), then ack it here,
        so it carries its reason and is never requeued in a loop."""
        if not self._settle():
            return
        if _stale(self._message):
            log.warning("rabbit_reject_after_channel_loss", queue=self.queue, reason=reason)
            return
        try:
            await self._consumer.bus._dead_letter(self.queue, self._message, reason)
        except AgentdeckError:
            self.settled = False  # still ours: the caller may try again
            self._consumer.held(self)
            raise
        await self._send(self._message.ack(), "ack")

    async def requeue(self) -> None:
        """Give the message back to the head of its queue (marked redelivered)."""
        if self._settle():
            await self._send(self._message.nack(requeue=True), "nack")

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        self._consumer.released(self)
        return True

    async def _send(self, settle: Awaitable[None], what: str) -> None:
        try:
            await settle
        except _RETRYABLE as exc:
            # The delivering channel died: the broker has requeued the message already.
            log.warning("rabbit_settle_lost", what=what, queue=self.queue, error=type(exc).__name__)

    def __repr__(self) -> str:
        return (
            f"<RabbitDelivery queue={self.queue} redelivered={self.redelivered}"
            f" settled={self.settled}>"
        )


class _Consumer:
    """One ``consume_tasks``/``consume_reports`` iterator's machinery.

    One channel, one basic.consume per queue, manual acks. Quorum queues refuse a channel-wide
    (global) prefetch, so the broker bounds each queue's consumer to ``prefetch`` and this
    class hands out at most ``prefetch`` unsettled deliveries across all its queues.
    """

    #: Seconds between checks that the broker has not cancelled a consumer (queue deleted).
    CHECK_INTERVAL = 5.0

    def __init__(self, bus: RabbitBus, queues: Sequence[str], prefetch: int) -> None:
        self.bus = bus
        self._names = list(queues)
        self._prefetch = prefetch
        self._channel: AbstractRobustChannel | None = None
        self._queues: dict[str, AbstractRobustQueue] = {}
        self._tags: dict[str, str] = {}
        self._buffer: deque[tuple[str, AbstractIncomingMessage]] = deque()
        self._held: dict[RabbitDelivery, None] = {}
        self._wakeup = asyncio.Event()
        self._ended = False
        self._closing: asyncio.Future[None] | None = None
        self._next_check = time.monotonic() + self.CHECK_INTERVAL

    async def open(self) -> None:
        """Open the channel, declare the queues and start consuming them. A failed try closes
        its channel and starts again on a new one (a half-set-up robust channel would restore
        its consumers later and consume twice). Raises BackendUnavailable or ConfigError."""

        async def attempt() -> None:
            channel = await self.bus._open_channel(self.bus._consume_connection(), confirms=False)
            self._channel = channel
            try:
                await channel.set_qos(prefetch_count=self._prefetch)
                for name in self._names:
                    await self._consume(name)
            except BaseException:
                self._channel = None
                self._queues.clear()
                self._tags.clear()
                await self.bus._close_channel(channel)
                raise

        await self.bus._retry("start consuming", attempt)

    async def _consume(self, name: str) -> None:
        assert self._channel is not None
        queue = await self.bus._declare_queue(self._channel, name)
        self._queues[name] = queue

        async def on_message(message: AbstractIncomingMessage) -> None:
            self._buffer.append((name, message))
            self._wakeup.set()

        self._tags[name] = await queue.consume(on_message)

    async def next(self) -> RabbitDelivery | None:
        """The next delivery once fewer than ``prefetch`` are unsettled; None once ended."""
        while not self._ended:
            if time.monotonic() >= self._next_check:  # on a clock: a busy queue must not
                await self._resume_cancelled()  # hide that another one went quiet
                self._next_check = time.monotonic() + self.CHECK_INTERVAL
            if len(self._held) < self._prefetch:
                while self._buffer:
                    name, message = self._buffer.popleft()
                    if _stale(message):
                        continue  # from before a reconnect; the broker sends it again
                    delivery = RabbitDelivery(self, name, message)
                    self._held[delivery] = None
                    return delivery
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_check - time.monotonic()):
                    await self._wakeup.wait()
        return None

    def released(self, delivery: RabbitDelivery) -> None:
        """A delivery was settled: its prefetch slot is free."""
        self._held.pop(delivery, None)
        self._wakeup.set()

    def held(self, delivery: RabbitDelivery) -> None:
        """A settle failed: the delivery is unsettled again."""
        self._held[delivery] = None

    async def _resume_cancelled(self) -> None:
        """Consume again from queues whose consumer the broker cancelled (someone deleted the
        queue): otherwise this consumer would silently stop taking work."""
        channel = self._channel
        if channel is None or channel.is_closed or self.bus._consume_connection().is_closed:
            return
        try:
            async with asyncio.timeout(self.CHECK_INTERVAL):
                underlay = await channel.get_underlay_channel()
                active: Mapping[str, Any] = getattr(underlay, "consumers", {})
                for name, tag in list(self._tags.items()):
                    if tag in active:
                        continue
                    log.warning("rabbit_consumer_cancelled_by_broker", queue=name)
                    with contextlib.suppress(*_RETRYABLE):
                        await self._queues[name].cancel(tag)  # forget it for restores too
                    await self._consume(name)
        except _RETRYABLE as exc:  # reconnecting: the robust channel restores consumers
            log.debug("rabbit_consumer_check_skipped", error=type(exc).__name__)

    def end(self) -> None:
        """Make :meth:`next` return None (the iterator finishes)."""
        self._ended = True
        self._wakeup.set()

    async def close(self) -> None:
        """End, and close the channel: the broker cancels the consumers and puts every
        unacked message back, in order, marked redelivered. Every caller (the iterator's
        ``finally``, the bus's ``close``) waits for the same closing."""
        self.end()
        if self._closing is None:
            for delivery in self._held:
                delivery.settled = True  # a late settle must not act on a returned message
            self._held.clear()
            self._buffer.clear()
            channel, self._channel = self._channel, None
            self._closing = asyncio.ensure_future(self.bus._close_channel(channel))
        await asyncio.shield(self._closing)


class _Subscription:
    """An event or control subscriber: its own exclusive, length-capped queue on ``exchange``.

    Setting up starts at once (the bus's publishers wait for it), so messages published after
    ``subscribe_*`` returns reach it. Each message is acked as it is handed out; the broker keeps
    the rest in the queue, dropping the oldest past ``SUBSCRIBER_BUFFER``.
    """

    def __init__(
        self, bus: RabbitBus, exchange: str, after: asyncio.Future[None] | None = None
    ) -> None:
        self._bus = bus
        self._exchange = exchange
        self._after = after
        """Events published before this subscription, still being sent: it binds after them."""
        self._channel: AbstractRobustChannel | None = None
        self._buffer: deque[AbstractIncomingMessage] = deque()
        self._parts: deque[bytes] = deque(maxlen=bus.subscriber_buffer)
        """The rest of a message that carried several events."""
        self._wakeup = asyncio.Event()
        self._ended = False
        self._closing: asyncio.Future[None] | None = None
        self.ready: asyncio.Task[None] = asyncio.ensure_future(self._open())
        self.ready.add_done_callback(_retrieve)

    async def _open(self) -> None:
        # Like a consumer's set-up: a failed try (the broker closing the connection with
        # INTERNAL_ERROR while the queue was declared was seen in CI: an agent then exited at
        # start) closes its channel and starts again on a new one, within the bus's retry.
        if self._after is not None:
            await asyncio.wait({self._after})

        async def attempt() -> None:
            channel = await self._bus._open_channel(self._bus._consume_connection(), confirms=False)
            self._channel = channel
            if self._ended:
                await self._bus._close_channel(channel)
                return
            try:
                size = self._bus.subscriber_buffer
                await channel.set_qos(prefetch_count=min(SUBSCRIBER_PREFETCH, size))
                queue = await channel.declare_queue(
                    self._bus.names.subscriber(self._exchange),
                    exclusive=True,
                    auto_delete=True,
                    arguments={
                        "x-queue-type": "classic",
                        "x-max-length": size,
                        "x-overflow": "drop-head",
                    },
                )
                await queue.bind(self._exchange, routing_key="#")
                await queue.consume(self._on_message)
            except BaseException:
                self._channel = None
                await self._bus._close_channel(channel)
                raise

        await self._bus._retry("subscribe", attempt)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._buffer.append(message)
        self._wakeup.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if not self.ready.done():
            await asyncio.wait({self.ready})  # never raises; a failed set-up is reported below
        if self._ended or self.ready.cancelled():
            raise StopAsyncIteration
        failure = self.ready.exception()
        if isinstance(failure, AgentdeckError):
            raise failure
        if failure is not None:
            raise self._bus._unavailable("subscribe", failure)
        if self._parts:
            return self._parts.popleft()
        while not self._buffer and not self._ended:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._ended:
            raise StopAsyncIteration
        message = self._buffer.popleft()
        if not _stale(message):
            with contextlib.suppress(*_RETRYABLE):
                await message.ack()
        if (message.headers or {}).get(EVENT_BATCH_HEADER):
            self._parts.extend(message.body.split(b"\n"))
            return self._parts.popleft()
        return message.body

    def end(self) -> None:
        """Make the iterator finish."""
        self._ended = True
        self._wakeup.set()

    async def aclose(self) -> None:
        """Stop receiving: the iterator ends and its queue is deleted."""
        self._bus._subscriptions.discard(self)
        await self.close()

    async def close(self) -> None:
        """End and close the channel (the exclusive queue goes with it)."""
        self.end()
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shut())
        await asyncio.shield(self._closing)

    async def _shut(self) -> None:
        if not self.ready.done():
            self.ready.cancel()
            await asyncio.gather(self.ready, return_exceptions=True)
        channel, self._channel = self._channel, None
        await self._bus._close_channel(channel)


class _Channel(aio_pika.RobustChannel):
    """A robust channel that stays closed once closed on purpose.

    aio-pika 9.6 restores every robust channel of a connection after a reconnect, including
    one closed with ``close()``, and with it that channel's consumers: a consumer whose
    iterator is gone would come back and sit on messages nobody will ever ack.
    """

    retired = False

    async def restore(self, channel: Any = None) -> None:
        if not self.retired:
            await super().restore(channel)


class _CoalescingWriter:
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


class _CoalescingTransportFactory(aiormq.connection.TransportFactory):
    """aiormq's own TCP/TLS connection, its writer wrapped in :class:`_CoalescingWriter`."""

    def __init__(self, tls: bool) -> None:
        self._inner: aiormq.connection.TransportFactory = (
            aiormq.connection.TLSTransportFactory()
            if tls
            else aiormq.connection.TCPTransportFactory()
        )

    async def create(self, url: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, Any]:
        reader, writer = await self._inner.create(url, **kwargs)
        return reader, _CoalescingWriter(writer)


class _Connection(aio_pika.RobustConnection):
    """A robust connection whose channels are :class:`_Channel` and whose frames leave in one
    socket write per event-loop turn (:class:`_CoalescingWriter`; also after reconnecting)."""

    CHANNEL_CLASS = _Channel

    def __init__(self, url: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self.kwargs["transport_factory"] = _CoalescingTransportFactory(self.url.scheme == "amqps")


def _retire(channel: AbstractRobustChannel) -> None:
    """Make sure ``channel`` is never re-opened by a reconnection."""
    if isinstance(channel, _Channel):
        channel.retired = True


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background task's exception as seen (its owner reports it when used)."""
    if not task.cancelled():
        task.exception()


# ------------------------------------------------------------------------------------- bus


class RabbitBus:
    """The bus on RabbitMQ (implements :class:`core.ports.Bus`; durable).

    ``connect_attempts`` bounds the tries at :meth:`start`; ``publish_timeout`` bounds how long
    a publish waits for the broker to confirm, including waiting for a reconnection;
    ``subscriber_buffer`` is how many messages an event/control subscriber's queue keeps before
    it drops its oldest.
    """

    durable = True

    def __init__(
        self,
        config: RabbitConfig,
        *,
        clock: Clock,
        connect_attempts: int = 5,
        connect_timeout: float = 5.0,
        publish_timeout: float = 30.0,
        subscriber_buffer: int = SUBSCRIBER_BUFFER,
    ) -> None:
        if connect_attempts < 1 or subscriber_buffer < 1:
            raise ValueError(
                "connect_attempts and subscriber_buffer must be at least 1, got "
                f"{connect_attempts!r} and {subscriber_buffer!r}"
            )
        if not (connect_timeout > 0 and publish_timeout > 0):
            raise ValueError(
                "connect_timeout and publish_timeout must be positive seconds, got "
                f"{connect_timeout!r} and {publish_timeout!r}"
            )
        self.subscriber_buffer = subscriber_buffer
        self.config = config
        self.names = RabbitNames(config.prefix)
        self._clock = clock
        self._connect_attempts = connect_attempts
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._publisher: AbstractRobustConnection | None = None
        self._consumer: AbstractRobustConnection | None = None
        self._confirmed: AbstractRobustChannel | None = None
        self._unconfirmed: AbstractRobustChannel | None = None
        self._events: AbstractRobustExchange | None = None
        self._control: AbstractRobustExchange | None = None
        self._task_queues: set[str] = set()
        """Task queues this bus has declared on its publishing channel."""
        self.declared: set[str] = set()
        """Every queue name this bus declared (see :meth:`delete_topology`)."""
        self._consumers: weakref.WeakSet[_Consumer] = weakref.WeakSet()
        self._subscriptions: set[_Subscription] = set()
        self._event_batches: dict[str, list[bytes]] = {}
        self._event_flush: asyncio.Task[None] | None = None
        self.closed = False
        self.published = 0

    @classmethod
    def from_url(cls, url: str, *, clock: Clock, **options: Any) -> Self:
        """A bus for ``amqp[s]://user:pass@host:port/vhost?prefix=agentdeck&delivery_limit=10``.

        Options: ``prefix`` names everything (tests use a random one), ``delivery_limit`` is
        the deliveries before the broker dead-letters a message, ``reconnect_interval`` the
        seconds between reconnection tries; ``heartbeat``, ``name`` and the TLS options go to
        the driver. Keyword ``options`` are passed to the constructor.
        """
        return cls(parse_url(url), clock=clock, **options)

    # -- life

    async def start(self) -> None:
        """Connect (bounded retries), open the publishing channels and declare the fixed
        topology. Raises BackendUnavailable naming host:port/vhost, or ConfigError when a
        queue exists with other arguments."""
        if self.closed:
            raise BackendUnavailable("the RabbitMQ bus is closed")
        if self._publisher is not None:
            return
        try:
            self._publisher = await self._connect("publisher")
            self._consumer = await self._connect("consumer")
            self._confirmed = await self._open_channel(self._publisher, confirms=True)
            self._unconfirmed = await self._open_channel(self._publisher, confirms=False)
            await self._retry("declare the topology", self._declare_topology)
        except AgentdeckError:
            await self.close()
            raise
        log.info("rabbit_bus_started", where=self.config.where, prefix=self.config.prefix)

    async def _declare_topology(self) -> None:
        """The exchanges and queues every process needs, whatever its role."""
        assert self._confirmed is not None
        assert self._unconfirmed is not None
        names, channel = self.names, self._confirmed
        dlx = await channel.declare_exchange(names.dlx, ExchangeType.FANOUT, durable=True)
        dead = await self._declare_queue(channel, names.dead)
        await dead.bind(dlx)
        await self._declare_queue(channel, names.reports)
        self._control = await channel.declare_exchange(
            names.control, ExchangeType.FANOUT, durable=True
        )
        # Events are best effort (the Store has the truth): no confirm round trip for them.
        self._events = await self._unconfirmed.declare_exchange(
            names.events, ExchangeType.TOPIC, durable=True
        )

    async def close(self) -> None:
        """End every consumer and subscriber, close their channels (unacked messages go back
        to their queues) and disconnect."""
        if self.closed:
            return
        if self._event_flush is not None:  # events published just before closing still go
            with contextlib.suppress(Exception):
                await self._event_flush
        self.closed = True
        consumers, subscriptions = list(self._consumers), list(self._subscriptions)
        self._subscriptions.clear()
        for consumer in consumers:
            consumer.end()
        for subscription in subscriptions:
            subscription.end()
        await asyncio.gather(
            *(c.close() for c in consumers),
            *(s.close() for s in subscriptions),
            return_exceptions=True,
        )
        for connection in (self._consumer, self._publisher):
            if connection is not None and not connection.is_closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._connect_timeout):
                        await connection.close()

    async def _connect(self, role: str) -> AbstractRobustConnection:
        """A robust connection named for the management UI, after at most
        ``connect_attempts`` tries with jittered backoff."""
        url = self._role_url(role)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._connect_attempts),
                wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
                retry=retry_if_exception_type(_RETRYABLE),
                reraise=True,
            ):
                with attempt:
                    connection: AbstractRobustConnection = await aio_pika.connect_robust(
                        url,
                        timeout=self._connect_timeout,
                        reconnect_interval=self.config.reconnect_interval,
                        connection_class=_Connection,
                    )
                    # aio-pika calls this after each reconnection (not the first connect).
                    connection.reconnect_callbacks.add(lambda *_: backend_reconnected("rabbitmq"))
                    return connection
        except _RETRYABLE as exc:
            raise BackendUnavailable(
                f"RabbitMQ at {self.config.where} is unreachable after "
                f"{self._connect_attempts} attempt(s): {self._reason(exc)}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises

    def _role_url(self, role: str) -> str:
        parts = urlsplit(self.config.url)
        query = parse_qsl(parts.query)
        if not any(k == "name" for k, _ in query):
            query.append(("name", f"agentdeck-{role}-{socket.gethostname()}-{os.getpid()}"))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _consume_connection(self) -> AbstractRobustConnection:
        if self._consumer is None:
            raise BackendUnavailable("the RabbitMQ bus is not started")
        return self._consumer

    async def _open_channel(
        self, connection: AbstractRobustConnection, *, confirms: bool
    ) -> AbstractRobustChannel:
        """A robust channel (re-opened with its queues and consumers after a reconnect); waits
        for a reconnection in progress."""

        async def open_it() -> AbstractRobustChannel:
            async with asyncio.timeout(self._connect_timeout):
                await connection.ready()
                channel = connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
                try:
                    # Bounded from outside: aio-pika ignores initialize's own timeout and can
                    # wait forever on a transport that died meanwhile.
                    await channel.initialize()
                except BaseException:
                    _retire(channel)  # or the next reconnection would open it after all
                    raise
            return channel

        return await self._retry("open a channel", open_it)

    async def _close_channel(self, channel: AbstractRobustChannel | None) -> None:
        """Close a channel for good, bounded; one whose connection is down counts as closed
        (and is never re-opened)."""
        if channel is None:
            return
        _retire(channel)
        if not channel.is_initialized:
            return
        try:
            async with asyncio.timeout(self._connect_timeout):
                await channel.close()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # aiormq cancels a channel's closing when its connection closes first: closed.
        except Exception as exc:
            log.debug("rabbit_channel_close_failed", error=type(exc).__name__)

    async def _declare_queue(
        self, channel: AbstractRobustChannel, name: str
    ) -> AbstractRobustQueue:
        """Declare one of the durable quorum queues (idempotent; robust: re-declared when the
        channel is restored)."""
        if name == self.names.dead:
            # No delivery limit: listing dead letters returns them to the queue, which counts.
            arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        else:
            arguments = {
                "x-queue-type": "quorum",
                "x-delivery-limit": self.config.delivery_limit,
                "x-dead-letter-exchange": self.names.dlx,
                # Not "x-dead-letter-strategy: at-least-once": on RabbitMQ 3.10 its worker
                # supervisor dies for good after a few worker crashes (deleting such queues,
                # stop_app/start_app), and from then on every such queue fails (docs/rabbitmq.md).
                # Our own rejects are at-least-once anyway: confirmed publish, then ack.
            }
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        self.declared.add(name)
        return queue

    async def delete_topology(self) -> None:
        """Delete every queue this bus declared and the prefix's exchanges, messages and all.

        For tests and for retiring a prefix; uses its own short connection, so it works before
        or after :meth:`close`."""
        queues = sorted(self.declared | {self.names.dead, self.names.reports})
        exchanges = [self.names.events, self.names.control, self.names.dlx]
        connection = await aio_pika.connect(self.config.url, timeout=self._connect_timeout)
        try:
            async with asyncio.timeout(self._publish_timeout):
                channel = await connection.channel()
                for name in queues:
                    await channel.queue_delete(name)
                for name in exchanges:
                    await channel.exchange_delete(name)
        finally:
            await connection.close()

    # -- tasks and reports

    async def publish_tasks(self, messages: Sequence[OutgoingTask]) -> None:
        """Publish every message (persistent, with a fresh message id) to its capability's
        quorum queue, all in flight at once, and return when the broker has confirmed them all.
        Waits through a reconnection up to ``publish_timeout``; raises BackendUnavailable."""
        self._check_open()
        if not messages:
            return
        for capability in {m.capability for m in messages}:
            self._check_capability(capability)
        batch = [
            (self.names.task(m.capability), self._message(m.body, m.headers)) for m in messages
        ]
        await self._publish_confirmed(batch)

    def consume_tasks(self, capabilities: Sequence[str], prefetch: int) -> AsyncIterator[Delivery]:
        """Deliveries from the capabilities' queues on one channel, at most ``prefetch`` unacked.

        Closing (or cancelling) the iterator closes its channel: unacked messages go back.
        It does not end when the broker restarts; it waits for the reconnection.
        """
        if not capabilities:
            raise ValueError("consume_tasks needs at least one capability")
        if not 1 <= prefetch <= 65535:
            raise ValueError(f"prefetch must be between 1 and 65535, got {prefetch!r}")
        for capability in capabilities:
            self._check_capability(capability)
        names = list(dict.fromkeys(self.names.task(c) for c in capabilities))
        return self._consume(names, prefetch)

    async def publish_report(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish a report to the reports quorum queue; returns once confirmed."""
        self._check_open()
        await self._publish_confirmed([(self.names.reports, self._message(body, headers))])

    def consume_reports(self) -> AsyncIterator[Delivery]:
        """Reports; several consumers compete for them like task consumers do."""
        return self._consume([self.names.reports], REPORT_PREFETCH)

    async def _consume(self, names: list[str], prefetch: int) -> AsyncIterator[Delivery]:
        if self.closed:
            return
        consumer = _Consumer(self, names, prefetch)
        self._consumers.add(consumer)
        try:
            await consumer.open()
            while (delivery := await consumer.next()) is not None:
                yield delivery
        finally:
            await consumer.close()

    # -- fan-out

    async def publish_event(self, body: bytes) -> None:
        """Send the event to the topic exchange (routing key: its topic), transient and
        unconfirmed: events are best effort and must never slow the scheduler.

        Returns at once: events published in one turn of the event loop leave together, one
        message per topic with the events one per line (header ``x-agentdeck-events``), which
        subscribers split again. The scheduler publishes several events per task; one message
        each would cost it more than the tasks themselves. A failure is logged, not raised."""
        self._check_open()
        match = _TOPIC_RE.search(body[:256])
        key = match.group(1).decode() if match else "event"
        if b"\n" in body:  # cannot share a message (compact JSON never has one)
            await self._send_events(key, [body])
            return
        self._event_batches.setdefault(key, []).append(body)
        if self._event_flush is None:
            self._event_flush = asyncio.get_running_loop().create_task(self._flush_events())

    async def _flush_events(self) -> None:
        await asyncio.sleep(0)  # let the rest of this turn's events join
        try:
            while self._event_batches:
                batches, self._event_batches = self._event_batches, {}
                await self._send_batches(batches)
        finally:
            self._event_flush = None

    def _seal_events(self) -> asyncio.Task[None] | None:
        """Send the events not yet sent without waiting for a subscriber that is about to be
        set up: they were published before it subscribed, so it must not see them."""
        if not self._event_batches:
            return None
        batches, self._event_batches = self._event_batches, {}
        settling = [s.ready for s in self._subscriptions if not s.ready.done()]
        return asyncio.get_running_loop().create_task(self._send_batches(batches, settling))

    async def _send_batches(
        self,
        batches: Mapping[str, list[bytes]],
        settling: Sequence[asyncio.Future[None]] | None = None,
    ) -> None:
        for key, bodies in batches.items():
            for at in range(0, len(bodies), EVENT_BATCH_MAX):
                chunk = bodies[at : at + EVENT_BATCH_MAX]
                try:
                    await self._send_events(key, chunk, settling)
                except AgentdeckError as exc:
                    log.warning("event_publish_failed", count=len(chunk), error=str(exc))

    async def _send_events(
        self,
        key: str,
        bodies: list[bytes],
        settling: Sequence[asyncio.Future[None]] | None = None,
    ) -> None:
        if settling is None:
            await self._settle_subscriptions()
        elif settling:
            await asyncio.wait(settling, timeout=self._publish_timeout)
        headers: dict[str, Any] | None = (
            {EVENT_BATCH_HEADER: len(bodies)} if len(bodies) > 1 else None
        )
        message = aio_pika.Message(
            b"\n".join(bodies), headers=headers, delivery_mode=DeliveryMode.NOT_PERSISTENT
        )

        async def send() -> None:
            assert self._events is not None
            await self._events.publish(message, routing_key=key, mandatory=False)

        await self._retry("publish an event", send)

    def subscribe_events(self) -> AsyncIterator[bytes]:
        """Events published from now on (this bus's publishers wait for the queue to be bound).

        Close the iterator (``aclose``) when done: until then, or until the bus closes, it keeps
        a channel and up to ``subscriber_buffer`` unread messages on the broker."""
        return self._subscribe(self.names.events)

    async def publish_control(self, body: bytes) -> None:
        """Fan the control message out to every agent's queue; returns once confirmed."""
        self._check_open()
        await self._settle_subscriptions()
        message = aio_pika.Message(body, delivery_mode=DeliveryMode.NOT_PERSISTENT)

        async def send() -> None:
            assert self._control is not None
            await self._control.publish(message, routing_key="", mandatory=False)

        await self._retry("publish a control message", send)

    def subscribe_control(self) -> AsyncIterator[bytes]:
        """Control messages published from now on."""
        return self._subscribe(self.names.control)

    def _subscribe(self, exchange: str) -> _Subscription:
        after = self._seal_events() if exchange == self.names.events else None
        subscription = _Subscription(self, exchange, after)
        if self.closed:
            subscription.end()
        else:
            self._subscriptions.add(subscription)
        return subscription

    async def _settle_subscriptions(self) -> None:
        """Wait for subscriptions still being set up, so they see what is published next."""
        pending = [s.ready for s in self._subscriptions if not s.ready.done()]
        if pending:
            await asyncio.wait(pending, timeout=self._publish_timeout)

    # -- dead letters

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first (reads up to DEAD_SCAN_LIMIT of them without taking
        them: each is got unacked, and all go back when the browsing channel closes)."""
        self._check_open()
        async with self._browse_dead() as messages:
            letters = {self._letter_id(m): self._letter(m) for m in messages}
        return list(reversed(letters.values()))[: max(0, limit)]

    async def requeue_dead_letter(self, letter_id: str) -> None:
        """Publish the dead letter to its original queue (confirmed), then remove it from the
        dead queue. Raises NotFound."""
        self._check_open()
        async with self._browse_dead() as messages:
            found = [m for m in messages if self._letter_id(m) == letter_id]
            if not found:
                raise NotFound(f"no dead letter with id {letter_id!r}")
            letter = self._letter(found[-1])
            tasks = self.names.task("")
            own = letter.queue == self.names.reports or (
                letter.queue.startswith(tasks) and letter.queue != tasks
            )
            if not own:
                raise NotFound(
                    f"dead letter {letter_id!r} came from {letter.queue!r}, which is not a "
                    f"queue of prefix {self.config.prefix!r}; it cannot be requeued"
                )
            headers = _own_headers(found[-1].headers)
            message = self._message(letter.body, headers, message_id=letter_id)
            await self._publish_confirmed([(letter.queue, message)])
            try:
                for dead in found:
                    await dead.ack()
            except _RETRYABLE as exc:  # it is back on its queue and still listed: both say so
                log.warning("rabbit_dead_letter_not_removed", id=letter_id, error=str(exc))

    @contextlib.asynccontextmanager
    async def _browse_dead(self) -> AsyncIterator[list[AbstractIncomingMessage]]:
        """The dead queue's messages, oldest first, held unacked on a private channel; closing
        it puts back, in order, those not acked meanwhile."""
        assert self._publisher is not None
        channel = await self._open_channel(self._publisher, confirms=False)
        try:
            try:
                async with asyncio.timeout(self._publish_timeout):
                    queue = await self._declare_queue(channel, self.names.dead)
                    # Get until the queue says empty, not up to declare-ok's count: that count
                    # can lag behind messages a just-closed browser is still putting back.
                    messages = []
                    for _ in range(DEAD_SCAN_LIMIT):
                        message = await queue.get(no_ack=False, fail=False)
                        if message is None:
                            break
                        messages.append(message)
            except _RETRYABLE as exc:
                raise self._unavailable("read the dead letters", exc) from None
            yield messages
        finally:
            await self._close_channel(channel)

    async def _dead_letter(self, queue: str, message: AbstractIncomingMessage, reason: str) -> None:
        """Publish a rejected message to the dead queue with its reason, origin and time."""
        headers: dict[str, Any] = _own_headers(message.headers)
        headers.update({"x-reason": reason, "x-queue": queue, "x-dead-at": self._clock.now()})
        dead = aio_pika.Message(
            message.body,
            headers=headers,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message.message_id or self._digest(message),
        )
        await self._publish_confirmed([(self.names.dead, dead)])

    def _letter(self, message: AbstractIncomingMessage) -> DeadLetter:
        """A dead message as the port shows it, whether agentdeck rejected it (``x-reason``)
        or the broker dead-lettered it (``x-death``, e.g. its delivery limit ran out)."""
        headers = message.headers or {}
        reason, queue, at = (
            headers.get("x-reason"),
            headers.get("x-queue"),
            headers.get("x-dead-at"),
        )
        if reason is None:
            deaths = headers.get("x-death")
            first = deaths[0] if isinstance(deaths, list) and deaths else None
            death: Mapping[str, Any] = first if isinstance(first, Mapping) else {}
            cause = _text(headers.get("x-first-death-reason") or death.get("reason") or "unknown")
            reason = (
                "delivery limit reached: returned to its queue more than "
                f"{self.config.delivery_limit} times without an ack"
                if cause == "delivery_limit"
                else f"dead-lettered by the broker: {cause}"
            )
            queue = headers.get("x-first-death-queue") or death.get("queue")
            at = death.get("time")
        if isinstance(at, datetime):
            at = at.timestamp()
        try:
            when = float(at) if at is not None else 0.0  # type: ignore[arg-type]
        except (TypeError, ValueError):
            when = 0.0
        return DeadLetter(
            id=self._letter_id(message),
            queue=_text(queue),
            body=message.body,
            reason=_text(reason),
            at=when,
        )

    def _letter_id(self, message: AbstractIncomingMessage) -> str:
        return message.message_id or self._digest(message)

    @staticmethod
    def _digest(message: AbstractIncomingMessage) -> str:
        """A stable id for a message published without one (by another client)."""
        return "sha-" + hashlib.sha256(message.body).hexdigest()[:20]

    # -- publishing

    def _message(
        self, body: bytes, headers: Mapping[str, str], *, message_id: str | None = None
    ) -> aio_pika.Message:
        return aio_pika.Message(
            bytes(body),
            headers=dict(headers),
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message_id or os.urandom(12).hex(),
        )

    async def _publish_confirmed(self, batch: Sequence[tuple[str, aio_pika.Message]]) -> None:
        """Publish every (queue, message) through the default exchange, all in flight at once,
        and wait for every confirm together. Those that fail (connection lost, unroutable) are
        published again once the channel is back, until ``publish_timeout``."""
        pending = list(batch)

        async def attempt() -> None:
            nonlocal pending
            assert self._confirmed is not None
            channel = self._confirmed
            for queue in {q for q, _ in pending}:
                await self._ensure_queue(queue)
            exchange = channel.default_exchange
            results = await asyncio.gather(
                *(exchange.publish(m, routing_key=q, mandatory=True) for q, m in pending),
                return_exceptions=True,
            )
            failed = [
                (item, r)
                for item, r in zip(pending, results, strict=True)
                if isinstance(r, BaseException)
            ]
            self.published += len(pending) - len(failed)
            if not failed:
                return
            for (queue, _), error in failed:
                if isinstance(error, aio_pika.exceptions.PublishError):
                    self._task_queues.discard(queue)  # unroutable: declare it again
            pending = [item for item, _ in failed]
            for _, error in failed:
                # A confirm future cancelled by aiormq (its channel closed) is worth a retry.
                if not (_transient(error) or isinstance(error, asyncio.CancelledError)):
                    raise error
            raise _Unconfirmed(f"{len(failed)} of the batch: {self._reason(failed[0][1])}")

        await self._retry(f"publish {len(batch)} message(s)", attempt)

    async def _ensure_queue(self, queue: str) -> None:
        """Declare a task queue once per bus before publishing to it, so messages wait for an
        agent that has not started yet instead of being dropped."""
        if queue in self._task_queues or not queue.startswith(self.names.task("")):
            return
        assert self._confirmed is not None
        await self._declare_queue(self._confirmed, queue)
        self._task_queues.add(queue)

    async def _retry(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action``; after a connection error, try again (the robust connection is
        reconnecting meanwhile) with backoff, for at most ``publish_timeout`` seconds. Raises
        BackendUnavailable, or ConfigError for what retrying cannot fix."""
        try:
            async with asyncio.timeout(self._publish_timeout):
                try:
                    # The first try without the retry machinery: it is the hot path (every
                    # task and report goes through here) and nearly always succeeds.
                    return await action()
                except Exception as exc:
                    if not _transient(exc):
                        raise
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_transient),
                    wait=wait_exponential(multiplier=0.05, max=1.0),
                    reraise=True,
                ):
                    with attempt:
                        return await action()
        except _PERMANENT as exc:
            if isinstance(exc, ChannelPreconditionFailed):
                raise self._mismatch(exc) from None
            raise ConfigError(
                f"RabbitMQ at {self.config.where} refused to {what}: {self._reason(exc)}"
            ) from None
        except _RETRY_PUBLISH as exc:
            if self.closed:
                raise BackendUnavailable("the RabbitMQ bus is closed") from None
            raise self._unavailable(what, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises

    # -- helpers

    def _check_open(self) -> None:
        if self.closed:
            raise BackendUnavailable("the RabbitMQ bus is closed")
        if self._confirmed is None:
            raise BackendUnavailable("the RabbitMQ bus is not started")

    def _check_capability(self, capability: str) -> None:
        if not capability or len(self.names.task(capability).encode()) > 255:
            raise ValueError(
                f"capability {capability!r} cannot name a queue: it must be non-empty and the "
                f"queue name {self.names.task('')}<capability> at most 255 bytes"
            )

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"RabbitMQ at {self.config.where}: could not {what}: {self._reason(exc)}"
        )

    def _mismatch(self, exc: BaseException) -> ConfigError:
        return ConfigError(
            f"RabbitMQ at {self.config.where}: a queue or exchange exists with other settings "
            f"({self._reason(exc)}); delete it or use its settings (prefix, delivery_limit)"
        )

    def _reason(self, exc: BaseException) -> str:
        """An exception as one line, with the password (if any) blanked."""
        text = (
            f"{type(exc).__name__}: {exc}".strip().rstrip(":") if str(exc) else type(exc).__name__
        )
        password = urlsplit(self.config.url).password
        if password:
            text = text.replace(password, "***").replace(unquote(password), "***")
        return " ".join(text.split())

    def __repr__(self) -> str:
        return (
            f"<RabbitBus {self.config.where} prefix={self.config.prefix}"
            f" published={self.published} consumers={len(self._consumers)}"
            f" subscribers={len(self._subscriptions)} closed={self.closed}>"
        )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
