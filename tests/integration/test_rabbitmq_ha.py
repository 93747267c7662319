"""RabbitBus with several brokers in its URL (``amqp://u:p@h1:5672,h2:5672/``), on 127.0.0.1.

One real broker runs here, so the second "node" is the same broker and a node dying is played
by :class:`Proxy`, a TCP proxy to it that the test stops: every connection through it drops and
nothing answers on its port any more, which is what clients of a dead cluster node see.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator

import pytest

from agentdeck.backends.rabbitmq import RabbitBus
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.models import new_id
from tests.conftest import require_service
from tests.integration.test_rabbitmq import AIORMQ_WRITER_LEAK, HOST, LIMIT, PORT, publish, take

pytestmark = pytest.mark.integration

LIVE = f"{HOST}:{PORT}"


def dead_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once by us, then freed)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


class Proxy:
    """A TCP proxy from a free port on 127.0.0.1 to the broker; :meth:`stop` closes its port
    and every connection through it."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, PORT)
        self._writers += [writer, upstream_writer]
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.ensure_future(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """A running proxy to the broker, stopped after the test if the test did not."""
    require_service("RabbitMQ", HOST, PORT)
    running = Proxy()
    await running.start()
    yield running
    if running._server is not None and running._server.is_serving():
        await running.stop()


@contextlib.asynccontextmanager
async def started(url: str, clock: FakeClock) -> AsyncIterator[RabbitBus]:
    """A started bus on ``url``; closed and its queues deleted after."""
    bus = RabbitBus.from_url(url, clock=clock, publish_timeout=LIMIT)
    async with asyncio.timeout(LIMIT):
        await bus.start()
    try:
        yield bus
    finally:
        async with asyncio.timeout(LIMIT):
            await bus.close()
            await bus.delete_topology()


async def test_a_dead_first_broker_is_skipped_for_a_live_one(clock: FakeClock) -> None:
    """With a dead port listed first, the bus connects to the next broker and works."""
    require_service("RabbitMQ", HOST, PORT)
    url = f"amqp://guest:guest@{HOST}:{dead_port()},{LIVE}/?prefix=test-{new_id()}"
    async with started(url, clock) as bus:
        assert bus.brokers == {"publisher": LIVE, "consumer": LIVE}
        await publish(bus, "ha", "one")
        delivery = await take(bus.consume_tasks(["ha"], 1))
        assert delivery.body == b"one"
        await delivery.ack()


@pytest.mark.filterwarnings(AIORMQ_WRITER_LEAK)
async def test_the_bus_fails_over_when_its_broker_goes_away(clock: FakeClock, proxy: Proxy) -> None:
    """When the broker it is connected to dies, the bus reconnects to the next one: a publish
    made meanwhile is delivered, and the unacked message comes back, redelivered."""
    via = f"{HOST}:{proxy.port}"
    url = f"amqp://guest:guest@{via},{LIVE}/?prefix=test-{new_id()}&reconnect_interval=0.1"
    async with started(url, clock) as bus:
        assert bus.brokers == {"publisher": via, "consumer": via}
        await publish(bus, "ha", "one")
        tasks = bus.consume_tasks(["ha"], 10)
        assert (await take(tasks)).body == b"one"  # held, unacked, when the node dies

        await proxy.stop()
        await publish(bus, "ha", "two")  # waits for the reconnection, to the live broker
        got = [await take(tasks), await take(tasks)]

        assert sorted((d.body, d.redelivered) for d in got) == [(b"one", True), (b"two", False)]
        for delivery in got:
            await delivery.ack()
        assert bus.brokers == {"publisher": LIVE, "consumer": LIVE}
        await tasks.aclose()
    gc.collect()  # report the driver's leaked writers here, where they are expected


async def test_no_live_broker_fails_start_naming_every_broker_without_the_password(
    clock: FakeClock,
) -> None:
    """When no broker of the list answers, start() fails with one line naming each of them."""
    first, second = dead_port(), dead_port()
    bus = RabbitBus.from_url(
        f"amqp://agent:s3cret-pw@{HOST}:{first},{HOST}:{second}/prod?prefix=x",
        clock=clock,
        connect_attempts=2,
    )
    with pytest.raises(BackendUnavailable) as caught:
        async with asyncio.timeout(LIMIT):
            await bus.start()
    message = str(caught.value)
    assert f"{HOST}:{first},{HOST}:{second}/prod is unreachable after 2 attempt(s)" in message
    assert f"{HOST}:{first}: " in message and f"{HOST}:{second}: " in message
    assert "s3cret" not in message
    assert "\n" not in message
