"""Attaching to a configured cluster: the control centre runs no scheduler (it never takes the
lease), queues commands for whichever node leads, shows who that is, and warns when nobody does.

The cluster here is "configured but cheap": a SQLite store and a SQLite registry named by URL.
The remote daemon is the real composition (``build_runtime``) run in the test's event loop on
its own connections to the same files, as another process would.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from agentdeck.backends.sqlite.registry import SqliteRegistry
from agentdeck.core.client import Client
from agentdeck.core.clock import SystemClock
from agentdeck.core.models import CommandStatus
from agentdeck.core.scheduler import LEASE_NAME
from agentdeck.core.settings import Settings
from agentdeck.core.states import WorkflowStatus as W
from agentdeck.tui.app import NO_LEADER, AgentdeckApp
from agentdeck.tui.compose import control_centre
from agentdeck.tui.screens.overview import OverviewScreen
from agentdeck.tui.screens.workflows import WorkflowsScreen
from agentdeck.tui.wiring import attaches, build_runtime, store_only
from tests.conftest import require_service
from tests.tui.test_app import crumbs, ready, table

pytestmark = pytest.mark.tui
SIZE = (80, 24)
SPEC = """
name: two-steps
tasks:
  - {key: a, capability: echo}
  - {key: b, capability: echo, needs: [a]}
"""


def cluster(home: Path, node: str, **extra: Any) -> Settings:
    """Settings naming a SQLite store and registry by URL: a configured cluster."""
    urls = {
        "store_url": f"sqlite:///{home}/cluster.db",
        "registry_url": f"sqlite:///{home}/registry.db",
    }
    return Settings.load(config_path=None, home=home, node=node, **(urls | extra))


def test_backend_urls_configured_means_attach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing configured embeds the core; any backend URL from config or environment attaches,
    unless the registry (where the lease lives) is memory://, which no other process can see."""
    assert not attaches(Settings.load(config_path=None, home=tmp_path))
    assert attaches(cluster(tmp_path, "n"))
    assert not attaches(cluster(tmp_path, "n", registry_url="memory://"))
    monkeypatch.setenv("AGENTDECK_BUS_URL", "amqp://guest:guest@127.0.0.1:5672/")
    assert attaches(Settings.load(config_path=None, home=tmp_path))


async def test_the_scheduler_flag_runs_a_scheduler_in_the_tui(tmp_path: Path) -> None:
    """`--scheduler` runs the whole node in the TUI as before attaching was the default: with
    no other node its scheduler takes the lease."""
    settings = cluster(tmp_path, "tui-node", scheduler={"heartbeat_interval": 0.05})
    async with control_centre(settings, scheduler=True)() as sources:
        assert not sources.attached
        async with asyncio.timeout(15):
            while (lease := await sources.registry.get_lease(LEASE_NAME)) is None:
                await asyncio.sleep(0.02)
        assert lease.holder == "tui-node"


async def settle(pilot: Pilot[None]) -> None:
    """Let queued actions and screen changes finish, then reload. (Not the shared ``settle``:
    an attached app's events follower is a worker that runs for as long as the app.)"""
    app = pilot.app
    assert isinstance(app, AgentdeckApp)
    await pilot.pause()
    if busy := [w for w in app.workers if w.group != "events"]:  # [] would mean all of them
        await app.workers.wait_for_complete(busy)
    await app.refresh_now()
    await pilot.pause()


async def wait_until_carried_out(client: Client, command_id: str) -> CommandStatus:
    """Poll the Store until a command is no longer pending (bounded)."""
    async with asyncio.timeout(15):
        while (status := (await client.store.get_command(command_id)).status) is (
            CommandStatus.PENDING
        ):
            await asyncio.sleep(0.02)
    return status


def spy_on_leases(monkeypatch: pytest.MonkeyPatch, registry: type[Any]) -> list[str]:
    """Every node that asks any ``registry`` instance for a lease, in order."""
    asked: list[str] = []
    acquire = registry.acquire_lease

    async def spy(self: Any, name: str, holder: str, ttl: float) -> Any:
        asked.append(holder)
        return await acquire(self, name, holder, ttl)

    monkeypatch.setattr(registry, "acquire_lease", spy)
    return asked


async def attached_with_a_daemon_beside(
    tui: Settings, daemon_settings: Settings, *, events: bool
) -> None:
    """The scenario: the attached TUI alone (warned), a cancel queued from it, a daemon started
    (the real composition, in this event loop) that leads and carries it out, then stopped.
    With ``events`` (a shared bus) the daemon's outcome also arrives as a notification."""
    async with store_only(tui) as store:
        workflow = await Client(store, SystemClock()).submit_text(SPEC)

    app = AgentdeckApp(control_centre(tui), refresh_interval=None)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.sources is not None and app.sources.attached
        assert NO_LEADER in crumbs(app)
        assert [n.message for n in app._notifications if NO_LEADER in n.message] != []
        assert isinstance(app.screen, OverviewScreen)
        assert "agentdeck --daemon" in str(app.screen.query_one("#workflows").render())

        await pilot.press("2")
        await settle(pilot)
        assert isinstance(app.screen, WorkflowsScreen)
        assert table(app).cursor_key == workflow.id
        await pilot.press("x", "y")
        await settle(pilot)
        [queued] = await app.sources.store.list_commands()
        assert (queued.action, queued.status) == ("cancel", CommandStatus.PENDING)
        assert any(
            "cancel queued" in n.message and NO_LEADER in n.message for n in app._notifications
        )

        async with build_runtime(daemon_settings, with_agents=False):
            status = await wait_until_carried_out(app.sources.client, queued.id)
            assert status is CommandStatus.DONE
            await settle(pilot)
            status_column = 3  # after the tag mark, the id and the name
            assert str(table(app).get_row(workflow.id)[status_column]) == W.CANCELLED.value
            leader = daemon_settings.node
            assert f"leader {leader}" in crumbs(app) and NO_LEADER not in crumbs(app)
            lease = await app.sources.registry.get_lease(LEASE_NAME)
            assert lease is not None and lease.holder == leader
            if events:  # the leader's outcome, through the events stream
                async with asyncio.timeout(15):
                    while not any(
                        n.message.startswith(f"cancel {workflow.id}: ") for n in app._notifications
                    ):
                        await pilot.pause(0.05)
        await settle(pilot)  # the daemon gave the lease up on its way out
        assert NO_LEADER in crumbs(app)


async def test_attached_tui_never_leads_and_a_daemon_elsewhere_carries_out_its_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite store and registry by URL: no leader, a warning and the badge, the cancel stays
    queued; a daemon starts, leads, carries it out, the TUI shows it and names the leader; the
    daemon stops and the warning is back. The TUI never asked for the lease."""
    asked = spy_on_leases(monkeypatch, SqliteRegistry)
    await attached_with_a_daemon_beside(
        cluster(tmp_path, "tui-node"), cluster(tmp_path, "daemon-1"), events=False
    )
    assert "tui-node" not in asked and "daemon-1" in asked


@pytest.mark.integration
async def test_attached_to_postgres_redis_rabbitmq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on the real engines (a scratch database, a private Redis and RabbitMQ prefix);
    the shared bus also brings the leader's outcome to the TUI as a notification."""
    from agentdeck.backends.postgres.testing import scratch_database
    from agentdeck.backends.redis import RedisRegistry
    from tests.e2e.test_distributed import BROKER, HOST, REDIS, remove_prefixes

    for name, port in (("RabbitMQ", 5672), ("PostgreSQL", 5432), ("Redis", 6379)):
        require_service(name, HOST, port)
    asked = spy_on_leases(monkeypatch, RedisRegistry)
    prefix = f"attach-{os.getpid()}-{secrets.token_hex(4)}"
    async with scratch_database() as store_url:
        try:
            urls = {
                "store_url": store_url,
                "bus_url": f"{BROKER}?prefix={prefix}",
                "registry_url": f"{REDIS}?prefix={prefix}",
            }
            await attached_with_a_daemon_beside(
                cluster(tmp_path, "tui-node", **urls),
                cluster(tmp_path, "daemon-1", **urls),
                events=True,
            )
        finally:
            await remove_prefixes([prefix])
    assert "tui-node" not in asked and "daemon-1" in asked
