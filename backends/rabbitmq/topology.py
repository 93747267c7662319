"""The shared topology every bus needs at start: declared by a user that may configure it,
only checked to exist by one that may not (a viewer's or an operator's user)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from aio_pika.abc import ExchangeType
from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity

from agentdeck.core.errors import ConfigError

if TYPE_CHECKING:
    from agentdeck.backends.rabbitmq.bus import RabbitBus

log = structlog.get_logger(__name__)


async def declare(bus: RabbitBus) -> None:
    """The exchanges and queues every process needs, whatever its role.

    A user with "configure" on them (a node) declares them: created if missing, checked
    against their settings. A user without it (a viewer or an operator: their permissions
    leave configure out on purpose, as it would also let them delete these queues) is refused;
    the broker closes that channel, so the bus opens fresh publishing channels, sets
    :attr:`RabbitBus.passive` and only checks that they exist (a passive declare needs no
    permission). Trying first needs no setting and leaves the decision to the broker's
    permissions alone; it costs such a user one refused declare per start, which the broker
    logs. Raises ConfigError when a passive check finds something missing (no node has
    declared this prefix yet)."""
    if not bus.passive:
        try:
            await declare_shared(bus)
            return
        except ChannelAccessRefused as exc:
            log.info(
                "rabbit_topology_checked_passively",
                where=bus.config.where,
                prefix=bus.config.prefix,
                reason=bus._reason(exc),
            )
            bus.passive = True
        await reopen_publishing_channels(bus)
    try:
        await declare_shared(bus)
    except ChannelNotFoundEntity as exc:
        raise ConfigError(
            f"RabbitMQ at {bus.config.where}: the queues and exchanges of prefix "
            f"{bus.config.prefix!r} do not exist ({bus._reason(exc)}) and this user may not "
            "create them; start a node (agentdeck --daemon) with this prefix first, or check "
            "the prefix"
        ) from None


async def declare_shared(bus: RabbitBus) -> None:
    """Declare (or, when :attr:`RabbitBus.passive`, check) the dead-letter exchange and queue,
    the reports queue and the control and events exchanges, keeping the two exchanges the bus
    publishes to."""
    assert bus._confirmed is not None
    assert bus._unconfirmed is not None
    names, channel, passive = bus.names, bus._confirmed, bus.passive
    dlx = await channel.declare_exchange(
        names.dlx, ExchangeType.FANOUT, durable=True, passive=passive
    )
    dead = await bus._declare_queue(channel, names.dead)
    if not passive:  # binding needs "write" on the dead queue; a node has bound it
        await dead.bind(dlx)
    await bus._declare_queue(channel, names.reports)
    bus._control = await channel.declare_exchange(
        names.control, ExchangeType.FANOUT, durable=True, passive=passive
    )
    # Events are best effort (the Store has the truth): no confirm round trip for them.
    bus._events = await bus._unconfirmed.declare_exchange(
        names.events, ExchangeType.TOPIC, durable=True, passive=passive
    )


async def reopen_publishing_channels(bus: RabbitBus) -> None:
    """Replace both publishing channels with new ones: a refused declare closed one of them,
    and a robust channel would re-declare, after every reconnection, what was declared on it
    before the refusal."""
    assert bus._publisher is not None
    old = (bus._confirmed, bus._unconfirmed)
    bus._confirmed = bus._unconfirmed = None
    for channel in old:
        await bus._close_channel(channel)
    bus._confirmed = await bus._open_channel(bus._publisher, confirms=True)
    bus._unconfirmed = await bus._open_channel(bus._publisher, confirms=False)
