"""Events leave in batches: those published in one turn of the event loop go as one message per
topic, the events one per line (header ``x-agentdeck-events``), and subscribers split them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import DeliveryMode

from agentdeck.backends.rabbitmq.subscription import EVENT_BATCH_HEADER
from agentdeck.core.errors import AgentdeckError

log = structlog.get_logger(__name__)

#: The topic of an encoded core.messages.Event: the first keys of its JSON (``v``, ``type``,
#: ``topic``), so a look at its start is enough and the body is never parsed.
_TOPIC_RE = re.compile(rb'"topic"\s*:\s*"([A-Za-z0-9_-]{1,64})"')
#: The most events in one message. A subscriber keeps at most ``subscriber_buffer`` events of a
#: message it splits (the oldest go first, as in its queue), so this stays under the default.
EVENT_BATCH_MAX = 256

#: Sends ``bodies`` as one message with routing key ``topic``, after ``settling`` (the set-up
#: of subscriptions it must reach; None: every subscription being set up now).
Send = Callable[[str, list[bytes], Sequence[asyncio.Future[None]] | None], Awaitable[None]]


def topic_of(body: bytes) -> str:
    """The routing key of an encoded event: its topic, or ``event`` when it has none."""
    match = _TOPIC_RE.search(body[:256])
    return match.group(1).decode() if match else "event"


def batch_message(bodies: list[bytes]) -> aio_pika.Message:
    """One transient message carrying ``bodies`` (the batch header when more than one)."""
    headers: dict[str, Any] | None = {EVENT_BATCH_HEADER: len(bodies)} if len(bodies) > 1 else None
    return aio_pika.Message(
        b"\n".join(bodies), headers=headers, delivery_mode=DeliveryMode.NOT_PERSISTENT
    )


class EventBatcher:
    """The events published in this turn of the event loop, by topic, sent at its end.

    A failed send is logged (``event_publish_failed``), never raised: events are best effort.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._batches: dict[str, list[bytes]] = {}
        self.flushing: asyncio.Task[None] | None = None
        """The task sending this turn's events, while there is one."""

    def add(self, topic: str, body: bytes) -> None:
        """Queue ``body`` for the end of this turn."""
        self._batches.setdefault(topic, []).append(body)
        if self.flushing is None:
            self.flushing = asyncio.get_running_loop().create_task(self._flush())

    def seal(self, settling: Sequence[asyncio.Future[None]]) -> asyncio.Task[None] | None:
        """Send the events not yet sent, waiting only for ``settling`` and not for a
        subscriber about to be set up: they were published before it subscribed, so it must
        not see them. The task sending them, if any."""
        if not self._batches:
            return None
        batches, self._batches = self._batches, {}
        return asyncio.get_running_loop().create_task(self._send_batches(batches, settling))

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the rest of this turn's events join
        try:
            while self._batches:
                batches, self._batches = self._batches, {}
                await self._send_batches(batches)
        finally:
            self.flushing = None

    async def _send_batches(
        self,
        batches: Mapping[str, list[bytes]],
        settling: Sequence[asyncio.Future[None]] | None = None,
    ) -> None:
        for topic, bodies in batches.items():
            for at in range(0, len(bodies), EVENT_BATCH_MAX):
                chunk = bodies[at : at + EVENT_BATCH_MAX]
                try:
                    await self._send(topic, chunk, settling)
                except AgentdeckError as exc:
                    log.warning("event_publish_failed", count=len(chunk), error=str(exc))
