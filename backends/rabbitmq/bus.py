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
``publish_timeout``) and consumer iterators keep waiting instead of ending."""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import aio_pika
import structlog
from aio_pika import ExchangeType
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
    DeliveryMode,
)
from aiormq.exceptions import ChannelPreconditionFailed
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    wait_exponential,
)

from agentdeck.backends.rabbitmq import dead_letters as dead_queue
from agentdeck.backends.rabbitmq import topology
from agentdeck.backends.rabbitmq.consumer import Consumer
from agentdeck.backends.rabbitmq.depth import QueueDepths
from agentdeck.backends.rabbitmq.events import EventBatcher, batch_message, topic_of
from agentdeck.backends.rabbitmq.failures import (
    PERMANENT,
    RETRY_PUBLISH,
    RETRYABLE,
    Unconfirmed,
    describe,
    nacked,
    transient,
)
from agentdeck.backends.rabbitmq.names import RabbitNames
from agentdeck.backends.rabbitmq.subscription import (
    SUBSCRIBER_BUFFER,
    Subscription,
)
from agentdeck.backends.rabbitmq.transport import (
    Connection,
    broker_states,
    close_channel,
    connect,
    retire,
    role_url,
)
from agentdeck.backends.rabbitmq.url import RabbitConfig, parse_url
from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError, BackendUnavailable, ConfigError
from agentdeck.core.metrics import backend_reconnected
from agentdeck.core.ports import DeadLetter, Delivery, OutgoingTask

log = structlog.get_logger(__name__)


T = TypeVar("T")

#: How many reports the scheduler may hold unacked; it acks them in batches after each write.
REPORT_PREFETCH = 256


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
        self._publisher: Connection | None = None
        self._consumer: Connection | None = None
        self._confirmed: AbstractRobustChannel | None = None
        self._unconfirmed: AbstractRobustChannel | None = None
        self._events: AbstractRobustExchange | None = None
        self._control: AbstractRobustExchange | None = None
        self._renewing = asyncio.Lock()
        self._task_queues: set[str] = set()
        """Task queues this bus has declared on its publishing channel."""
        self.declared: set[str] = set()
        """Every queue name this bus declared (see :meth:`delete_topology`)."""
        self.passive = False
        """True once the broker refused this bus's user "configure" on the shared topology
        (a viewer's or an operator's user): from then on it only checks that the shared
        exchanges and queues exist (passive declares, which need no permission)."""
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        self._subscriptions: set[Subscription] = set()
        self._events_out = EventBatcher(self._send_events)
        self._depths = QueueDepths(self)
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
        topology, or only check it exists when the user may not configure it (see
        :func:`topology.declare`). Raises BackendUnavailable naming host:port/vhost, or
        ConfigError when a queue exists with other arguments or, for such a user, is missing."""
        if self.closed:
            raise BackendUnavailable("the RabbitMQ bus is closed")
        if self._publisher is not None:
            return
        try:
            self._publisher = await self._connect("publisher")
            self._consumer = await self._connect("consumer")
            self._confirmed = await self._open_channel(self._publisher, confirms=True)
            self._unconfirmed = await self._open_channel(self._publisher, confirms=False)
            await self._retry("declare the topology", lambda: topology.declare(self))
        except AgentdeckError:
            await self.close()
            raise
        log.info("rabbit_bus_started", where=self.config.where, prefix=self.config.prefix)

    async def close(self) -> None:
        """End every consumer and subscriber, close their channels (unacked messages go back
        to their queues) and disconnect."""
        if self.closed:
            return
        if self._events_out.flushing is not None:  # events published just before still go
            with contextlib.suppress(Exception):
                await self._events_out.flushing
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

    async def _connect(self, role: str) -> Connection:
        """A robust connection for ``role`` after at most ``connect_attempts`` tries; counts
        each reconnection in the metrics. Raises BackendUnavailable naming host:port/vhost."""
        try:
            connection = await connect(
                role_url(self.config.url, role),
                brokers=self.config.hosts,
                attempts=self._connect_attempts,
                timeout=self._connect_timeout,
                reconnect_interval=self.config.reconnect_interval,
            )
        except RETRYABLE as exc:
            raise BackendUnavailable(
                f"RabbitMQ at {self.config.where} is unreachable after "
                f"{self._connect_attempts} attempt(s): {self._reason(exc)}"
            ) from None
        # aio-pika calls this after each reconnection (not the first connect).
        connection.reconnect_callbacks.add(lambda *_: backend_reconnected("rabbitmq"))
        return connection

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
                    retire(channel)  # or the next reconnection would open it after all
                    raise
            return channel

        return await self._retry("open a channel", open_it)

    async def _close_channel(self, channel: AbstractRobustChannel | None) -> None:
        """Close a channel for good (see :func:`transport.close_channel`)."""
        await close_channel(channel, self._connect_timeout)

    async def _declare_queue(
        self, channel: AbstractRobustChannel, name: str
    ) -> AbstractRobustQueue:
        """Declare one of the durable quorum queues (idempotent; robust: re-declared when the
        channel is restored). When :attr:`passive`, the shared ones (dead letters, reports)
        are only checked to exist; task queues are always declared (only nodes publish)."""
        arguments = self.names.queue_arguments(name, self.config.delivery_limit)
        passive = self.passive and name in (self.names.dead, self.names.reports)
        queue = await channel.declare_queue(
            name, durable=True, arguments=arguments, passive=passive
        )
        self.declared.add(name)
        return queue

    async def delete_topology(self) -> None:
        """Delete every queue this bus declared and the prefix's exchanges, messages and all.

        For tests and for retiring a prefix; uses its own short connection, so it works before
        or after :meth:`close`."""
        queues = sorted(self.declared | {self.names.dead, self.names.reports})
        exchanges = [self.names.events, self.names.control, self.names.dlx]
        connection = await connect(
            self.config.url,
            brokers=self.config.hosts,
            attempts=1,
            timeout=self._connect_timeout,
            reconnect_interval=self.config.reconnect_interval,
        )
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

    async def queued(self, capability: str) -> int:
        """The messages waiting in ``capability``'s task queue (:class:`depth.QueueDepths`)."""
        return await self._depths.ready(capability)

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
        consumer = Consumer(self, names, prefetch)
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
        topic = topic_of(body)
        if b"\n" in body:  # cannot share a message (compact JSON never has one)
            await self._send_events(topic, [body])
            return
        self._events_out.add(topic, body)

    async def _send_events(
        self,
        topic: str,
        bodies: list[bytes],
        settling: Sequence[asyncio.Future[None]] | None = None,
    ) -> None:
        if settling is None:
            await self._settle_subscriptions()
        elif settling:
            await asyncio.wait(settling, timeout=self._publish_timeout)
        message = batch_message(bodies)

        async def send() -> None:
            assert self._events is not None
            await self._events.publish(message, routing_key=topic, mandatory=False)

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
            assert self._control is not None and self._confirmed is not None
            channel = self._confirmed
            try:
                await self._control.publish(message, routing_key="", mandatory=False)
            except Exception as exc:
                if nacked(exc):
                    await self._renew_confirmed(channel)
                raise

        await self._retry("publish a control message", send)

    def subscribe_control(self) -> AsyncIterator[bytes]:
        """Control messages published from now on."""
        return self._subscribe(self.names.control)

    def _subscribe(self, exchange: str) -> Subscription:
        after = None
        if exchange == self.names.events:
            after = self._events_out.seal(
                [s.ready for s in self._subscriptions if not s.ready.done()]
            )
        subscription = Subscription(self, exchange, after)
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
        return await dead_queue.listing(self, limit)

    async def requeue_dead_letter(self, letter_id: str) -> None:
        """Publish the dead letter to its original queue (confirmed), then remove it from the
        dead queue. Raises NotFound."""
        self._check_open()
        await dead_queue.requeue(self, letter_id)

    async def _dead_letter(self, queue: str, message: AbstractIncomingMessage, reason: str) -> None:
        """Publish a rejected message to the dead queue with its reason, origin and time."""
        dead = dead_queue.rejected(message, queue, reason, self._clock.now())
        await self._publish_confirmed([(self.names.dead, dead)])

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
            if any(nacked(error) for _, error in failed):
                await self._renew_confirmed(channel)
            for _, error in failed:
                # A confirm future cancelled by aiormq (its channel closed) is worth a retry.
                if not (transient(error) or isinstance(error, asyncio.CancelledError)):
                    raise error
            raise Unconfirmed(f"{len(failed)} of the batch: {self._reason(failed[0][1])}")

        await self._retry(f"publish {len(batch)} message(s)", attempt)

    async def _renew_confirmed(self, stale: AbstractRobustChannel) -> None:
        """Replace the confirmed publishing channel ``stale`` (unless another publish did).

        RabbitMQ 3.10 nacks, for good, the publishes to a quorum queue from a channel that
        began publishing to it while the queue had no leader (the moment after its leader's
        node died or was cut off, when every client reconnects at once); a channel opened
        later reaches the new leader. Without this, an agent's reports failed for as long as
        it lived (found by tests/e2e/test_cluster_faults.py)."""
        async with self._renewing:
            if self._confirmed is not stale or self._publisher is None:
                return
            log.warning("rabbit_channel_renewed", reason="publishes nacked")
            fresh = await self._open_channel(self._publisher, confirms=True)
            self._control = await fresh.declare_exchange(
                self.names.control, ExchangeType.FANOUT, durable=True, passive=self.passive
            )
            self._confirmed = fresh
        await self._close_channel(stale)

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
                    if not transient(exc):
                        raise
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(transient),
                    wait=wait_exponential(multiplier=0.05, max=1.0),
                    reraise=True,
                ):
                    with attempt:
                        return await action()
        except PERMANENT as exc:
            if isinstance(exc, ChannelPreconditionFailed):
                raise self._mismatch(exc) from None
            raise ConfigError(
                f"RabbitMQ at {self.config.where} refused to {what}: {self._reason(exc)}"
            ) from None
        except RETRY_PUBLISH as exc:
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
        return describe(exc, urlsplit(self.config.url).password)

    @property
    def brokers(self) -> dict[str, str]:
        """The broker (``host:port``) each open connection, ``publisher`` and ``consumer``,
        last reached: with several brokers, where this bus is connected now."""
        connections = {"publisher": self._publisher, "consumer": self._consumer}
        return {
            role: f"{c.ring.current[0]}:{c.ring.current[1]}"
            for role, c in connections.items()
            if c is not None and c.ring.current is not None
        }

    @property
    def broker_states(self) -> dict[str, str]:
        """Every broker of the URL (``host:port``) as this bus's connections last saw it:
        ``connected``, ``lost``, ``down`` or ``?`` (``transport.broker_states``; no I/O)."""
        return broker_states(self.config.hosts, [self._publisher, self._consumer])

    def __repr__(self) -> str:
        return (
            f"<RabbitBus {self.config.where} prefix={self.config.prefix}"
            f" published={self.published} consumers={len(self._consumers)}"
            f" subscribers={len(self._subscriptions)} closed={self.closed}>"
        )
