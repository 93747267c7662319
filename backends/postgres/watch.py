"""LISTEN/NOTIFY for :class:`core.ports.StoreWatch`: wake the scheduler when work arrives.

``create_workflow`` runs ``pg_notify('agentdeck_workflows', <workflow id>)`` and
``add_command`` runs ``pg_notify('agentdeck_commands', <command id>)`` inside their
transactions, so PostgreSQL delivers the notification only once the write is committed and
visible. Each :func:`listen` iterator holds one connection of its own (outside the pool: a
pooled connection is reset, and stops listening, when released) and yields ``workflows`` or
``commands`` per notification.

A notification sent while the connection is down is lost, so after reconnecting the iterator
yields every channel name once: "look now", which is always safe, since a wake-up only makes
the scheduler read the store. The scheduler keeps polling slowly as well, which also covers
a connection that died without the client noticing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Final

import asyncpg
import structlog

from agentdeck.core.errors import BackendUnavailable

__all__ = ["CHANNELS", "CLOSED", "COMMANDS_CHANNEL", "WORKFLOWS_CHANNEL", "listen"]

log = structlog.get_logger(__name__)

WORKFLOWS_CHANNEL: Final = "agentdeck_workflows"
COMMANDS_CHANNEL: Final = "agentdeck_commands"
#: PostgreSQL channel -> the name :meth:`core.ports.StoreWatch.changes` yields.
CHANNELS: Final = {WORKFLOWS_CHANNEL: "workflows", COMMANDS_CHANNEL: "commands"}

CLOSED: Final = "\x00closed"
"""Put in a listener's queue by the store when it closes: the iterator ends."""
_LOST: Final = "\x00lost"

#: Waits between reconnection attempts: doubling from the first to the last, then the last.
RECONNECT_WAIT = (0.1, 5.0)

Connect = Callable[[], Awaitable[asyncpg.Connection]]
"""Opens a new connection; raises BackendUnavailable (with a message fit to show) if it
cannot."""


async def _subscribe(connect: Connect, queue: asyncio.Queue[str], where: str) -> asyncpg.Connection:
    """A new connection listening on every channel, feeding ``queue``. Raises
    BackendUnavailable."""

    def on_notify(_conn: object, _pid: int, channel: str, _payload: str) -> None:
        queue.put_nowait(CHANNELS[channel])

    def on_lost(_conn: object) -> None:
        queue.put_nowait(_LOST)

    conn = await connect()
    try:
        for channel in CHANNELS:
            await conn.add_listener(channel, on_notify)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        conn.terminate()
        raise BackendUnavailable(f"cannot listen on PostgreSQL at {where}: {exc}") from exc
    conn.add_termination_listener(on_lost)
    return conn


async def _resubscribe(
    connect: Connect, queue: asyncio.Queue[str], where: str, closed: asyncio.Event
) -> asyncpg.Connection | None:
    """Reconnect until it works (None if the store closes first), backing off."""
    wait, longest = RECONNECT_WAIT
    while not closed.is_set():
        try:
            return await _subscribe(connect, queue, where)
        except BackendUnavailable as exc:
            log.warning("store_watch_reconnect_failed", where=where, error=str(exc), retry_in=wait)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(closed.wait(), wait)
        wait = min(wait * 2, longest)
    return None


async def listen(
    connect: Connect, queue: asyncio.Queue[str], where: str, closed: asyncio.Event
) -> AsyncGenerator[str, None]:
    """Yield a channel name per notification until :data:`CLOSED` arrives in ``queue``.

    Listens before returning the first item, so nothing committed after the first
    ``__anext__`` starts waiting is missed. Raises BackendUnavailable if the first connection
    fails; later losses are retried (see the module docstring).
    """
    conn: asyncpg.Connection | None = await _subscribe(connect, queue, where)
    try:
        while True:
            item = await queue.get()
            if item == CLOSED:
                return
            if item != _LOST:
                yield item
                continue
            if conn is not None and not conn.is_closed():
                continue  # a stale signal from a connection we replaced
            log.warning("store_watch_connection_lost", where=where)
            conn = await _resubscribe(connect, queue, where, closed)
            if conn is None:
                return
            for name in CHANNELS.values():
                yield name
    finally:
        if conn is not None:
            conn.terminate()
