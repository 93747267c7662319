"""Leadership: the scheduler lease, taking over from a leader that died, and stepping down.

One node at a time holds the lease; its fencing token goes with every write, so a node that
lost the lease and does not know it yet writes nothing. A node that takes the lease re-reads
its config file first (:attr:`reload_config`, when wired), so a new leader runs on the limits
and budgets the operator last put in its file, not on those it read at start.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import structlog

from agentdeck.core.ahead import EARLY
from agentdeck.core.errors import AgentdeckError, ConfigError, LeaseLost
from agentdeck.core.ports import Lease, StoreWatch
from agentdeck.core.scheduler.config import IN_FLIGHT, LEASE_NAME
from agentdeck.core.scheduler.dispatch import Dispatch

log = structlog.get_logger(__name__)


class Leadership(Dispatch):
    """Holding the lease (renewed every third of its life, ahead of time), taking over,
    stepping down."""

    async def _ensure_lease(self) -> bool:
        """True while this node leads. The lease is renewed every third of its life; from three
        quarters of that third on, the renewal may start ahead, between rounds
        (:meth:`_read_ahead`), so a round waits for the Registry only when no renewal came back
        in time. The lease counts as renewed at the moment a renewal was *sent* and only once
        it came back, so the leader never acts past a third of a lease it holds for sure; a
        renewal that finds the lease taken raises LeaseLost at the next call."""
        now = self.clock.now()
        ttl = self.config.lease_ttl
        if self._fence is not None:
            early = self._lease_ahead.take()
            if early is not None:
                sent, renewed = early
                if renewed is None:
                    raise LeaseLost(f"{self.node} lost the scheduler lease")
                self._lease_renewed = max(self._lease_renewed, sent)
                await self.observers.lease_renewed()
            if now - self._lease_renewed < ttl / 3:
                return True
            self._lease_ahead.cancel()  # late: renewed on the path below, as ever
        lease = await self.registry.acquire_lease(LEASE_NAME, self.node, ttl)
        if lease is None:
            if self._fence is not None:
                raise LeaseLost(f"{self.node} lost the scheduler lease")
            return False
        self._lease_renewed = now
        await self.observers.lease_renewed()
        if self._fence is None:
            self._fence = lease.token
            log.info("leader_elected", node=self.node, token=lease.token)
            await self.observers.lease_acquired(lease.token)
            try:
                await self._take_over()
            except BaseException:
                # Half taken over (no report consumer yet): step down, so that the next round
                # takes over again instead of leading without reading any report.
                await self._step_down()
                raise
        return True

    def _read_ahead(self) -> None:
        """Between rounds, with nothing to do: start what is near its refresh (the lease's
        renewal, the holds' and the breakers' reads; :mod:`core.ahead`), so that the rounds to
        come find them fresh instead of waiting for the Registry. Not while tasks just sent
        may report (:meth:`_report_coming`): the reads' I/O would share the event loop, and
        the cores, with those reports' round (a leader never idle then refreshes on the path
        when due, as before)."""
        now = self.clock.now()
        if self._fence is None or self._report_coming(now):
            return
        if now - self._lease_renewed >= self.config.lease_ttl / 3 * EARLY:
            self._lease_ahead.start(self._renew_lease, now)
        self.holds.read_ahead()
        if self.breakers is not None:
            self.breakers.read_ahead()

    async def _breakers_settle(self) -> None:
        if self.breakers is not None:
            await self.breakers.settle()

    async def _renew_lease(self) -> Lease | None:
        return await self.registry.acquire_lease(LEASE_NAME, self.node, self.config.lease_ttl)

    async def _take_over(self) -> None:
        """Become leader: rebuild what memory holds from the Store and start taking reports."""
        # Record our token at once, so a deposed leader's next write is refused.
        await self.store.apply([], self.clock.now(), fence=self._fence)
        self._reread_config()
        inflight = await self.store.list_tasks(status=IN_FLIGHT, limit=1_000_000)
        self._timeouts = {t.id: t.timeout for t in inflight}
        self._repair_due = self.clock.now()  # a dead leader may have left follow-ups undone
        self._repair_at = None
        self._repair_cancelled = True  # ... or a cancel half done
        if not self.bus.durable and inflight:
            # The bus lost every message with the process that held it: publish the same
            # attempts again. No agent can still hold the old ones, so this duplicates nothing.
            await self._redeliver(inflight)
        self._consumer = asyncio.create_task(self._consume_reports(), name="scheduler-reports")
        if callable(getattr(self.store, "changes", None)):
            self._watcher = asyncio.create_task(self._watch_store(), name="scheduler-watch")

    def _reread_config(self) -> None:
        """Take this node's file's limits and budgets before leading (a reload on a leader
        that failed since reached only its file, and a standby gets no command). Never stops
        the take-over: a file that does not load keeps the values in force, with one error."""
        if self.reload_config is None:
            return
        try:
            changes = self.reload_config()
        except ConfigError as exc:
            # reload_config logged config_reload_failed and the bad value: say why it ran.
            log.warning("leading_on_kept_limits", node=self.node, error=str(exc))
            return
        except Exception as exc:  # an unreadable file is no reason not to lead
            log.error("config_reread_failed", node=self.node, error=repr(exc))
            return
        log.info("config_reread_on_lead", node=self.node, changes=changes)

    async def _step_down(self, release: bool = False) -> None:
        # What was started ahead ends first: a renewal that reached the Registry after the
        # release below would take the lease again for a node that stopped.
        # Bounded: a Registry that does not answer is no reason not to step down.
        for settle in (self._lease_ahead.wait, self.holds.settle, self._breakers_settle):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(settle(), self.config.lease_ttl / 3)
        for task in (self._consumer, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._consumer = self._watcher = None
        for delivery in self._inbox:
            with contextlib.suppress(Exception):
                await delivery.requeue()
        self._inbox.clear()
        if release and self._fence is not None:
            with contextlib.suppress(Exception):
                await self.registry.release_lease(LEASE_NAME, self.node)
        if self._fence is not None:
            self._fence = None
            await self.observers.lease_lost()

    async def _consume_reports(self) -> None:
        async for delivery in self.bus.consume_reports():
            self._inbox.append(delivery)
            self._wake.set()

    async def _watch_store(self) -> None:
        """Wake at once when another process submits a workflow or queues a command (a Store
        with :class:`core.ports.StoreWatch`, e.g. PostgreSQL LISTEN/NOTIFY). Polling every
        ``poll_interval`` stays on as the fallback: a lost notification costs one interval."""
        watch = cast(StoreWatch, self.store)
        while not self._stopping:
            try:
                async for channel in watch.changes():
                    if channel == "commands":
                        self._look_commands = True
                    else:
                        self._maybe_ready = True
                    self._wake.set()
                return  # the store closed
            except AgentdeckError as exc:
                log.warning("store_watch_failed", error=str(exc), fallback="polling")
            await self.clock.sleep(max(self.config.poll_interval, 1.0))
