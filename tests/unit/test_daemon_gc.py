"""The daemon's collector set-up (``tui.compose.tune_gc``): what is alive at start frozen,
young collections less often; garbage cycles still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from agentdeck.tui.compose import GC_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tune_gc_freezes_what_is_alive_and_raises_the_young_threshold(restored_gc: None) -> None:
    kept = [object() for _ in range(3)]
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLD
    assert gc.get_freeze_count() > len(kept)


def test_cycles_made_after_it_are_still_collected(restored_gc: None) -> None:
    tune_gc()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
