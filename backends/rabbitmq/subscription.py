"""Event and control subscribers: each owns an exclusive, length-capped queue on its exchange."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any, Self

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel

from agentdeck.backends.rabbitmq.consumer import stale
from agentdeck.backends.rabbitmq.failures import RETRYABLE
from agentdeck.core.errors import AgentdeckError

if TYPE_CHECKING:
    from agentdeck.backends.rabbitmq.bus import RabbitBus


#: Messages an event/control subscriber's queue keeps, by default, before dropping its oldest.
SUBSCRIBER_BUFFER = 1000
#: Unacked messages in flight to one subscriber; the rest wait (bounded) in its queue.
SUBSCRIBER_PREFETCH = 100
#: Header of an events message that carries several events, one per line (see publish_event).
EVENT_BATCH_HEADER = "x-agentdeck-events"


class Subscription:
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
        self.ready.add_done_callback(retrieve)

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
        if not stale(message):
            with contextlib.suppress(*RETRYABLE):
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


def retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background task's exception as seen (its owner reports it when used)."""
    if not task.cancelled():
        task.exception()
