"""A read started ahead of its need: a cache's refresh that runs beside the path.

The scheduler's caches (its lease, the holds, the breakers) are each good for a period and
were refreshed on the path when it ran out: the round that found one due waited one Registry
round trip or more, which is the tail of a lone task's latency (docs/performance.md). With
:class:`Ahead`, the cache's refresh starts once part of the period has gone by, at a moment
its caller has nothing else to do (the scheduler between rounds: started in the middle of a
round, the refresh's I/O would share the event loop with that round's), the owner goes on
with what it holds (still within its period), and takes the result at a later call, once the
refresh is done. What the owner's period promises does not change: a result counts from
the moment its refresh *started* (nothing newer than that is claimed), and a cache past its
period still refreshes on the path, as before, should the early one not have finished.

Only the owner's own calls take a result (never a callback), so a result is installed between
two of its steps, never in the middle of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import structlog

from agentdeck.core.errors import AgentdeckError

log = structlog.get_logger(__name__)

T = TypeVar("T")

EARLY = 0.75
"""The part of a period after which its refresh may start ahead: the refresh then has a
quarter of the period to finish before the path would wait for it (at least 0.1 s with the
scheduler's defaults, against a Registry round trip of a millisecond or so), and a cache
refreshed only ahead is read at most a third more often than before."""


class Ahead(Generic[T]):
    """At most one early refresh in flight; ``name`` says in logs which cache it serves."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Future[T] | None = None
        self._started = 0.0

    @property
    def running(self) -> bool:
        """True while a refresh was started and its result not taken yet."""
        return self._task is not None

    def start(self, read: Callable[[], Coroutine[Any, Any, T]], now: float) -> None:
        """Start ``read()`` (the refresh as of ``now``), unless one is already in flight. Its
        task is named ``ahead-<name>`` (traces tell it from the path by that)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(read(), name=f"ahead-{self.name}")
            self._started = now

    def take(self) -> tuple[float, T] | None:
        """``(when the refresh started, its result)`` once it is done; None while it runs, when
        none was started, or when it failed (logged: the owner's period, then its own refresh
        on the path, decide what happens next)."""
        task = self._task
        if task is None or not task.done():
            return None
        self._task = None
        if task.cancelled():
            return None
        error = task.exception()
        if error is not None:
            if not isinstance(error, AgentdeckError):
                raise error
            log.warning("early_refresh_failed", cache=self.name, error=str(error))
            return None
        return self._started, task.result()

    async def wait(self) -> tuple[float, T] | None:
        """The refresh in flight once it is done (as :meth:`take`); None if none runs."""
        if self._task is not None:
            await asyncio.wait({self._task})
        return self.take()

    def cancel(self) -> None:
        """Drop the refresh in flight, if any (its result will not be taken)."""
        task, self._task = self._task, None
        if task is not None:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: asyncio would log it as never retrieved
            task.cancel()
