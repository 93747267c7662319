"""The backend reconnect counter against a real broker event: RabbitMQ closing our connections.

The shared broker is never restarted here: ``rabbitmqctl close_connection`` closes only the
connections this test opened, found by the unique connection name it gave them.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections.abc import AsyncIterator

import pytest

from agentdeck.backends.rabbitmq import RabbitBus
from agentdeck.core.clock import FakeClock
from agentdeck.core.metrics import Metrics
from agentdeck.core.models import new_id
from tests.conftest import IN_CI, require_service
from tests.integration.test_rabbitmq import (
    AIORMQ_WRITER_LEAK,
    BROKER,
    HOST,
    LIMIT,
    PORT,
    RESTART_LIMIT,
    publish,
    take,
)

pytestmark = pytest.mark.integration


async def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl -q args`` (bounded) and its output; skips where it cannot run, except in CI."""
    path = shutil.which("rabbitmqctl")
    if path is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is not installed")
        pytest.skip("rabbitmqctl is not installed")
    process = await asyncio.create_subprocess_exec(
        path, "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(RESTART_LIMIT):
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        message = f"rabbitmqctl {' '.join(args)} failed: {text}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return text


async def connections_named(name: str) -> list[str]:
    """The broker's process ids of the connections whose client named them ``name``."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties")
    needle = f'{{"connection_name","{name}"}}'
    return [line.split("\t", 1)[0] for line in listing.splitlines() if needle in line]


@pytest.fixture
async def bus(clock: FakeClock) -> AsyncIterator[tuple[RabbitBus, str]]:
    """A started bus on a fresh prefix whose connections carry a name no one else uses."""
    require_service("RabbitMQ", HOST, PORT)
    prefix = f"test-{new_id()}"
    name = f"agentdeck-{prefix}"
    bus = RabbitBus.from_url(f"{BROKER}?prefix={prefix}&name={name}", clock=clock)
    async with asyncio.timeout(LIMIT):
        await bus.start()
    yield bus, name
    async with asyncio.timeout(LIMIT):
        await bus.close()
    async with asyncio.timeout(LIMIT):
        await bus.delete_topology()


@pytest.mark.filterwarnings(AIORMQ_WRITER_LEAK)
async def test_a_connection_the_broker_closes_is_restored_and_counted(
    bus: tuple[RabbitBus, str],
) -> None:
    """The broker closes our connections: the bus reconnects, works again, and every live
    Metrics counts one ``agentdeck_backend_reconnects_total{backend="rabbitmq"}`` each."""
    rabbit, name = bus
    metrics = Metrics()
    consumer = rabbit.consume_tasks(["echo"], prefetch=1)
    await publish(rabbit, "echo", "before")
    first = await take(consumer)
    assert first.body == b"before"
    await first.ack()
    pids = await connections_named(name)
    assert pids, f"no connection named {name} on the broker"

    def reconnects() -> float:
        sample = metrics.registry.get_sample_value(
            "agentdeck_backend_reconnects_total", {"backend": "rabbitmq"}
        )
        return sample or 0.0

    assert reconnects() == 0
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "agentdeck test: reconnect counter")
    async with asyncio.timeout(RESTART_LIMIT):
        while reconnects() < len(pids):
            await asyncio.sleep(0.05)
    assert reconnects() == len(pids)
    await publish(rabbit, "echo", "after")
    delivery = await take(consumer, RESTART_LIMIT)  # the same consumer goes on
    assert delivery.body == b"after"
    await delivery.ack()
    assert len(await connections_named(name)) == len(pids)
    gc.collect()  # report the driver's leaked writers here, where they are expected
