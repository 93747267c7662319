"""The runtime: backends started, the scheduler leading or standing by, services running.

The composition root (``tui/compose.py``) opens the backends and builds the services (agent
workers, the demo feeder, the metrics server) and hands them here; this module knows none of
them by name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

import structlog

from agentdeck.core.breakers import Breakers
from agentdeck.core.client import Client
from agentdeck.core.clock import Clock
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import BlobStore, Bus, Registry, Store
from agentdeck.core.recovery import LostAgents
from agentdeck.core.scheduler import Scheduler, SchedulerConfig
from agentdeck.core.spec import SpecLimits

log = structlog.get_logger(__name__)


class Service(Protocol):
    """Anything the runtime keeps running: ``run()`` until ``stop(grace)``."""

    async def run(self) -> None:
        """Work until stopped."""
        ...

    async def stop(self, grace: float) -> None:
        """Finish or hand back current work within ``grace`` seconds, then make run() return."""
        ...


class Runtime:
    """Starts the backends, the scheduler and the services; stops them in reverse order.

    ``async with Runtime(...) as rt:`` then ``rt.client`` submits and queries, and
    ``await rt.wait_closed()`` blocks until :meth:`close` is called (by a signal handler).
    """

    def __init__(
        self,
        *,
        store: Store,
        bus: Bus,
        registry: Registry,
        blobs: BlobStore,
        clock: Clock,
        node: str,
        config: SchedulerConfig | None = None,
        breakers: Breakers | None = None,
        lost_agents: LostAgents | None = None,
        outputs: OutputStore | None = None,
        limits: SpecLimits | None = None,
        services: Sequence[Service] = (),
        schedule: bool = True,
        grace: float = 10.0,
    ) -> None:
        self.store, self.bus, self.registry, self.blobs = store, bus, registry, blobs
        self.clock = clock
        self.node = node
        self.services = list(services)
        self.grace = grace
        self.scheduler = Scheduler(
            store,
            bus,
            registry,
            clock,
            node=node,
            config=config,
            breakers=breakers,
            lost_agents=lost_agents,
            outputs=outputs,
        )
        self._schedule = schedule
        self.client = Client(store, clock, limits=limits, actor=node, on_submit=self.scheduler.wake)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self._started: list[Store | Bus | Registry | BlobStore] = []

    async def __aenter__(self) -> Runtime:
        try:
            await self.store.migrate()
            self._started.append(self.store)
            for backend in (self.bus, self.registry, self.blobs):
                await backend.start()
                self._started.append(backend)
        except BaseException:
            await self._close_backends()
            raise
        if self._schedule:
            self._tasks.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))
        for service in self.services:
            self._tasks.append(asyncio.create_task(service.run(), name=repr(service)))
        log.info("runtime_started", node=self.node, services=len(self.services))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def close(self) -> None:
        """Ask the runtime to shut down (safe from a signal handler)."""
        self._closed.set()

    async def wait_closed(self) -> None:
        """Until :meth:`close` is called or a child task dies."""
        closer = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait([closer, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closer.cancel()
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def shutdown(self) -> None:
        """Stop services (draining within the grace), then the scheduler, then the backends."""
        self._closed.set()
        await asyncio.gather(*(s.stop(self.grace) for s in self.services), return_exceptions=True)
        await self.scheduler.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self._close_backends()
        log.info("runtime_stopped", node=self.node)

    async def _close_backends(self) -> None:
        while self._started:
            backend = self._started.pop()
            with contextlib.suppress(Exception):
                await backend.close()
