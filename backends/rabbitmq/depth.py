"""How many messages wait in a task queue: a passive declare's ``message_count``.

The scheduler asks before it fails an overdue dispatched attempt as lost (a message still in
its queue is not lost). The declares go on a channel of their own: a passive declare of a
queue that does not exist makes the broker close its channel, which must not be a publishing
one. A passive declare needs no permission, and creates nothing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractRobustChannel
from aiormq.exceptions import ChannelNotFoundEntity

from agentdeck.backends.rabbitmq.failures import PERMANENT, RETRYABLE
from agentdeck.core.errors import AgentdeckError, BackendUnavailable

if TYPE_CHECKING:
    from agentdeck.backends.rabbitmq.bus import RabbitBus


#: What a question may fail with: the broker gone or slow, the channel refused, the bus closed.
FAILURES: tuple[type[BaseException], ...] = (*RETRYABLE, *PERMANENT, AgentdeckError)


class QueueDepths:
    """Counts the ready messages of task queues for one :class:`RabbitBus`, one round trip a
    question (the scheduler asks once per capability per round, so nothing is cached)."""

    def __init__(self, bus: RabbitBus) -> None:
        self._bus = bus
        self._channel: AbstractRobustChannel | None = None
        self._lock = asyncio.Lock()

    async def ready(self, capability: str) -> int:
        """The messages in ``capability``'s task queue not handed to a consumer yet (RabbitMQ's
        ``message_count``: unacked ones in an agent's prefetch are not counted); 0 when the
        queue does not exist. One try, bounded by the bus's ``connect_timeout``; raises
        BackendUnavailable naming the queue and why."""
        bus = self._bus
        bus._check_open()
        bus._check_capability(capability)
        name = bus.names.task(capability)
        async with self._lock:  # one channel, one declare at a time on it
            try:
                async with asyncio.timeout(bus._connect_timeout):
                    if self._channel is None or self._channel.is_closed:
                        self._channel = await self._open()
                    queue = await self._channel.declare_queue(name, passive=True, robust=False)
            except ChannelNotFoundEntity:
                await self._drop()  # the broker closed the channel
                return 0
            except FAILURES as exc:
                await self._drop()
                raise BackendUnavailable(
                    f"RabbitMQ at {bus.config.where}: could not count the messages in "
                    f"{name!r}: {bus._reason(exc)}"
                ) from None
        result = queue.declaration_result
        return int(result.message_count or 0)

    async def _open(self) -> AbstractRobustChannel:
        publisher = self._bus._publisher
        if publisher is None:
            raise BackendUnavailable("the RabbitMQ bus is not started")
        return await self._bus._open_channel(publisher, confirms=False)

    async def _drop(self) -> None:
        """Close the channel for good; the next question opens a fresh one."""
        channel, self._channel = self._channel, None
        await self._bus._close_channel(channel)
