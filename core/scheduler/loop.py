"""The scheduler: the one writer of task state, as a loop of rounds.

The leader loops: apply agents' reports, carry out operators' commands, promote retries whose
delay has passed, fail attempts that outlived their deadline, and dispatch ready tasks. Every
step reads the Store and writes it with compare-and-set, so a duplicate or late report, or a
second scheduler that lost its lease, changes nothing. Each step lives in its own module (see
the package's docstring); this one holds the loop.
"""

from __future__ import annotations

import asyncio

import structlog

from agentdeck.core.errors import AgentdeckError, LeaseLost
from agentdeck.core.scheduler.commands import Commands
from agentdeck.core.scheduler.config import OPEN_WORKFLOWS
from agentdeck.core.scheduler.leadership import Leadership
from agentdeck.core.scheduler.repair import Repairs
from agentdeck.core.scheduler.reports import Reports
from agentdeck.core.states import WorkflowStatus

log = structlog.get_logger(__name__)

W = WorkflowStatus


class Scheduler(Leadership, Reports, Commands, Repairs):
    """Moves workflows forward. Use as an async context manager, then ``run()`` (or drive
    ``tick()`` by hand in tests).

    Its parts (leadership, dispatch, reports, follow-ups, repair, commands) are one module each,
    over :class:`~agentdeck.core.scheduler.base.SchedulerBase`, which holds the shared state and
    the one write path; what it does is announced to its :attr:`observers`.
    """

    _time_work_since: float | None = None
    """When the time-driven work of a polling round became due and is not done yet (see
    :meth:`tick`); None: none is due."""

    async def __aenter__(self) -> Scheduler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Lead when the lease is free, otherwise stand by; until :meth:`stop`."""
        while not self._stopping:
            try:
                if await self._ensure_lease():
                    busy = await self.tick()
                    if busy:
                        await asyncio.sleep(0)  # let agents and consumers run between rounds
                        continue
            except LeaseLost:
                log.warning("lease_lost", node=self.node)
                await self._step_down()
            except AgentdeckError as exc:
                # A backend hiccup: stay alive, the next round tries again.
                log.error("scheduler_round_failed", error=str(exc), kind=type(exc).__name__)
            await self._idle()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop leading: end the report consumer and give the lease up."""
        self._stopping = True
        self._wake.set()
        await self._step_down(release=True)

    async def _idle(self) -> None:
        """Wait for a wake-up or the poll interval, whichever comes first."""
        if self._wake.is_set():
            self._wake.clear()
            return
        self._read_ahead()  # off the rounds' path: they would wait for it otherwise
        sleeper = asyncio.ensure_future(self.clock.sleep(self.config.poll_interval))
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, waiter):
                fut.cancel()
            self._wake.clear()

    async def tick(self) -> bool:
        """One round of leader work. True if anything happened (so go again at once).

        What a waiting task needs comes first: the reports (a result, and the dependents it
        releases), an operator's command that was notified (and what a round the Store failed
        half-way left undone), then the dispatch; the time-driven work of a polling round
        (commands polled, retries due, deadlines, lost agents, the repair sweep) after it.
        A lone task whose submit lands on such a round is then not kept waiting behind its
        queries (its p99 is that tail), nor is a report that came in during the round or is
        on its way (tasks sent and no report since, for a quarter of ``poll_interval``): the
        work then waits for a round with no report waiting, one ``poll_interval`` at most;
        what that work makes ready is dispatched by the next round, which follows at once
        (the round was busy)."""
        if not await self._ensure_lease():
            return False
        self.rounds += 1
        busy = await self._apply_reports()
        # Without a StoreWatch every round looks at everything. With one, a round under load
        # (reports in, tasks out) skips the queries nothing asked for: commands only when one
        # was notified, and the time-driven work (retries due, deadlines, lost agents) once per
        # poll_interval, which is also the fallback for a notification that got lost.
        now = self.clock.now()
        self._polling = self._watcher is None or now - self._last_poll >= self.config.poll_interval
        if self._polling:
            self._last_poll = now
            if self._time_work_since is None:
                self._time_work_since = now
        commands = self._look_commands
        if commands:  # notified: before the dispatch, which a pause may hold
            self._look_commands = False
            busy |= await self._run_commands()
        if self._polling:
            if self._follow_ups:  # left by a round the Store failed half-way
                await self._after_changes([])
            if self._budget_due:  # likewise: a workflow over its budget is held first
                await self._check_budgets(())
        busy |= await self._flush_unpublished()
        busy |= await self._dispatch()
        # With a StoreWatch, a report that came in meanwhile goes first: the time-driven work
        # waits for a round with none waiting, one poll_interval at most. So does a report
        # on its way: tasks just sent (a lone task's report comes back within milliseconds)
        # and none reported since, for a quarter of poll_interval.
        since = self._time_work_since
        if since is not None and (
            self._watcher is None
            or not (self._inbox or self._report_coming(now))
            or now - since >= self.config.poll_interval
        ):
            self._time_work_since = None
            if not commands:  # the fallback for a notification that got lost
                busy |= await self._run_commands()
            busy |= await self._handle_due()
            busy |= await self._recover_lost_agents()
        elif since is not None and self._inbox:
            busy = True  # a report waits: the next round at once, then this work
        if self._repair_at is None and now >= self._repair_due:
            self._repair_at, self._repair_due = 0, now + self.config.repair_interval
            self._repair_statuses = OPEN_WORKFLOWS | (
                {W.CANCELLED} if self._repair_cancelled else set()
            )
            self._repair_cancelled = False
        if self._repair_at is not None:  # a page a round; a page the Store failed comes again
            await self._repair()
            busy |= self._repair_at is not None
        await self.observers.round_finished(busy)
        return busy
