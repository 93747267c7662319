"""An agent's log lines on the events stream (topic ``log``), so watchers see the whole fleet.

The worker runs with :func:`core.logs.tee_logs` pointing at :meth:`LogStream.offer`: every
line it and its handlers log (after the level filter) is copied into a bounded queue, which
:meth:`LogStream.run` drains with ``bus.publish_event``. Logging never waits for the bus: a
token bucket caps the lines per second, a full queue drops, and every dropped line is counted
(``dropped`` and the ``on_drop`` hook, which feeds a metric). Lines logged while a task runs
carry its ``task_id``, ``workflow_id`` and, when traced, ``trace_id``/``span_id``.

:class:`EventStream` is that pipe without the logging: :class:`agents.feed.FeedStream` (the
handlers' progress and streamed output) is the other one, with a budget of its own so a
chatty model cannot starve the log lines.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from agentdeck.core.clock import Clock
from agentdeck.core.logs import tee_logs
from agentdeck.core.messages import Event, encode
from agentdeck.core.models import JSON
from agentdeck.core.ports import Bus
from agentdeck.core.tokenbucket import TokenBucket

RATE = 50.0
"""Lines per second an agent publishes in the long run."""
BURST = 200
"""Lines an agent may publish at once after a quiet spell (the bucket's size)."""
QUEUE = 1000
"""Lines waiting to be published at most; more are dropped."""
MAX_KEYS = 32
"""Keys kept per line (the first ones: event, level, ids come first)."""
MAX_CHARS = 2000
"""Longest string value kept; longer ones are cut."""

_SKIP = frozenset({"event", "level", "timestamp", "exc_info", "stack_info"})
_LEVELS = {"warn": "warning", "exception": "error", "msg": "info", "critical": "critical"}


class EventStream:
    """A bounded, rate-limited pipe from one agent to the events stream.

    :meth:`_accept` never blocks and never raises: over the rate or with the queue full the
    event is dropped and counted. A call from another thread (a sync handler in
    ``asyncio.to_thread``) is handed to the event loop's thread.
    """

    def __init__(
        self,
        bus: Bus,
        clock: Clock,
        agent_id: str,
        *,
        rate: float = RATE,
        burst: int = BURST,
        queue: int = QUEUE,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.rate = rate
        self.burst = burst
        self.on_drop = on_drop
        """Called with the reason (``rate``, ``queue``, ``publish``) for each dropped event."""
        self.published = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self._bus = bus
        self._clock = clock
        self._size = queue
        self._lines: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()
        self._bucket = TokenBucket(rate, burst, clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} agent={self.agent_id} queued={len(self._lines)}"
            f" published={self.published} dropped={sum(self.dropped.values())}>"
        )

    async def run(self) -> None:
        """Publish queued events until cancelled (run it in the worker's TaskGroup)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        with tee_logs(None):  # the bus's own lines while publishing must not come back here
            while True:
                await self._ready.wait()
                while self._lines:
                    line = self._lines.popleft()
                    try:
                        await self._bus.publish_event(encode(line))
                    except Exception:
                        self._drop("publish")
                    else:
                        self.published += 1
                self._ready.clear()

    # ---------------------------------------------------------------------------- internals

    def _elsewhere(self, call: Callable[..., None], *args: Any) -> bool:
        """True (and ``call(*args)`` handed to the loop's thread) when called off that thread."""
        if threading.get_ident() == self._thread:
            return False
        if self._loop is not None:
            self._loop.call_soon_threadsafe(call, *args)
        return True

    def _accept(self, topic: str, data: dict[str, JSON]) -> None:
        """Queue one event, or drop it (over the rate, or the queue is full)."""
        if not self._take_token():
            self._drop("rate")
            return
        if len(self._lines) >= self._size:
            self._drop("queue")
            return
        self._lines.append(Event(topic=topic, at=self._clock.now(), data=data))
        self._ready.set()

    def _last_queued(self) -> Event | None:
        """The newest event still waiting to be published (None: none waits)."""
        return self._lines[-1] if self._lines else None

    def _replace_last(self, event: Event) -> None:
        """Put ``event`` in place of the newest waiting one (a merge costs no token)."""
        self._lines[-1] = event

    def _take_token(self) -> bool:
        return self._bucket.take()

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        if self.on_drop is not None:
            self.on_drop(reason)


class LogStream(EventStream):
    """The pipe from one agent's log lines to the events stream (topic ``log``)."""

    def offer(self, method: str, event: MutableMapping[str, Any]) -> None:
        """Queue a copy of one log line, or drop it (over the rate, or the queue is full).

        Called by the logging pipeline: never blocks and never raises.
        """
        try:
            # A line from a thread started with this context (asyncio.to_thread): the queue
            # belongs to the event loop's thread.
            if self._elsewhere(self.offer, method, dict(event)):
                return
            self._accept("log", self._data(method, event))
        except Exception:  # a log line must never break the code that logs it
            self._drop("invalid")

    def _data(self, method: str, event: MutableMapping[str, Any]) -> dict[str, JSON]:
        data: dict[str, JSON] = {
            "agent_id": self.agent_id,
            "level": _LEVELS.get(method, method),
            "event": _json(event.get("event")),
        }
        for key, value in event.items():
            if len(data) >= MAX_KEYS:
                break
            if key not in _SKIP and key not in data:
                data[key] = _json(value)
        return data


def _json(value: Any) -> JSON:
    """``value`` as JSON: scalars as they are, short lists of them, anything else as text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:MAX_CHARS]
    if isinstance(value, list | tuple) and len(value) <= MAX_KEYS:
        return [_json(v) for v in value]
    return str(value)[:MAX_CHARS]
