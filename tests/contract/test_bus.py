"""The Bus contract, run against every bus backend.

Written against core.ports.Bus only: a new engine is one more URL in ``BUS_URLS``. Queue names
and bodies are unique per test, so a shared broker's leftovers cannot leak between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import pytest

from agentdeck.backends import open_bus
from agentdeck.backends.memory import MemoryBus
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import BackendUnavailable, ConfigError, NotFound
from agentdeck.core.models import new_id
from agentdeck.core.ports import Bus, Delivery, OutgoingTask
from tests.conftest import require_service

pytestmark = pytest.mark.contract

T = TypeVar("T")

BUS_URLS = [
    pytest.param("memory://", id="memory"),
    pytest.param("amqp://guest:guest@127.0.0.1:5672/", id="rabbitmq"),
]

#: How long "nothing arrives" is watched for. Long enough for a networked broker to have
#: delivered; a bug makes such a check pass wrongly at worst, never fail wrongly.
QUIET = 0.05
#: Upper bound on anything that should happen; hitting it means a bug, not a slow machine.
LIMIT = 2.0
#: How long a test that needs every consumer registered with the broker waits for that.
SETTLE = 0.5


@pytest.fixture(params=BUS_URLS)
async def bus(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Bus]:
    """A started bus of each backend, closed after the test. A broker's bus works under a
    prefix of its own, whose queues and exchanges are deleted after the test."""
    url = request.param
    if url.startswith("amqp://"):
        require_service("RabbitMQ", "127.0.0.1", 5672)
        url += f"?prefix=contract-{new_id()}"
    instance = open_bus(url, clock=clock)
    await instance.start()
    yield instance
    await instance.close()
    delete_topology = getattr(instance, "delete_topology", None)
    if delete_topology is not None:
        await delete_topology()


@pytest.fixture
def cap() -> str:
    """A capability name no other test uses."""
    return f"cap-{new_id()}"


def body(cap: str, n: int) -> bytes:
    """A body unique to this test and position."""
    return f"{cap}:{n}".encode()


async def publish(bus: Bus, cap: str, *numbers: int, headers: dict[str, str] | None = None) -> None:
    """Publish ``body(cap, n)`` for each n, in order."""
    await bus.publish_tasks([OutgoingTask(cap, body(cap, n), headers or {}) for n in numbers])


class Reader(Generic[T]):
    """Reads a consumer or subscription, and can tell that nothing arrives without ending it.

    ``anext`` runs in a background task: cancelling it on a timeout would end the consumer.
    """

    def __init__(self, iterator: AsyncIterator[T]) -> None:
        self.iterator = iterator
        self._next: asyncio.Task[T] | None = None

    async def take(self) -> T:
        """The next item, failing the test instead of hanging."""
        task = self._pending()
        try:
            return await asyncio.wait_for(task, LIMIT)
        finally:
            self._next = None

    async def nothing_arrives(self, quiet: float = QUIET) -> bool:
        """True if no item comes within ``quiet`` seconds (a later ``take`` still gets it)."""
        done, _ = await asyncio.wait({self._pending()}, timeout=quiet)
        return not done

    async def close(self) -> None:
        """Stop waiting, and close the iterator as a consumer leaving would."""
        if self._next is not None and not self._next.done():
            self._next.cancel()
            await asyncio.gather(self._next, return_exceptions=True)
        aclose: Callable[[], Awaitable[None]] | None = getattr(self.iterator, "aclose", None)
        if aclose is not None:
            await aclose()

    def _pending(self) -> asyncio.Task[T]:
        if self._next is None:
            self._next = asyncio.ensure_future(_next(self.iterator))
        return self._next


async def _next(iterator: AsyncIterator[T]) -> T:
    return await anext(iterator)


@contextlib.asynccontextmanager
async def reading(iterator: AsyncIterator[T]) -> AsyncIterator[Reader[T]]:
    """A Reader over ``iterator``, closed on the way out."""
    reader = Reader(iterator)
    try:
        yield reader
    finally:
        await reader.close()


async def drain(reader: Reader[Delivery], count: int) -> list[bytes]:
    """Take and ack ``count`` deliveries; their bodies in arrival order."""
    bodies = []
    for _ in range(count):
        delivery = await reader.take()
        bodies.append(delivery.body)
        await delivery.ack()
    return bodies


async def share(consumers: Sequence[AsyncIterator[Delivery]], total: int) -> list[list[bytes]]:
    """Run the consumers side by side, acking everything, until ``total`` messages arrived;
    the bodies each one got."""
    got: list[list[bytes]] = [[] for _ in consumers]
    all_in = asyncio.Event()

    async def work(mine: list[bytes], consumer: AsyncIterator[Delivery]) -> None:
        async for delivery in consumer:
            mine.append(delivery.body)
            await delivery.ack()
            await asyncio.sleep(0)  # let the others run, as real work would
            if sum(map(len, got)) >= total:
                all_in.set()

    workers = [asyncio.create_task(work(mine, c)) for mine, c in zip(got, consumers, strict=True)]
    try:
        await asyncio.wait_for(all_in.wait(), LIMIT)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return got


# ------------------------------------------------------------------------------------ tasks


async def test_task_reaches_a_consumer_with_its_body_and_headers(bus: Bus, cap: str) -> None:
    """A published task is delivered with its body and headers, not marked redelivered."""
    await publish(bus, cap, 1, headers={"traceparent": "00-abc-def-01"})
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        delivery = await consumer.take()
        assert delivery.body == body(cap, 1)
        assert delivery.headers["traceparent"] == "00-abc-def-01"
        assert delivery.redelivered is False
        await delivery.ack()


async def test_tasks_of_one_capability_arrive_in_publish_order(bus: Bus, cap: str) -> None:
    """One consumer sees one capability's messages in the order they were published."""
    await publish(bus, cap, *range(5))
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        assert await drain(consumer, 5) == [body(cap, n) for n in range(5)]


async def test_consumer_gets_only_its_capabilities(bus: Bus, cap: str) -> None:
    """A message for another capability is not delivered to this consumer."""
    await publish(bus, f"{cap}-other", 1)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        assert await consumer.nothing_arrives()
        await publish(bus, cap, 2)
        assert (await consumer.take()).body == body(cap, 2)


async def test_competing_consumers_share_the_work_and_each_message_goes_to_one(
    bus: Bus, cap: str
) -> None:
    """Two consumers of one capability each get a share, and every message exactly once."""
    total = 20
    await publish(bus, cap, *range(total))
    async with (
        reading(bus.consume_tasks([cap], prefetch=1)) as first,
        reading(bus.consume_tasks([cap], prefetch=1)) as second,
    ):
        got = await share([first.iterator, second.iterator], total)
    assert sorted(got[0] + got[1]) == sorted(body(cap, n) for n in range(total))
    assert got[0]
    assert got[1]


async def test_waiting_consumers_take_turns(bus: Bus, cap: str) -> None:
    """Messages published while several consumers wait with free slots go round-robin."""
    async with (
        reading(bus.consume_tasks([cap], prefetch=5)) as first,
        reading(bus.consume_tasks([cap], prefetch=5)) as second,
    ):
        # Long enough for both to be registered with a broker on a busy machine: a consumer
        # the broker does not know yet gets no turn (seen in CI with the 50 ms default).
        assert await first.nothing_arrives(SETTLE)
        assert await second.nothing_arrives(SETTLE)
        await publish(bus, cap, 1, 2, 3, 4)
        got = [await first.take(), await second.take(), await first.take(), await second.take()]
        assert sorted(d.body for d in got) == [body(cap, n) for n in (1, 2, 3, 4)]


async def test_prefetch_bounds_unacked_deliveries(bus: Bus, cap: str) -> None:
    """With prefetch 2 a third message waits until one of the first two is acked."""
    await publish(bus, cap, 1, 2, 3)
    async with reading(bus.consume_tasks([cap], prefetch=2)) as consumer:
        first = await consumer.take()
        await consumer.take()
        assert await consumer.nothing_arrives()
        await first.ack()
        assert (await consumer.take()).body == body(cap, 3)


async def test_prefetch_is_shared_by_all_capabilities_of_a_consumer(bus: Bus, cap: str) -> None:
    """Prefetch bounds a consumer's unacked messages across all its capabilities together."""
    other = f"{cap}-other"
    await publish(bus, cap, 1)
    await publish(bus, other, 2)
    async with reading(bus.consume_tasks([cap, other], prefetch=1)) as consumer:
        first = await consumer.take()
        assert await consumer.nothing_arrives()
        await first.ack()
        second = await consumer.take()
        assert {first.body, second.body} == {body(cap, 1), body(other, 2)}


async def test_consumer_takes_turns_between_its_capabilities(bus: Bus, cap: str) -> None:
    """A backlog on one capability does not starve the consumer's other capability."""
    other = f"{cap}-other"
    await publish(bus, cap, *range(10))
    await publish(bus, other, 100)
    async with reading(bus.consume_tasks([cap, other], prefetch=1)) as consumer:
        assert body(other, 100) in await drain(consumer, 3)


async def test_acked_message_is_not_delivered_again(bus: Bus, cap: str) -> None:
    """After an ack, no consumer sees the message again."""
    await publish(bus, cap, 1)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        await drain(consumer, 1)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        assert await consumer.nothing_arrives()


async def test_requeued_message_comes_back_first_marked_redelivered(bus: Bus, cap: str) -> None:
    """A requeued message is delivered again before later ones, with redelivered set."""
    await publish(bus, cap, 1, 2)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        await (await consumer.take()).requeue()
        again = await consumer.take()
        assert (again.body, again.redelivered) == (body(cap, 1), True)
        await again.ack()
        assert (await consumer.take()).body == body(cap, 2)


async def test_rejected_message_is_dead_lettered_and_not_redelivered(bus: Bus, cap: str) -> None:
    """A rejected message is listed as a dead letter with its queue and reason, and is not
    delivered again."""
    await publish(bus, cap, 1)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        await (await consumer.take()).reject("malformed: not JSON")
        assert await consumer.nothing_arrives()
    (letter,) = [d for d in await bus.dead_letters() if d.body == body(cap, 1)]
    assert letter.reason == "malformed: not JSON"
    assert cap in letter.queue


async def test_dead_letters_are_listed_newest_first_up_to_the_limit(bus: Bus, cap: str) -> None:
    """dead_letters(limit) returns the newest letters first, no more than the limit."""
    await publish(bus, cap, 1, 2, 3)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        for _ in range(3):
            await (await consumer.take()).reject("bad")
    assert [d.body for d in await bus.dead_letters(limit=2)] == [body(cap, 3), body(cap, 2)]


async def test_requeued_dead_letter_is_delivered_again_and_leaves_the_list(
    bus: Bus, cap: str
) -> None:
    """requeue_dead_letter puts the message, headers included, back on its queue and takes it
    off the dead-letter list."""
    await publish(bus, cap, 1, headers={"traceparent": "tp"})
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        await (await consumer.take()).reject("bad")
        (letter,) = [d for d in await bus.dead_letters() if d.body == body(cap, 1)]
        await bus.requeue_dead_letter(letter.id)
        again = await consumer.take()
        assert (again.body, again.headers["traceparent"]) == (body(cap, 1), "tp")
        await again.ack()
    assert letter.id not in [d.id for d in await bus.dead_letters()]


async def test_requeueing_an_unknown_dead_letter_raises_not_found(bus: Bus) -> None:
    """An unknown dead-letter id raises NotFound."""
    with pytest.raises(NotFound):
        await bus.requeue_dead_letter("no-such-letter")


async def test_closing_a_consumer_returns_its_unacked_messages_as_redelivered(
    bus: Bus, cap: str
) -> None:
    """Messages a closed consumer had not settled go to the next consumer, in their order,
    marked redelivered."""
    await publish(bus, cap, 1, 2)
    async with reading(bus.consume_tasks([cap], prefetch=2)) as consumer:
        await consumer.take()
        await consumer.take()
    async with reading(bus.consume_tasks([cap], prefetch=2)) as consumer:
        again = [await consumer.take(), await consumer.take()]
        assert [(d.body, d.redelivered) for d in again] == [
            (body(cap, 1), True),
            (body(cap, 2), True),
        ]


async def test_cancelling_a_waiting_consumer_returns_its_unacked_messages(
    bus: Bus, cap: str
) -> None:
    """A consumer task cancelled while waiting for more gives back what it held, redelivered."""
    await publish(bus, cap, 1)
    holding = asyncio.Event()

    async def hold_one_and_wait_for_more() -> None:
        consumer = bus.consume_tasks([cap], prefetch=2)
        await anext(consumer)
        holding.set()
        await anext(consumer)  # only one message exists: waits until cancelled

    task = asyncio.create_task(hold_one_and_wait_for_more())
    await asyncio.wait_for(holding.wait(), LIMIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        again = await consumer.take()
        assert (again.body, again.redelivered) == (body(cap, 1), True)


async def test_settling_twice_is_harmless(bus: Bus, cap: str) -> None:
    """A second ack, reject or requeue of a settled delivery does nothing."""
    await publish(bus, cap, 1, 2)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        first = await consumer.take()
        await first.ack()
        await first.ack()
        await first.reject("late")
        await first.requeue()
        assert await drain(consumer, 1) == [body(cap, 2)]
        assert await consumer.nothing_arrives()
    assert body(cap, 1) not in [d.body for d in await bus.dead_letters()]


async def test_settling_after_the_consumer_closed_does_not_lose_the_message(
    bus: Bus, cap: str
) -> None:
    """An ack arriving after its consumer closed cannot undo the message's return to the queue."""
    await publish(bus, cap, 1)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        late = await consumer.take()
    await late.ack()
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        assert (await consumer.take()).body == body(cap, 1)


async def test_closing_the_bus_ends_consumers_and_subscribers(bus: Bus, cap: str) -> None:
    """close() makes every waiting consumer and subscriber iterator finish cleanly."""
    readers: list[Reader[Any]] = [
        Reader(bus.consume_tasks([cap], prefetch=1)),
        Reader(bus.subscribe_events()),
        Reader(bus.subscribe_control()),
    ]
    for reader in readers:
        assert await reader.nothing_arrives()
    await bus.close()
    for reader in readers:
        with pytest.raises(StopAsyncIteration):
            await reader.take()


# ---------------------------------------------------------------------------------- reports


async def test_report_is_delivered_with_its_headers(bus: Bus) -> None:
    """A published report reaches the report consumer with its body and headers."""
    report = f"report-{new_id()}".encode()
    await bus.publish_report(report, {"traceparent": "tp"})
    async with reading(bus.consume_reports()) as reports:
        delivery = await reports.take()
        assert (delivery.body, delivery.headers["traceparent"]) == (report, "tp")
        await delivery.ack()


async def test_each_report_goes_to_exactly_one_report_consumer(bus: Bus) -> None:
    """Report consumers form one group: every report reaches one of them, never both."""
    reports = [f"report-{new_id()}".encode() for _ in range(6)]
    for report in reports:
        await bus.publish_report(report, {})
    async with reading(bus.consume_reports()) as first, reading(bus.consume_reports()) as second:
        got = await share([first.iterator, second.iterator], len(reports))
        assert sorted(got[0] + got[1]) == sorted(reports)


# ---------------------------------------------------------------------------------- fan-out


async def test_events_fan_out_to_every_subscriber(bus: Bus) -> None:
    """Each current subscriber receives every event, in order."""
    async with reading(bus.subscribe_events()) as first, reading(bus.subscribe_events()) as second:
        await bus.publish_event(b"e1")
        await bus.publish_event(b"e2")
        for subscriber in (first, second):
            assert [await subscriber.take(), await subscriber.take()] == [b"e1", b"e2"]


async def test_late_event_subscriber_misses_earlier_events(bus: Bus) -> None:
    """Events are not stored: a subscriber sees only events published after it subscribed."""
    await bus.publish_event(b"before")
    async with reading(bus.subscribe_events()) as late:
        await bus.publish_event(b"after")
        assert await late.take() == b"after"


async def test_control_fans_out_to_every_subscriber(bus: Bus) -> None:
    """Each current control subscriber receives every control message; events stay separate."""
    async with (
        reading(bus.subscribe_control()) as first,
        reading(bus.subscribe_control()) as second,
        reading(bus.subscribe_events()) as events,
    ):
        await bus.publish_control(b"drain *")
        assert await first.take() == b"drain *"
        assert await second.take() == b"drain *"
        assert await events.nothing_arrives()


async def test_closed_subscription_ends_and_others_keep_receiving(bus: Bus) -> None:
    """Closing one subscription ends it without disturbing the others."""
    async with reading(bus.subscribe_events()) as staying:
        async with reading(bus.subscribe_events()) as leaving:
            pass
        with pytest.raises(StopAsyncIteration):
            await leaving.take()
        await bus.publish_event(b"e")
        assert await staying.take() == b"e"


# ------------------------------------------------------------------------- MemoryBus only


async def test_memory_slow_subscriber_drops_oldest_and_publisher_never_waits(
    clock: FakeClock,
) -> None:
    """A subscriber whose buffer is full loses its oldest events; publishing does not block."""
    bus = MemoryBus(clock=clock, subscriber_buffer=3)
    async with reading(bus.subscribe_events()) as slow:
        for n in range(5):
            await asyncio.wait_for(bus.publish_event(b"%d" % n), LIMIT)
        assert [await slow.take() for _ in range(3)] == [b"2", b"3", b"4"]
        assert getattr(slow.iterator, "dropped", None) == 2


async def test_memory_dead_letter_records_the_clock_time(clock: FakeClock, cap: str) -> None:
    """A dead letter is stamped with the bus clock's time."""
    bus = MemoryBus(clock=clock)
    await publish(bus, cap, 1)
    async with reading(bus.consume_tasks([cap], prefetch=1)) as consumer:
        clock.advance(42)
        await (await consumer.take()).reject("bad")
    (letter,) = await bus.dead_letters()
    assert letter.at == clock.now()


async def test_memory_bus_is_not_durable_and_refuses_publishing_once_closed(
    clock: FakeClock, cap: str
) -> None:
    """MemoryBus says it is not durable, and publishing after close raises BackendUnavailable."""
    bus = MemoryBus(clock=clock)
    assert bus.durable is False
    await bus.close()
    with pytest.raises(BackendUnavailable):
        await publish(bus, cap, 1)


@pytest.mark.parametrize("bad", [0, -1])
def test_memory_consumer_needs_a_positive_prefetch(clock: FakeClock, bad: int) -> None:
    """consume_tasks refuses a prefetch below 1 when called, naming the value."""
    with pytest.raises(ValueError, match=f"prefetch must be at least 1, got {bad}"):
        MemoryBus(clock=clock).consume_tasks(["echo"], prefetch=bad)


# ------------------------------------------------------------------------------ URL choice


def test_open_bus_rejects_an_unknown_scheme_listing_the_known_ones(clock: FakeClock) -> None:
    """An unknown scheme is a ConfigError naming the field, the scheme and the known ones."""
    with pytest.raises(ConfigError) as caught:
        open_bus("kafka://broker:9092", clock=clock)
    message = str(caught.value)
    assert "bus_url" in message
    assert "'kafka'" in message
    assert "memory://" in message
    assert "amqp://" in message


def test_open_bus_never_shows_the_password(clock: FakeClock) -> None:
    """Errors about a URL show it with the password masked."""
    with pytest.raises(ConfigError) as caught:
        open_bus("memory://guest:s3cret@somewhere", clock=clock)
    assert "s3cret" not in str(caught.value)
    assert "guest:***@somewhere" in str(caught.value)


def test_open_bus_without_a_scheme_says_it_is_not_a_url(clock: FakeClock) -> None:
    """A value with no scheme is reported as not a URL."""
    with pytest.raises(ConfigError, match="bus_url: 'localhost' is not a URL"):
        open_bus("localhost", clock=clock)
