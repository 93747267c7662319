"""access.yml creates the engines' users per agentdeck role, and the engines enforce them.

The playbook runs here (``ansible_connection=local``) against a private redis-server and a
private RabbitMQ node of this module (free loopback ports; the shared ones are not touched)
and the shared PostgreSQL, where it makes LOGIN users in the group roles of a freshly migrated
scratch database (users are cluster-wide: dropped after). Then each user does, through the
real backends, what its role allows, and is refused the rest by the engine itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq.exceptions
import asyncpg
import pytest
import redis.asyncio
import redis.exceptions

from agentdeck.backends.postgres import PostgresStore, schema, testing
from agentdeck.backends.rabbitmq import RabbitBus
from agentdeck.backends.redis import RedisRegistry
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import AgentdeckError, ConfigError
from agentdeck.core.models import AgentRecord, AgentState, Command, new_id
from agentdeck.core.ports import OutgoingTask
from tests.conftest import require_service
from tests.e2e.services import RabbitServer, RedisServer

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
SECRET = "acc3ss-pw"
LIMIT = 30.0

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@dataclass
class Engines:
    """The servers the playbook ran against, the users it made and its two runs' output."""

    redis: RedisServer
    rabbit: RabbitServer
    database: str
    tag: str
    first: str
    second: str

    def user(self, role: str) -> str:
        return f"{self.tag}_{role}"


def _play(base: Path, variables: dict[str, Any]) -> str:
    inventory = base / "inventory.ini"
    inventory.write_text(
        "[agentdeck_access]\n"
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    extra = base / "vars.json"
    extra.write_text(json.dumps(variables))
    run = subprocess.run(
        [str(PLAYBOOK), "-i", str(inventory), "-e", f"@{extra}", "access.yml"],
        cwd=ANSIBLE,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
            "ANSIBLE_HOME": str(base / ".ansible"),
            "ANSIBLE_LOCAL_TEMP": str(base / ".ansible/tmp"),
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert SECRET not in run.stdout + run.stderr
    return run.stdout


def _changed(output: str) -> int:
    recap = output[output.rindex("PLAY RECAP") :]
    return sum(int(part.split("=")[1]) for part in recap.split() if part.startswith("changed="))


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    """The engines, with access.yml run twice on them."""
    server = urlsplit(testing.server_url())
    require_service("PostgreSQL", server.hostname or "127.0.0.1", server.port or 5432)
    base = tmp_path_factory.mktemp("access")
    tag = f"adk_a_{os.getpid()}_{secrets.token_hex(3)}"
    redis_server = RedisServer(tmp_path_factory.mktemp("redis"))
    rabbit = RabbitServer(tmp_path_factory.mktemp("rabbit"))
    database = f"{testing.PREFIX}access_{secrets.token_hex(4)}"
    try:
        redis_server.start()
        rabbit.start()
        url = asyncio.run(testing.create_database(database))
        asyncio.run(_migrate(url))
        env = rabbit.env()
        variables = {
            "agentdeck_access_postgres_url": testing.server_url(),
            "agentdeck_access_postgres_users": [
                {"name": f"{tag}_{role}", "role": role, "password": SECRET}
                for role in ("viewer", "operator", "node")
            ],
            "agentdeck_access_rabbitmqctl": [rabbit.ctl, "-n", rabbit.node],
            "agentdeck_access_rabbitmq_env": {
                k: v for k, v in env.items() if k == "HOME" or k.startswith(("RABBITMQ_", "ERL_"))
            },
            "agentdeck_access_bus_prefix": tag,
            "agentdeck_access_rabbitmq_users": [
                {"name": f"{tag}_{role}", "role": role, "password": SECRET}
                for role in ("viewer", "operator", "node")
            ],
            "agentdeck_access_redis_cli": [
                "redis-cli",
                "-h",
                "127.0.0.1",
                "-p",
                str(redis_server.port),
            ],
            "agentdeck_access_registry_prefix": tag,
            "agentdeck_access_redis_users": [
                {"name": f"{tag}_{role}", "role": role, "password": SECRET}
                for role in ("viewer", "node")
            ],
        }
        first = _play(base, variables)
        second = _play(base, variables)
        yield Engines(redis_server, rabbit, url, tag, first, second)
    finally:
        redis_server.close()
        rabbit.close()
        asyncio.run(_drop(database, tag))


async def _migrate(url: str) -> None:
    async with PostgresStore.from_url(url, clock=FakeClock()) as store:
        await store.migrate()


async def _drop(database: str, tag: str) -> None:
    await testing.drop_database(database)
    conn = await asyncpg.connect(testing.server_url())
    try:
        for role in ("viewer", "operator", "node"):
            await conn.execute(f'DROP ROLE IF EXISTS "{tag}_{role}"')
    finally:
        await conn.close()


def test_a_second_run_changes_nothing(engines: Engines) -> None:
    """The first run creates the users; the same inputs again report nothing changed."""
    assert _changed(engines.first) >= 3
    assert _changed(engines.second) == 0


# ------------------------------------------------------------------------------ Redis


def _registry_url(engines: Engines, role: str) -> str:
    return (
        f"redis://{engines.user(role)}:{SECRET}@127.0.0.1:{engines.redis.port}/0"
        f"?prefix={engines.tag}"
    )


def _agent(agent_id: str) -> AgentRecord:
    return AgentRecord(agent_id, "echo", ("echo",), 1, AgentState.UP, 0.0, 0.0)


@pytest.fixture
async def node_registry(engines: Engines) -> AsyncIterator[RedisRegistry]:
    registry = RedisRegistry.from_url(_registry_url(engines, "node"), clock=FakeClock())
    await registry.start()
    yield registry
    await registry.close()


async def test_a_redis_node_user_runs_the_registry(
    engines: Engines, node_registry: RedisRegistry
) -> None:
    """The node's ACL user registers, heartbeats, lists and leases under its prefix."""
    agent = _agent("a1")
    await node_registry.register(agent, ttl=10.0)
    assert [a.id for a in await node_registry.agents("echo")] == ["a1"]
    lease = await node_registry.acquire_lease("scheduler", "n1", 10.0)
    assert lease is not None
    await node_registry.release_lease("scheduler", "n1")
    await node_registry.deregister("a1")


async def test_a_redis_viewer_reads_and_cannot_write(
    engines: Engines, node_registry: RedisRegistry
) -> None:
    """The viewer's ACL user reads the registry's keys (an index entry whose record Redis has
    collected, which a node would tidy, is skipped); a write, or another key, is NOPERM."""
    agent = _agent("a2")
    await node_registry.register(agent, ttl=10.0)
    await node_registry.register(_agent("gone"), ttl=10.0)
    admin = redis.asyncio.Redis(host="127.0.0.1", port=engines.redis.port)
    try:  # as if its record expired: the agents index still names it
        await admin.delete(node_registry._agent_key("gone"))
    finally:
        await admin.aclose()
    viewer = RedisRegistry.from_url(_registry_url(engines, "viewer"), clock=FakeClock())
    await viewer.start()
    try:
        assert [a.id for a in await viewer.agents()] == ["a2"]
    finally:
        await viewer.close()
    raw = redis.asyncio.Redis(
        host="127.0.0.1",
        port=engines.redis.port,
        username=engines.user("viewer"),
        password=SECRET,
    )
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await raw.set(f"{engines.tag}:agents", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await raw.get("elsewhere:key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await raw.flushall()
    finally:
        await raw.aclose()


async def test_a_redis_node_user_cannot_leave_its_prefix(engines: Engines) -> None:
    """Even a node may not touch keys outside the registry's prefix, nor run admin commands."""
    raw = redis.asyncio.Redis(
        host="127.0.0.1", port=engines.redis.port, username=engines.user("node"), password=SECRET
    )
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await raw.set("elsewhere:key", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await raw.config_get("*")
    finally:
        await raw.aclose()


# ---------------------------------------------------------------------------- RabbitMQ


def _amqp(engines: Engines, role: str) -> str:
    return f"amqp://{engines.user(role)}:{SECRET}@127.0.0.1:{engines.rabbit.port}/"


def _bus(engines: Engines, role: str, prefix: str | None = None) -> RabbitBus:
    return RabbitBus.from_url(
        f"{_amqp(engines, role)}?prefix={prefix or engines.tag}&reconnect_interval=0.2",
        clock=FakeClock(),
    )


async def test_a_rabbitmq_node_user_publishes_and_consumes_tasks(engines: Engines) -> None:
    """The node's user declares the topology, publishes a task and consumes it."""
    bus = _bus(engines, "node")
    try:
        async with asyncio.timeout(LIMIT):
            await bus.start()
            assert not bus.passive  # it may configure: it declared the topology
            await bus.publish_tasks([OutgoingTask("echo", b"{}", {})])
            tasks = bus.consume_tasks(["echo"], prefetch=1)
            delivery = await anext(tasks)
            await delivery.ack()
            await tasks.aclose()  # type: ignore[attr-defined]
            await bus.publish_control(b'{"kind": "drain"}')
    finally:
        await bus.close()


@pytest.mark.parametrize("role", ["viewer", "operator"])
async def test_a_rabbitmq_viewer_or_operator_follows_events_and_publishes_nothing(
    engines: Engines, role: str
) -> None:
    """Viewers and operators start a bus and follow events, but may not publish a task or a
    control message: the broker refuses."""
    node = _bus(engines, "node")
    bus = _bus(engines, role)
    try:
        async with asyncio.timeout(LIMIT):
            await node.start()
            await bus.start()
            assert bus.passive  # refused "configure": it only checked the topology exists
            events = bus.subscribe_events()
            first = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.5)  # the subscription's queue is bound
            await node.publish_event(b'{"kind": "hello"}')
            assert await first == b'{"kind": "hello"}'
            await events.aclose()  # type: ignore[attr-defined]
        for publish in (
            lambda: bus.publish_tasks([OutgoingTask("echo", b"{}", {})]),
            lambda: bus.publish_control(b'{"kind": "drain"}'),
        ):
            with pytest.raises(AgentdeckError, match=r"ACCESS_REFUSED|access"):
                async with asyncio.timeout(LIMIT):
                    await publish()
    finally:
        await bus.close()
        await node.close()


@pytest.mark.parametrize("role", ["viewer", "operator"])
async def test_a_rabbitmq_viewer_or_operator_may_not_delete_or_redeclare_the_shared_topology(
    engines: Engines, role: str
) -> None:
    """Viewers and operators have no "configure" on the shared names: deleting the reports or
    dead queue or the events exchange, or declaring the reports queue with other arguments,
    is ACCESS_REFUSED, and the queue is still there."""
    node = _bus(engines, "node")
    names = node.names
    refused: list[tuple[str, Any]] = [
        ("delete the reports queue", lambda ch: ch.queue_delete(names.reports)),
        ("delete the dead queue", lambda ch: ch.queue_delete(names.dead)),
        ("delete the events exchange", lambda ch: ch.exchange_delete(names.events)),
        (
            "declare the reports queue as a classic queue",
            lambda ch: ch.declare_queue(
                names.reports, durable=True, arguments={"x-queue-type": "classic"}
            ),
        ),
        (
            "declare the events exchange as fanout",
            lambda ch: ch.declare_exchange(names.events, "fanout", durable=True),
        ),
    ]
    try:
        async with asyncio.timeout(LIMIT):
            await node.start()
            connection = await aio_pika.connect(_amqp(engines, role))
            try:
                for what, action in refused:
                    channel = await connection.channel()  # each refusal closes its channel
                    try:
                        await action(channel)
                    except aiormq.exceptions.ChannelAccessRefused:
                        continue
                    pytest.fail(f"the {role} could {what}")
                channel = await connection.channel()
                for queue in (names.reports, names.dead):  # a passive declare: still there
                    await channel.declare_queue(queue, passive=True)
            finally:
                await connection.close()
            await node.publish_report(b"{}", {})
            reports = node.consume_reports()
            delivery = await anext(reports)
            await delivery.ack()
            await reports.aclose()  # type: ignore[attr-defined]
    finally:
        await node.close()


async def test_a_rabbitmq_viewer_on_a_prefix_no_node_declared_gets_one_clear_error(
    engines: Engines,
) -> None:
    """A viewer may not create the topology: on a prefix no node has declared, start fails
    with one ConfigError saying what is missing and to start a node first."""
    prefix = f"{engines.tag}_none"
    bus = _bus(engines, "viewer", prefix=prefix)
    with pytest.raises(ConfigError, match=rf"prefix '{prefix}' do not exist.*start a node"):
        async with asyncio.timeout(LIMIT):
            await bus.start()
    assert bus.closed


async def test_a_rabbitmq_operator_lists_dead_letters_and_a_viewer_may_not(
    engines: Engines,
) -> None:
    """Listing dead letters reads the dead queue: an operator may, a viewer may not."""
    operator, viewer = _bus(engines, "operator"), _bus(engines, "viewer")
    try:
        async with asyncio.timeout(LIMIT):
            await operator.start()
            assert await operator.dead_letters() == []
            await viewer.start()
        with pytest.raises(AgentdeckError, match=r"ACCESS_REFUSED|access"):
            async with asyncio.timeout(LIMIT):
                await viewer.dead_letters()
    finally:
        await operator.close()
        await viewer.close()


# -------------------------------------------------------------------------- PostgreSQL


async def test_postgres_logins_are_members_of_their_role(engines: Engines) -> None:
    """Each login is a member of its group role and of no other agentdeck role."""
    conn = await asyncpg.connect(engines.database)
    try:
        for role in ("viewer", "operator", "node"):
            held = await conn.fetch(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY($2::text[]) "
                "AND pg_has_role($1, oid, 'MEMBER')",
                engines.user(role),
                list(schema.ROLES),
            )
            assert [r["rolname"] for r in held] == [f"agentdeck_{role}"]
    finally:
        await conn.close()


async def test_a_postgres_viewer_login_is_refused_a_command(engines: Engines) -> None:
    """The viewer login made by the playbook reads, and its command is refused by name."""
    parts = urlsplit(engines.database)
    url = (
        f"postgresql://{engines.user('viewer')}:{SECRET}@{parts.hostname}:{parts.port}{parts.path}"
    )
    async with PostgresStore.from_url(url, clock=FakeClock()) as store:
        await store.migrate()
        assert await store.list_workflows() == []
        with pytest.raises(AgentdeckError, match="may not pause: it is read-only"):
            await store.add_command(Command(new_id(), "pause", "wf", 1.0))
