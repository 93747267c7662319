"""Dead letters: reading them back as the port shows them, and building the ones we reject."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, DeliveryMode

from agentdeck.backends.rabbitmq.consumer import own_headers
from agentdeck.backends.rabbitmq.failures import RETRYABLE
from agentdeck.core.errors import NotFound
from agentdeck.core.ports import DeadLetter

if TYPE_CHECKING:
    from agentdeck.backends.rabbitmq.bus import RabbitBus

log = structlog.get_logger(__name__)


#: Most dead letters one listing reads (each is a basic.get round trip).
DEAD_SCAN_LIMIT = 10_000


async def listing(bus: RabbitBus, limit: int) -> list[DeadLetter]:
    """The newest dead letters first (see :meth:`RabbitBus.dead_letters`)."""
    async with browse(bus) as messages:
        letters = {letter_id(m): letter(m, bus.config.delivery_limit) for m in messages}
    return list(reversed(letters.values()))[: max(0, limit)]


async def requeue(bus: RabbitBus, wanted: str) -> None:
    """Publish the dead letter ``wanted`` to its original queue (confirmed), then remove it
    from the dead queue. Raises NotFound, also for a letter from another prefix's queue."""
    async with browse(bus) as messages:
        found = [m for m in messages if letter_id(m) == wanted]
        if not found:
            raise NotFound(f"no dead letter with id {wanted!r}")
        dead_letter = letter(found[-1], bus.config.delivery_limit)
        tasks = bus.names.task("")
        own = dead_letter.queue == bus.names.reports or (
            dead_letter.queue.startswith(tasks) and dead_letter.queue != tasks
        )
        if not own:
            raise NotFound(
                f"dead letter {wanted!r} came from {dead_letter.queue!r}, which is not a "
                f"queue of prefix {bus.config.prefix!r}; it cannot be requeued"
            )
        headers = own_headers(found[-1].headers)
        message = bus._message(dead_letter.body, headers, message_id=wanted)
        await bus._publish_confirmed([(dead_letter.queue, message)])
        try:
            for dead in found:
                await dead.ack()
        except RETRYABLE as exc:  # it is back on its queue and still listed: both say so
            log.warning("rabbit_dead_letter_not_removed", id=wanted, error=str(exc))


@contextlib.asynccontextmanager
async def browse(bus: RabbitBus) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """The dead queue's messages, oldest first, held unacked on a private channel; closing
    it puts back, in order, those not acked meanwhile."""
    assert bus._publisher is not None
    channel = await bus._open_channel(bus._publisher, confirms=False)
    try:
        try:
            async with asyncio.timeout(bus._publish_timeout):
                queue = await bus._declare_queue(channel, bus.names.dead)
                # Get until the queue says empty, not up to declare-ok's count: that count
                # can lag behind messages a just-closed browser is still putting back.
                messages = []
                for _ in range(DEAD_SCAN_LIMIT):
                    message = await queue.get(no_ack=False, fail=False)
                    if message is None:
                        break
                    messages.append(message)
        except RETRYABLE as exc:
            raise bus._unavailable("read the dead letters", exc) from None
        yield messages
    finally:
        await bus._close_channel(channel)


def rejected(
    message: AbstractIncomingMessage, queue: str, reason: str, at: float
) -> aio_pika.Message:
    """The dead queue's copy of a message rejected from ``queue``: its body and agentdeck
    headers, with its reason, origin and time (persistent; same message id)."""
    headers: dict[str, Any] = own_headers(message.headers)
    headers.update({"x-reason": reason, "x-queue": queue, "x-dead-at": at})
    return aio_pika.Message(
        message.body,
        headers=headers,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message.message_id or digest(message),
    )


def letter(message: AbstractIncomingMessage, delivery_limit: int) -> DeadLetter:
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
        cause = as_text(headers.get("x-first-death-reason") or death.get("reason") or "unknown")
        reason = (
            "delivery limit reached: returned to its queue more than "
            f"{delivery_limit} times without an ack"
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
        id=letter_id(message),
        queue=as_text(queue),
        body=message.body,
        reason=as_text(reason),
        at=when,
    )


def letter_id(message: AbstractIncomingMessage) -> str:
    """A dead letter's id: its message id, stable across listings."""
    return message.message_id or digest(message)


def digest(message: AbstractIncomingMessage) -> str:
    """A stable id for a message published without one (by another client)."""
    return "sha-" + hashlib.sha256(message.body).hexdigest()[:20]


def as_text(value: Any) -> str:
    """A header value as text (bytes decoded, None as empty)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
