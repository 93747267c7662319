"""The entry point for an agent process: run a worker until SIGTERM or SIGINT.

Only this module installs signal handlers (a library must not take over a process's
signals), and only it tunes the process's garbage collector (:func:`agent_gc`). The first
signal stops the worker gracefully: no new tasks, running ones get ``grace`` seconds. A
second signal stops it at once: what still runs goes back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterable, Iterator, Sequence

from agentdeck.agents.worker import Worker
from agentdeck.core.logs import get_logger

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

YOUNG_THRESHOLD = 10_000
"""Allocations between two young collections while workers run (Python's default: 700)."""


@contextlib.contextmanager
def agent_gc(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Collect garbage less often while this runs: the young generation only after ``young``
    allocations, and the objects alive on entry (modules, the workers) frozen out of every
    collection; both undone on exit.

    Why: a saturated agent holds thousands of tasks (a prefetch of 200 batches of 50), each
    a few objects that live until it is reported, and every task allocates dozens more.
    With the default threshold the collector ran so often over the long-lived ones that it
    took about a quarter of the agent's CPU (docs/performance.md, "The agent's CPU per
    task"). Only garbage in reference cycles waits longer; the rest is freed at once, as
    always.
    """
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if not frozen:  # else whoever froze the heap first unfreezes it
            gc.unfreeze()


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
