"""The overview while an engine is down: the cards that read the failing source keep their last
picture, dimmed, and say how old it is and which source is down; the status bar names the
source and the age of its last good data; the engine health table shows that engine down; the
next good read brings everything back to live."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.widgets import Static

from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.engines import host_table
from agentdeck.tui.sources import REGISTRY, STORE, Health, Sources
from agentdeck.tui.widgets.status_bar import StatusBar
from tests.tui.conftest import START, build_world
from tests.tui.test_app import SIZE, ready
from tests.tui.test_engines import ClusterBus, ClusterRegistry
from tests.tui.test_snapshots import Snap, steps

pytestmark = pytest.mark.tui

POSTGRES = {"h1:5432": "replica", "h2:5432": "primary"}
REDIS = {"h1:6379": "primary", "h2:6379": "replica"}


class FlakyStore(SqliteStore):
    """The world's SQLite file, reporting two PostgreSQL hosts; while ``down``, every read the
    overview makes fails as a PostgreSQL that does not answer does."""

    host_states = POSTGRES
    down = False

    def _check(self, call: str) -> None:
        if self.down:
            raise BackendUnavailable(f"PostgreSQL at h2:5432 failed during {call}: timed out")

    async def count_workflows(self, *args: Any, **kwargs: Any) -> Any:
        self._check("count_workflows")
        return await super().count_workflows(*args, **kwargs)

    async def count_by_capability(self, *args: Any, **kwargs: Any) -> Any:
        self._check("count_by_capability")
        return await super().count_by_capability(*args, **kwargs)


class FlakyRegistry(ClusterRegistry):
    """Two Redis servers; while ``down``, every read fails as a Redis that does not answer."""

    down = False

    def _check(self, call: str) -> None:
        if self.down:
            raise BackendUnavailable(f"Redis at sentinel h1:26379/mymaster/0: {call}: timed out")

    async def agents(self, *args: Any, **kwargs: Any) -> Any:
        self._check("agents")
        return await super().agents(*args, **kwargs)

    async def breakers(self, *args: Any, **kwargs: Any) -> Any:
        self._check("breakers")
        return await super().breakers(*args, **kwargs)

    async def get_lease(self, *args: Any, **kwargs: Any) -> Any:
        self._check("get_lease")
        return await super().get_lease(*args, **kwargs)


@contextlib.asynccontextmanager
async def flaky_world(path: Path, clock: FakeClock) -> AsyncIterator[tuple[Sources, Any, Any]]:
    """The fixed world on a flaky Store and Registry (each reporting its hosts)."""
    world = await build_world(path, clock)
    registry = FlakyRegistry(world.clock, dict(REDIS))
    for agent in await world.registry.agents():
        await registry.register(agent, ttl=3600)
    for breaker in await world.registry.breakers():
        await registry.put_breaker(breaker, expected_version=None)
    store = FlakyStore(path, clock=world.clock)
    try:
        sources = Sources(
            Client(store, world.clock),
            registry,
            world.clock,
            bus=ClusterBus(clock=world.clock),
        )
        yield sources, store, registry
    finally:
        await store.close()
        await world.close()


def _card(app: AgentdeckApp, card: str) -> tuple[str, str, bool]:
    """A card's text, what its bottom border says, and whether its text is dimmed."""
    widget = app.screen.query_one(card, Static)
    shown = widget.render()
    assert isinstance(shown, Text)
    dim = any(
        str(span.style) == "dim" and (span.start, span.end) == (0, len(shown))
        for span in shown.spans
    )
    return shown.plain, str(widget.border_subtitle or ""), dim


def _badges(app: AgentdeckApp) -> str:
    return str(app.screen.query_one(StatusBar).query_one("#badges", Static).render())


async def test_a_failing_store_then_registry_read_as_stale_until_they_answer(
    tmp_path: Path,
) -> None:
    """The Store stops answering: the workflows and queues cards keep their numbers, dimmed,
    with ``stale 12s: Store down`` under them, the bar says ``Store down, 12s stale`` and the
    table's postgres column reads down; the agents card (the Registry) stays live. Then the
    Registry fails too, and both come back on the next good read."""
    clock = FakeClock(START)
    async with flaky_world(tmp_path / "agentdeck.db", clock) as (sources, store, registry):

        @contextlib.asynccontextmanager
        async def connect() -> AsyncIterator[Sources]:
            yield sources

        app = AgentdeckApp(connect, refresh_interval=None)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            live = {c: _card(app, c) for c in ("#workflows", "#queues", "#agents")}
            assert all(subtitle == "" and not dim for _, subtitle, dim in live.values())
            assert "down" not in _badges(app)
            assert "h2   in use replica primary" in live["#agents"][0]

            store.down = True
            clock.advance(12)
            await app.refresh_now()
            await pilot.pause()  # (the toast is a message)
            for card in ("#workflows", "#queues"):
                assert _card(app, card) == (live[card][0], "stale 12s: Store down", True)
            agents, subtitle, dim = _card(app, "#agents")
            assert (subtitle, dim) == ("", False)
            assert "h1   down   primary down" in agents  # (the bus reports h1's broker down)
            assert "h2   in use replica down" in agents
            assert "Store down, 12s stale" in _badges(app)
            assert any("PostgreSQL at h2:5432" in n.message for n in app._notifications)

            registry.down = True
            clock.advance(3)
            await app.refresh_now()
            assert _card(app, "#workflows")[1:] == ("stale 15s: Store, Registry down", True)
            assert _card(app, "#agents")[1:] == ("stale 3s: Registry down", True)
            assert "h2   in use down    down" in _card(app, "#agents")[0]
            badges = _badges(app)
            assert "Store down, 15s stale" in badges and "Registry down, 3s stale" in badges

            store.down = registry.down = False
            clock.advance(1)
            await app.refresh_now()
            for card, (text, _, _) in live.items():
                assert _card(app, card) == (text, "", False)
            assert "down," not in _badges(app)


def test_the_health_of_a_source_that_never_answered_says_no_data() -> None:
    """Before any answer there is no age: the card says ``no data``, the bar ``never read``;
    the failure's start is kept while it goes on, the message is the last one."""
    clock = FakeClock(START)
    health = Health(clock)
    health.failed(STORE, BackendUnavailable("first"))
    clock.advance(5)
    health.failed(STORE, BackendUnavailable("second"))
    assert health.states[STORE].failing_since == START
    assert health.states[STORE].error == "second"
    assert health.summary([STORE, REGISTRY]) == "no data: Store down"
    assert health.label(STORE) == "Store down, never read"
    assert health.label(REGISTRY) == ""
    health.good(STORE)
    assert (health.failing(), health.summary([STORE])) == ({}, "")
    clock.advance(125)
    health.failed(STORE, BackendUnavailable("again"))
    assert health.label(STORE) == "Store down, 2m stale"


def test_an_engine_whose_source_fails_is_down_in_every_cell_it_has(tmp_path: Path) -> None:
    """host_table's ``down``: the engine's cells read down, empty cells stay empty, the other
    engines are as reported."""

    class Reporting:
        host_states = {"h1:5432": "primary"}

    sources: Any = type("S", (), {})()
    sources.bus = ClusterBus(clock=FakeClock(START))
    sources.registry = ClusterRegistry(FakeClock(START), {"h2:6379": "primary"})
    sources.store = Reporting()
    lines = [line.plain.split() for line in host_table(sources, down={"postgres"})]
    assert lines == [
        ["host", "broker", "redis", "postgres"],
        ["h1", "down", "-", "down"],  # (ClusterBus reports h1's broker down itself)
        ["h2", "in", "use", "primary", "-"],
        ["h3", "?", "-", "-"],
    ]


def test_the_overview_with_the_store_down_at_80x24(snap_compare: Snap, tmp_path: Path) -> None:
    """The Store has not answered for 12 s: two cards dimmed with ``stale 12s: Store down``,
    the bar's red ``Store down, 12s stale``, the postgres column down; the agents card live."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Sources]:
        clock = FakeClock(START)
        async with flaky_world(tmp_path / "agentdeck.db", clock) as (sources, store, _):
            connect.store, connect.clock = store, clock  # type: ignore[attr-defined]
            yield sources

    async def fail(pilot: Any) -> None:
        await steps()(pilot)
        connect.store.down = True  # type: ignore[attr-defined]
        connect.clock.advance(12)  # type: ignore[attr-defined]
        app = pilot.app
        await app.refresh_now()
        await pilot.pause()  # the toast arrives...
        app.clear_notifications()  # ...and would cover the cards in the picture
        await pilot.pause()

    app = AgentdeckApp(connect, refresh_interval=None)
    assert snap_compare(app, terminal_size=(80, 24), run_before=fail)
