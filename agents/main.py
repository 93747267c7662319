"""The entry point for an agent process: run a worker until SIGTERM or SIGINT.

Only this module installs signal handlers (a library must not take over a process's
signals), and only it tunes the process's garbage collector (:func:`agent_gc`). The first
signal stops the worker gracefully: no new tasks, running ones get ``grace`` seconds. A
second signal stops it at once: what still runs goes back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable, Sequence

from agentdeck.agents.worker import Worker
from agentdeck.core.collector import fewer_collections
from agentdeck.core.logs import get_logger

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

agent_gc = fewer_collections
"""The collector's tuning while workers run (:func:`core.collector.fewer_collections`)."""


async def run_worker(
    worker: Worker, *, grace: float = 30.0, signals: Iterable[signal.Signals] = STOP_SIGNALS
) -> None:
    """Run ``worker`` until it is stopped by one of ``signals`` (or ends with an error)."""
    await run_workers([worker], grace=grace, signals=signals)


async def run_workers(
    workers: Sequence[Worker],
    *,
    grace: float = 30.0,
    signals: Iterable[signal.Signals] = STOP_SIGNALS,
) -> None:
    """Run every worker of this process until one of ``signals`` stops them all."""
    loop = asyncio.get_running_loop()
    log = get_logger(__name__, agents=[w.id for w in workers])
    stoppers: set[asyncio.Task[None]] = set()  # strong references until each is done
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        wait = grace if len(received) == 1 else 0.0
        log.info("agent_stop_requested", signal=signum.name, grace=wait)
        for worker in workers:
            stopper = loop.create_task(worker.stop(wait))
            stoppers.add(stopper)
            stopper.add_done_callback(stoppers.discard)

    installed = []
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
        installed.append(signum)
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(agent_gc())
            for worker in workers:
                await stack.enter_async_context(worker)
            await asyncio.gather(*(worker.run() for worker in workers))
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if stoppers:
            await asyncio.wait(stoppers)
