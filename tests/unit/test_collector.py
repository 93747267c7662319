"""The node processes' collector tuning: fewer young collections while a node runs, the
start-up heap frozen, everything as it was afterwards; the daemon runs under it."""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentdeck.core.collector import YOUNG_THRESHOLD, fewer_collections
from agentdeck.core.settings import Settings
from agentdeck.tui import compose


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    yield
    gc.set_threshold(*before)
    if not frozen:
        gc.unfreeze()


def test_young_collections_wait_longer_and_the_heap_is_frozen_until_the_end() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_nested_uses_leave_the_heap_frozen_until_the_outermost_ends() -> None:
    with fewer_collections():
        with fewer_collections(young=5_000):
            assert gc.get_threshold()[0] == 5_000
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_an_error_inside_still_restores_the_collector() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_the_daemon_runs_its_node_with_fewer_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    class Runtime:
        scheduler = None

        async def __aenter__(self) -> Runtime:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        def close(self) -> None:
            return None

        async def wait_closed(self) -> None:
            seen.append(gc.get_threshold()[0])

    @contextlib.asynccontextmanager
    async def node(*args: Any, **kwargs: Any) -> AsyncIterator[tuple[Runtime, None]]:
        yield Runtime(), None

    monkeypatch.setattr(compose, "node", node)
    monkeypatch.setattr(compose, "configure_logging", lambda *a, **k: None)
    default = gc.get_threshold()[0]
    await compose.run_daemon(Settings(), demo=False)
    assert seen == [YOUNG_THRESHOLD]
    assert gc.get_threshold()[0] == default


def test_cycles_made_while_it_runs_are_still_collected() -> None:
    class Node:
        other: object = None

    with fewer_collections():
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
