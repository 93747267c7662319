"""In-process backends: ``MemoryBus`` and ``MemoryRegistry`` (``memory://``).

They are the embedded default and the reference for the contract suite, so they behave like
their networked siblings (RabbitMQ, Redis) wherever a single process can:

- task and report queues hand each message to exactly one consumer, round-robin among the
  consumers with free prefetch slots, and take back what a closed consumer had not acked;
- events and control messages fan out to the subscribers present at publish time;
- registry records expire by the injected clock, so tests move time instead of sleeping.

Nothing here survives the process (``MemoryBus.durable`` is False).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Self
from urllib.parse import urlsplit

from agentdeck.core.clock import Clock
from agentdeck.core.errors import BackendUnavailable, ConfigError, NotFound
from agentdeck.core.models import AgentRecord, AgentState, new_id
from agentdeck.core.ports import BreakerRecord, DeadLetter, Delivery, Lease, OutgoingTask
from agentdeck.core.settings import redact_url

REPORTS_QUEUE = "reports"
#: How many reports a report consumer may hold unacked: the scheduler collects them in an
#: inbox and acks each once the Store has applied it, so this bounds one round's batch.
REPORT_PREFETCH = 256


def task_queue(capability: str) -> str:
    """The name of the queue that holds the task messages of ``capability``."""
    return f"tasks.{capability}"


def check_memory_url(url: str) -> None:
    """Accept ``memory://`` (nothing after it); raise ConfigError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "memory" or parts.netloc or parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            f"expected 'memory://' with no host, path or options, got {redact_url(url)!r}"
        )


def check_ttl(ttl: float) -> None:
    """Raise ValueError unless ``ttl`` is a positive number of seconds."""
    if not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")


# ---------------------------------------------------------------------------------------- bus


@dataclass(slots=True, eq=False)
class _Message:
    body: bytes
    headers: dict[str, str]
    redelivered: bool = False


@dataclass(slots=True, eq=False)
class _Queue:
    """Ready messages in order, and the consumers that take turns at them."""

    name: str
    messages: deque[_Message] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)
    turn: int = 0

    def next_consumer_with_room(self) -> _Consumer | None:
        """The next consumer in round-robin order that has a free prefetch slot."""
        count = len(self.consumers)
        for step in range(count):
            index = (self.turn + step) % count
            consumer = self.consumers[index]
            if consumer.has_room():
                self.turn = index + 1
                return consumer
        return None


@dataclass(slots=True, eq=False)
class _Consumer:
    """One ``consume_tasks``/``consume_reports`` iterator: its queues and what it holds.

    ``outstanding`` is every delivery handed to it and not settled yet, both those waiting in
    ``ready`` and those already yielded; prefetch bounds the lot, as a broker does.
    """

    queues: list[_Queue]
    prefetch: int
    outstanding: dict[MemoryDelivery, None] = field(default_factory=dict)
    ready: deque[MemoryDelivery] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    turn: int = 0

    def has_room(self) -> bool:
        return len(self.outstanding) < self.prefetch

    def give(self, delivery: MemoryDelivery) -> None:
        self.outstanding[delivery] = None
        self.ready.append(delivery)
        self.wakeup.set()


class MemoryDelivery:
    """A message held by one consumer until it is acked, rejected or requeued.

    Settling twice is harmless: only the first call counts. Settling after the consumer closed
    does nothing, because closing already gave the message back to its queue.
    """

    def __init__(self, bus: MemoryBus, consumer: _Consumer, queue: _Queue, message: _Message):
        self._bus, self._consumer, self._queue, self._message = bus, consumer, queue, message
        self.body: bytes = message.body
        self.headers: Mapping[str, str] = message.headers
        self.redelivered: bool = message.redelivered
        self.settled = False
        self.seen = False
        """True once the consumer's code has been given it (so a return counts as redelivery)."""

    @property
    def queue(self) -> str:
        """The queue the message came from."""
        return self._queue.name

    async def ack(self) -> None:
        """Settle the message as done; it is gone for good."""
        if self._settle():
            self._bus._fill(self._consumer)

    async def reject(self, reason: str) -> None:
        """Move the message to the dead letters with ``reason``; it is not redelivered."""
        if self._settle():
            self._bus._dead_letter(self._queue.name, self._message, reason)
            self._bus._fill(self._consumer)

    async def requeue(self) -> None:
        """Put the message back at the front of its queue, marked redelivered."""
        if self._settle():
            self._message.redelivered = True
            self._queue.messages.appendleft(self._message)
            self._bus._dispatch(self._queue)
            self._bus._fill(self._consumer)

    def _settle(self) -> bool:
        """Mark settled; False if it already was (a second call does nothing)."""
        if self.settled:
            return False
        self.settled = True
        self._consumer.outstanding.pop(self, None)
        return True

    def __repr__(self) -> str:
        return (
            f"<MemoryDelivery queue={self.queue} redelivered={self.redelivered}"
            f" settled={self.settled}>"
        )


class _Subscription:
    """A fan-out subscriber: a bounded buffer that drops its oldest entry when full.

    The bus keeps subscriptions in a WeakSet, so one dropped without ``aclose`` stops
    receiving as soon as it is garbage, instead of buffering forever.
    """

    def __init__(self, bus: MemoryBus, subscribers: weakref.WeakSet[_Subscription], size: int):
        self._bus = bus
        self._subscribers = subscribers
        self._buffer: deque[bytes] = deque(maxlen=size)
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """How many messages this subscriber lost because it fell behind."""
        subscribers.add(self)

    def push(self, body: bytes) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(body)
        self._wakeup.set()

    def end(self) -> None:
        self._closed = True
        self._subscribers.discard(self)
        self._wakeup.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        while not self._buffer:
            if self._closed or self._bus.closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._closed or self._bus.closed:
            raise StopAsyncIteration
        return self._buffer.popleft()

    async def aclose(self) -> None:
        """Stop receiving; the iterator ends."""
        self.end()


class MemoryBus:
    """The in-process message bus (implements :class:`core.ports.Bus`; not durable).

    Queues are created on first use and keep messages until a consumer takes them.
    ``subscriber_buffer`` bounds each event/control subscriber: a subscriber that falls that
    far behind loses its oldest messages (counted in its ``dropped``) and publishers never
    wait for it. ``max_dead_letters`` bounds the dead letters kept, oldest dropped first.
    Use it from one event loop (it is not thread-safe, and needs no locks on one loop).
    """

    durable = False

    def __init__(
        self, *, clock: Clock, subscriber_buffer: int = 1000, max_dead_letters: int = 10_000
    ) -> None:
        if subscriber_buffer < 1 or max_dead_letters < 1:
            raise ValueError(
                "subscriber_buffer and max_dead_letters must be at least 1, got "
                f"{subscriber_buffer!r} and {max_dead_letters!r}"
            )
        self._clock = clock
        self._subscriber_buffer = subscriber_buffer
        self._max_dead_letters = max_dead_letters
        self._queues: dict[str, _Queue] = {}
        self._consumers: list[_Consumer] = []
        self._events: weakref.WeakSet[_Subscription] = weakref.WeakSet()
        self._control: weakref.WeakSet[_Subscription] = weakref.WeakSet()
        # Dead letters keep their headers (the port's DeadLetter has none) for requeueing.
        self._dead: OrderedDict[str, tuple[DeadLetter, dict[str, str]]] = OrderedDict()
        self.closed = False
        self.published = 0

    @classmethod
    def from_url(cls, url: str, *, clock: Clock) -> Self:
        """A bus for ``memory://``."""
        check_memory_url(url)
        return cls(clock=clock)

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """End every consumer and subscriber iterator; unacked messages go back to their queues."""
        self.closed = True
        for consumer in list(self._consumers):
            self._detach(consumer)
            consumer.wakeup.set()
        for subscription in [*self._events, *self._control]:
            subscription.end()

    # -- queues

    async def publish_tasks(self, messages: Sequence[OutgoingTask]) -> None:
        """Append each message to its capability's queue."""
        self._check_open()
        for message in messages:
            self._publish(task_queue(message.capability), message.body, message.headers)

    def consume_tasks(self, capabilities: Sequence[str], prefetch: int) -> AsyncIterator[Delivery]:
        """Deliveries from the capabilities' queues, taking turns between them.

        Registers as a consumer on the first ``__anext__``; closing or cancelling the iterator
        gives its unacked deliveries back (redelivered if its code had seen them).
        """
        if not capabilities:
            raise ValueError("consume_tasks needs at least one capability")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch!r}")
        names = list(dict.fromkeys(task_queue(c) for c in capabilities))
        return self._consume(names, prefetch)

    async def queued(self, capability: str) -> int:
        """The messages in ``capability``'s queue that no consumer holds yet (0 if none)."""
        queue = self._queues.get(task_queue(capability))
        return 0 if queue is None else len(queue.messages)

    async def publish_report(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Append a report to the one reports queue."""
        self._check_open()
        self._publish(REPORTS_QUEUE, body, headers)

    def consume_reports(self) -> AsyncIterator[Delivery]:
        """Reports; several consumers compete for them like task consumers do."""
        return self._consume([REPORTS_QUEUE], REPORT_PREFETCH)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first."""
        newest = islice(reversed(self._dead.values()), max(0, limit))
        return [letter for letter, _ in newest]

    async def requeue_dead_letter(self, letter_id: str) -> None:
        """Put a dead letter back at the end of its queue, marked redelivered. Raises NotFound."""
        self._check_open()
        try:
            letter, headers = self._dead.pop(letter_id)
        except KeyError:
            raise NotFound(f"no dead letter with id {letter_id!r}") from None
        self._publish(letter.queue, letter.body, headers, redelivered=True)

    # -- fan-out

    async def publish_event(self, body: bytes) -> None:
        """Copy the event to every current subscriber's buffer."""
        self._check_open()
        for subscription in list(self._events):
            subscription.push(body)

    def subscribe_events(self) -> AsyncIterator[bytes]:
        """Events published after this call (registered now, not on the first ``__anext__``)."""
        return self._subscribe(self._events)

    async def publish_control(self, body: bytes) -> None:
        """Copy the control message to every current subscriber's buffer."""
        self._check_open()
        for subscription in list(self._control):
            subscription.push(body)

    def subscribe_control(self) -> AsyncIterator[bytes]:
        """Control messages published after this call."""
        return self._subscribe(self._control)

    # -- internals

    def _check_open(self) -> None:
        if self.closed:
            raise BackendUnavailable("the memory bus is closed")

    def _subscribe(self, subscribers: weakref.WeakSet[_Subscription]) -> _Subscription:
        subscription = _Subscription(self, subscribers, self._subscriber_buffer)
        if self.closed:
            subscription.end()
        return subscription

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(name)
        return queue

    def _publish(
        self, name: str, body: bytes, headers: Mapping[str, str], *, redelivered: bool = False
    ) -> None:
        queue = self._queue(name)
        queue.messages.append(_Message(bytes(body), dict(headers), redelivered))
        self.published += 1
        self._dispatch(queue)

    async def _consume(self, names: list[str], prefetch: int) -> AsyncIterator[Delivery]:
        if self.closed:
            return
        consumer = _Consumer([self._queue(n) for n in names], prefetch)
        self._attach(consumer)
        try:
            while True:
                while not consumer.ready and not self.closed:
                    consumer.wakeup.clear()
                    await consumer.wakeup.wait()
                if self.closed:
                    return
                delivery = consumer.ready.popleft()
                delivery.seen = True
                yield delivery
        finally:
            self._detach(consumer)

    def _attach(self, consumer: _Consumer) -> None:
        self._consumers.append(consumer)
        for queue in consumer.queues:
            queue.consumers.append(consumer)
        self._fill(consumer)

    def _detach(self, consumer: _Consumer) -> None:
        """Forget a consumer and give back, in their order, the messages it had not settled."""
        if consumer not in self._consumers:
            return
        self._consumers.remove(consumer)
        for queue in consumer.queues:
            queue.consumers.remove(consumer)
        held = list(consumer.outstanding)
        consumer.outstanding.clear()
        consumer.ready.clear()
        # Walk backwards so appendleft restores the original order at the front of each queue.
        for delivery in reversed(held):
            delivery.settled = True
            if delivery.seen:
                delivery._message.redelivered = True
            delivery._queue.messages.appendleft(delivery._message)
        for queue in consumer.queues:
            self._dispatch(queue)

    def _dispatch(self, queue: _Queue) -> None:
        """Hand the queue's messages to its consumers with free slots, round-robin."""
        while queue.messages:
            consumer = queue.next_consumer_with_room()
            if consumer is None:
                return
            consumer.give(MemoryDelivery(self, consumer, queue, queue.messages.popleft()))

    def _fill(self, consumer: _Consumer) -> None:
        """Fill a consumer's free slots from its queues, one message from each in turn.

        Only this consumer needs considering: after every operation each non-empty queue's
        consumers are full (``_dispatch`` keeps that true), so a slot that frees up here is
        the only place a waiting message can go.
        """
        if consumer not in self._consumers:
            return
        count = len(consumer.queues)
        idle = 0
        while consumer.has_room() and idle < count:
            queue = consumer.queues[consumer.turn % count]
            consumer.turn += 1
            if queue.messages:
                consumer.give(MemoryDelivery(self, consumer, queue, queue.messages.popleft()))
                idle = 0
            else:
                idle += 1

    def _dead_letter(self, queue: str, message: _Message, reason: str) -> None:
        letter = DeadLetter(new_id(), queue, message.body, reason, self._clock.now())
        self._dead[letter.id] = (letter, message.headers)
        while len(self._dead) > self._max_dead_letters:
            self._dead.popitem(last=False)

    def __repr__(self) -> str:
        ready = sum(len(q.messages) for q in self._queues.values())
        return (
            f"<MemoryBus published={self.published} ready={ready}"
            f" consumers={len(self._consumers)} dead_letters={len(self._dead)}"
            f" closed={self.closed}>"
        )


# ----------------------------------------------------------------------------------- registry


def claim_lease(
    current: Lease | None, last_token: int, name: str, holder: str, ttl: float, now: float
) -> Lease | None:
    """The lease after ``holder`` asks for it at ``now``, or None if someone else holds it.

    ``current`` is the stored lease (expired or not; None once released) and ``last_token`` the
    largest token ever handed out for ``name``. The holder of an unexpired lease extends it and
    keeps its token; anyone taking a free or expired lease gets a larger token, so writes of a
    deposed holder can be fenced off. Every registry backend decides with this function.
    """
    if current is not None and now <= current.expires_at:
        if current.holder != holder:
            return None
        return replace(current, expires_at=now + ttl)
    return Lease(name, holder, last_token + 1, now + ttl)


@dataclass(slots=True)
class _AgentEntry:
    record: AgentRecord
    expires_at: float


class MemoryRegistry:
    """The in-process registry (implements :class:`core.ports.Registry`).

    A record expires when ``clock.now()`` passes its ``last_seen`` plus its ttl; ``last_seen`` is
    stamped from this registry's clock on every register and heartbeat.
    """

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._agents: dict[str, _AgentEntry] = {}
        self._breakers: dict[str, BreakerRecord] = {}
        self._leases: dict[str, Lease] = {}
        # Tokens outlive leases: a lease taken after a release or expiry still gets a larger one.
        self._tokens: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str, *, clock: Clock) -> Self:
        """A registry for ``memory://``."""
        check_memory_url(url)
        return cls(clock=clock)

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    # -- agents

    async def register(self, agent: AgentRecord, ttl: float) -> None:
        """Store the record (replacing any with the same id) for ``ttl`` seconds."""
        check_ttl(ttl)
        now = self._clock.now()
        self._agents[agent.id] = _AgentEntry(replace(agent, last_seen=now), now + ttl)

    async def heartbeat(
        self,
        agent_id: str,
        ttl: float,
        *,
        in_flight: int,
        state: AgentState,
        succeeded: int = 0,
        failed: int = 0,
    ) -> bool:
        """Refresh a live record; False if it expired or never existed."""
        check_ttl(ttl)
        entry = self._live(agent_id)
        if entry is None:
            return False
        now = self._clock.now()
        entry.record = replace(
            entry.record,
            last_seen=now,
            in_flight=in_flight,
            state=state,
            succeeded=succeeded,
            failed=failed,
        )
        entry.expires_at = now + ttl
        return True

    async def deregister(self, agent_id: str) -> None:
        """Forget the agent (no error if absent)."""
        self._agents.pop(agent_id, None)

    async def agents(self, capability: str | None = None) -> list[AgentRecord]:
        """Live agents, by name then id."""
        live = [self._live(agent_id) for agent_id in list(self._agents)]
        records = [
            e.record
            for e in live
            if e is not None and (capability is None or capability in e.record.capabilities)
        ]
        return sorted(records, key=lambda r: (r.name, r.id))

    def _live(self, agent_id: str) -> _AgentEntry | None:
        """The agent's entry if it has not expired; an expired one is dropped."""
        entry = self._agents.get(agent_id)
        if entry is not None and self._clock.now() > entry.expires_at:
            del self._agents[agent_id]
            return None
        return entry

    # -- breakers

    async def get_breaker(self, name: str) -> BreakerRecord | None:
        """The breaker's shared state, if any."""
        return self._breakers.get(name)

    async def put_breaker(self, record: BreakerRecord, expected_version: int | None) -> bool:
        """Compare-and-set on the stored version (None: must not exist)."""
        current = self._breakers.get(record.name)
        stored = None if current is None else current.version
        if stored != expected_version:
            return False
        self._breakers[record.name] = record
        return True

    async def breakers(self) -> list[BreakerRecord]:
        """Every breaker, by name."""
        return [self._breakers[name] for name in sorted(self._breakers)]

    # -- leases

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take, extend or be refused the lease (see :func:`claim_lease`)."""
        check_ttl(ttl)
        lease = claim_lease(
            self._leases.get(name), self._tokens.get(name, 0), name, holder, ttl, self._clock.now()
        )
        if lease is not None:
            self._leases[name] = lease
            self._tokens[name] = lease.token
        return lease

    async def release_lease(self, name: str, holder: str) -> None:
        """Drop the lease if ``holder`` holds it; its token is not reused."""
        lease = self._leases.get(name)
        if lease is not None and lease.holder == holder:
            del self._leases[name]

    async def get_lease(self, name: str) -> Lease | None:
        """The unexpired lease, if any."""
        lease = self._leases.get(name)
        if lease is None or self._clock.now() > lease.expires_at:
            return None
        return lease

    def __repr__(self) -> str:
        return (
            f"<MemoryRegistry agents={len(self._agents)} breakers={len(self._breakers)}"
            f" leases={len(self._leases)}>"
        )
