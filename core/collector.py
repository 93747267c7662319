"""The garbage collector of a long-running node process, tuned for many live objects.

A saturated scheduler or agent holds thousands of tasks, each a few objects that live until
it is reported or written, and every task allocates dozens more. With CPython's default
threshold (a young collection every 700 net allocations) the collector walks the same
long-lived objects over and over: about a quarter of an agent's CPU (docs/performance.md,
"The agent's CPU per task"). Only the entry points of processes use this: a library must not
change its host's collector.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["YOUNG_THRESHOLD", "fewer_collections"]

YOUNG_THRESHOLD = 10_000
"""Allocations between two young collections while a node runs (CPython's default: 700)."""


@contextlib.contextmanager
def fewer_collections(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Collect garbage less often while this runs: the young generation only after ``young``
    allocations, and the objects alive on entry (modules, the node's set-up) frozen out of
    every collection; both undone on exit.

    Only garbage in reference cycles waits longer; the rest is freed at once, as always.
    Nested uses are safe: the outermost one unfreezes the heap.
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
