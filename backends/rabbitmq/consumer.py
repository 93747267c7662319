"""Task and report consumers: :class:`Consumer` (one channel, manual acks, a bounded number of
unsettled deliveries) and the :class:`RabbitDelivery` it hands out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustQueue,
)

from agentdeck.backends.rabbitmq.failures import RETRYABLE
from agentdeck.core.errors import AgentdeckError

if TYPE_CHECKING:
    from agentdeck.backends.rabbitmq.bus import RabbitBus

log = structlog.get_logger(__name__)


def text_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """Scalar headers as text (the port's headers are strings); lists and tables dropped."""
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            out[key] = value.decode("utf-8", "replace")
        elif isinstance(value, str | int | float | bool):
            out[key] = str(value)
    return out


def own_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The headers agentdeck set, without the ``x-`` ones the broker and dead-lettering add."""
    return {k: v for k, v in text_headers(headers).items() if not k.startswith("x-")}


def stale(message: AbstractIncomingMessage) -> bool:
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

    def __init__(self, consumer: Consumer, queue: str, message: AbstractIncomingMessage):
        self._consumer, self._message = consumer, message
        self.body: bytes = message.body
        self.headers: Mapping[str, str] = text_headers(message.headers)
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
        if stale(self._message):
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
        except RETRYABLE as exc:
            # The delivering channel died: the broker has requeued the message already.
            log.warning("rabbit_settle_lost", what=what, queue=self.queue, error=type(exc).__name__)

    def __repr__(self) -> str:
        return (
            f"<RabbitDelivery queue={self.queue} redelivered={self.redelivered}"
            f" settled={self.settled}>"
        )


class Consumer:
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
                    if stale(message):
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
                    with contextlib.suppress(*RETRYABLE):
                        await self._queues[name].cancel(tag)  # forget it for restores too
                    await self._consume(name)
        except RETRYABLE as exc:  # reconnecting: the robust channel restores consumers
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
