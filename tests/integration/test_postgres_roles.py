"""Roles enforced by PostgreSQL: what agentdeck_viewer, agentdeck_operator and agentdeck_node
may do is decided by the database, and the actor of a command is the authenticated user.

Each test gets a fresh database migrated by the test superuser (the schema's owner) and three
LOGIN users, one a member of each role, dropped after it (roles are cluster-wide).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from click.testing import CliRunner

from agentdeck.backends.memory import MemoryBus, MemoryRegistry
from agentdeck.backends.postgres import PostgresStore, schema, testing
from agentdeck.backends.postgres.connections import denied_message
from agentdeck.core.client import Client
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import PermissionDenied
from agentdeck.core.messages import TaskMessage, decode
from agentdeck.core.models import Command, CommandStatus, new_id
from agentdeck.core.scheduler import Scheduler
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W
from agentdeck.tui.cli import main
from tests.conftest import require_service
from tests.e2e.services import PostgresServer

pytestmark = pytest.mark.integration

SPEC = """
name: roles
tasks:
  - {key: a, capability: echo, input: {text: hi}}
"""


@dataclass(frozen=True)
class Users:
    """The URLs of the scratch database as the owner and as a member of each role."""

    owner: str
    viewer: str
    operator: str
    node: str
    names: dict[str, str]


def _as(url: str, user: str) -> str:
    parts = urlsplit(url)
    netloc = f"{user}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


@pytest.fixture
async def users() -> AsyncIterator[Users]:
    """A migrated scratch database and one LOGIN user per role (dropped afterwards)."""
    server = urlsplit(testing.server_url())
    require_service("PostgreSQL", server.hostname or "127.0.0.1", server.port or 5432)
    tag = f"adk_t_{os.getpid()}_{secrets.token_hex(3)}"
    names = {role: f"{tag}_{role.removeprefix('agentdeck_')}" for role in schema.ROLES}
    async with testing.scratch_database() as url:
        async with PostgresStore.from_url(url, clock=FakeClock()) as owner:
            await owner.migrate()
        admin = await asyncpg.connect(testing.server_url())
        try:
            for role, user in names.items():
                await admin.execute(f'CREATE ROLE "{user}" LOGIN IN ROLE {role}')
            yield Users(
                owner=url,
                viewer=_as(url, names[schema.VIEWER]),
                operator=_as(url, names[schema.OPERATOR]),
                node=_as(url, names[schema.NODE]),
                names=names,
            )
        finally:
            await testing.drop_database(urlsplit(url).path.lstrip("/"))
            for user in names.values():
                await admin.execute(f'DROP ROLE IF EXISTS "{user}"')
            await admin.close()


@pytest.fixture
async def workflow(users: Users) -> str:
    """The id of a workflow submitted by a node."""
    async with PostgresStore.from_url(users.node, clock=FakeClock()) as node:
        await node.migrate()
        client = Client(node, FakeClock())
        return (await client.submit(parse_spec(SPEC, fmt="yaml", limits=SpecLimits()))).id


async def test_the_migration_creates_three_nologin_roles(users: Users) -> None:
    """The three group roles exist and none of them can log in."""
    conn = await asyncpg.connect(users.owner)
    try:
        rows = await conn.fetch(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY($1::text[])",
            list(schema.ROLES),
        )
    finally:
        await conn.close()
    assert {r["rolname"]: r["rolcanlogin"] for r in rows} == dict.fromkeys(schema.ROLES, False)


async def test_a_viewer_reads_but_cannot_queue_a_command(users: Users, workflow: str) -> None:
    """A viewer opens the store and reads; its cancel is refused by the database, by name."""
    async with PostgresStore.from_url(users.viewer, clock=FakeClock()) as viewer:
        await viewer.migrate()  # a no-op on a current schema, allowed to a viewer
        assert (await viewer.get_workflow(workflow)).status == W.RUNNING
        assert [t.key for t in await viewer.list_tasks(workflow_id=workflow)] == ["a"]
        client = Client(viewer, FakeClock(), actor="root")
        with pytest.raises(PermissionDenied) as refused:
            await client.command("cancel", workflow, wait=None)
        assert await viewer.list_commands() == []
    viewer_name = users.names[schema.VIEWER]
    assert str(refused.value) == f"role {viewer_name} may not cancel: it is read-only"


async def test_a_viewer_cannot_write_a_task_or_a_workflow(users: Users, workflow: str) -> None:
    """A viewer's submit and its direct task writes fail in the database."""
    async with PostgresStore.from_url(users.viewer, clock=FakeClock()) as viewer:
        with pytest.raises(PermissionDenied, match="may not submit workflows: it is read-only"):
            await Client(viewer, FakeClock()).submit(
                parse_spec(SPEC, fmt="yaml", limits=SpecLimits())
            )
        with pytest.raises(PermissionDenied, match="may not change workflow states"):
            await viewer.set_workflow_status(workflow, {W.RUNNING}, W.PAUSED, 1.0)
    conn = await asyncpg.connect(users.viewer)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE tasks SET status = 'succeeded'")
    finally:
        await conn.close()


async def test_an_operator_queues_a_command_recorded_as_its_own(
    users: Users, workflow: str
) -> None:
    """An operator's command is queued, and its actor is the database user, not the claim."""
    async with PostgresStore.from_url(users.operator, clock=FakeClock()) as operator:
        await operator.migrate()
        client = Client(operator, FakeClock(), actor="someone-else")
        queued = await client.command("cancel", workflow, wait=None)
        recorded = await operator.get_command(queued.id)
    assert recorded.actor == users.names[schema.OPERATOR]
    assert recorded.status == CommandStatus.PENDING


async def test_an_operator_cannot_write_tasks_nor_finished_commands(
    users: Users, workflow: str
) -> None:
    """An operator may not submit, change a workflow or queue a command already 'done'."""
    async with PostgresStore.from_url(users.operator, clock=FakeClock()) as operator:
        with pytest.raises(PermissionDenied, match="it is an operator"):
            await Client(operator, FakeClock()).submit(
                parse_spec(SPEC, fmt="yaml", limits=SpecLimits())
            )
        with pytest.raises(PermissionDenied, match="may not change workflow states"):
            await operator.set_workflow_status(workflow, {W.RUNNING}, W.PAUSED, 1.0)
        done = Command(new_id(), "cancel", workflow, 1.0, status=CommandStatus.DONE, result="ok")
        with pytest.raises(PermissionDenied, match="may not cancel: it is an operator"):
            await operator.add_command(done)
    conn = await asyncpg.connect(users.operator)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE commands SET actor = 'x'")
    finally:
        await conn.close()


async def test_a_node_runs_the_scheduler_and_carries_out_an_operators_command(
    users: Users, workflow: str
) -> None:
    """A node dispatches, applies results and finishes commands; the actor stays the
    operator's."""
    clock = FakeClock()
    async with PostgresStore.from_url(users.operator, clock=clock) as operator:
        queued = await Client(operator, clock, actor="x").command("cancel", workflow, wait=None)
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await bus.start()
    await registry.start()
    async with PostgresStore.from_url(users.node, clock=clock) as node:
        scheduler = Scheduler(node, bus, registry, clock, node="node-1")
        try:
            for _ in range(20):
                await scheduler.tick()
                await asyncio.sleep(0)
                if (await node.get_command(queued.id)).status != CommandStatus.PENDING:
                    break
            done = await node.get_command(queued.id)
            assert (await node.get_workflow(workflow)).status == W.CANCELLED
            assert (await node.get_task(f"{workflow}/a")).status in {T.CANCELLED, T.DISPATCHED}
        finally:
            await scheduler.stop()
            await bus.close()
            await registry.close()
    assert done.status == CommandStatus.DONE
    assert done.actor == users.names[schema.OPERATOR]


async def test_a_node_dispatches_a_ready_task(users: Users, workflow: str) -> None:
    """The node role may write everything a scheduler round writes (dispatch + publish)."""
    clock = FakeClock()
    bus = MemoryBus.from_url("memory://", clock=clock)
    registry = MemoryRegistry.from_url("memory://", clock=clock)
    await bus.start()
    await registry.start()
    async with PostgresStore.from_url(users.node, clock=clock) as node:
        scheduler = Scheduler(node, bus, registry, clock, node="node-1")
        try:
            await scheduler.tick()
            assert (await node.get_task(f"{workflow}/a")).status == T.DISPATCHED
            taken = bus.consume_tasks(["echo"], prefetch=1)
            delivery = await asyncio.wait_for(anext(taken), 5)
            assert decode(delivery.body, TaskMessage).key == "a"
            await taken.aclose()  # type: ignore[attr-defined]
        finally:
            await scheduler.stop()
            await bus.close()
            await registry.close()


async def test_the_owner_keeps_the_actor_it_writes(users: Users, workflow: str) -> None:
    """The schema's owner (who restores snapshots) writes the actor it is given."""
    async with PostgresStore.from_url(users.owner, clock=FakeClock()) as owner:
        await owner.add_command(Command("c1", "cancel", workflow, 1.0, actor="ops@host"))
        assert (await owner.get_command("c1")).actor == "ops@host"


def test_a_refused_migration_says_what_a_dba_runs() -> None:
    """A migrating user without CREATEROLE is told the statements a DBA runs."""
    message = denied_message(
        "migrate",
        "deploy",
        [],
        "role agentdeck_viewer does not exist and user deploy may not create roles",
        f"a superuser runs once per cluster: {schema.CREATE_ROLES_BY_HAND}",
    )
    assert message.startswith("role deploy may not migrate the schema: it has none of the roles")
    assert "CREATE ROLE agentdeck_viewer NOLOGIN; CREATE ROLE agentdeck_operator NOLOGIN" in message


def test_the_cli_prints_the_refusal_as_one_line(
    users: Users, workflow: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agentdeck cancel` as a viewer exits 1 with the database's refusal, by name."""
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTDECK_STORE_URL", users.viewer)
    result = CliRunner().invoke(main, ["cancel", workflow], catch_exceptions=False)
    assert result.exit_code == 1
    viewer = users.names[schema.VIEWER]
    assert result.output.strip().splitlines()[-1] == (
        f"error: role {viewer} may not cancel: it is read-only"
    )


@pytest.fixture(scope="module")
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster of this module, where the agentdeck roles do not exist."""
    server = PostgresServer(tmp_path_factory.mktemp("cluster"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.mark.slow
async def test_a_migrating_user_without_createrole_is_told_what_a_dba_runs(
    fresh_cluster: PostgresServer,
) -> None:
    """Where the roles are missing and the owner may not create them, the migration stops
    with the statements a DBA runs; once run, the same owner migrates."""
    admin = await asyncpg.connect(fresh_cluster.url)
    try:
        await admin.execute("CREATE ROLE deploy LOGIN")
        await admin.execute("CREATE DATABASE app OWNER deploy")
        url = f"postgresql://deploy@127.0.0.1:{fresh_cluster.port}/app"
        async with PostgresStore.from_url(url, clock=FakeClock()) as store:
            with pytest.raises(PermissionDenied) as refused:
                await store.migrate()
        message = str(refused.value)
        assert message.startswith("role deploy may not migrate the schema")
        assert "user deploy may not create roles" in message
        assert schema.CREATE_ROLES_BY_HAND in message
        for statement in schema.CREATE_ROLES_BY_HAND.split("; "):
            await admin.execute(statement)
        async with PostgresStore.from_url(url, clock=FakeClock()) as store:
            await store.migrate()
            assert await store.list_workflows() == []
    finally:
        await admin.close()
