"""Finished spans on the events stream (topic ``span``), so the whole cluster's traces reach
every control centre with no other server.

Each process's :class:`core.tracing.Tracing` keeps its own spans in a ring buffer; attached to a
cluster, a control centre runs no scheduler and no agent, so that buffer stays empty. Like log
lines (``agents/logstream.py``), spans therefore travel on the events stream:
:class:`SpanEvents` is an OpenTelemetry ``SpanProcessor`` that copies every finished span into
a bounded queue, and its :meth:`SpanEvents.run` publishes them with ``bus.publish_event``.

- **Sampled by trace**: ``sample`` of the traces (decided from the trace id, so a trace is
  kept or dropped whole, on every node alike); a span that failed is always kept.
- **Rate-limited**: a token bucket (``rate`` a second, ``burst`` at once) and a queue of
  ``queue`` spans; what does not fit is dropped and counted (``dropped``, the ``on_drop``
  hook for a metric, and a ``spans_dropped`` warning at most once a minute). Ending a span
  never waits for the bus and never raises.
- **Small**: a span's data is its ids, name, times, status, kind, service and node, and at most
  :data:`MAX_ATTRIBUTES` attributes (strings cut at :data:`MAX_CHARS`).

The receiving side turns the data back into a ``ReadableSpan`` (:func:`span_from_data`) and
keeps it in a :class:`core.tracing.RecentSpans`, which drops a span it already holds (a
process also hears its own spans back). Export to an OTLP collector is unchanged: it is
another processor on the same provider.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.logs import get_logger
from agentdeck.core.messages import Event, encode
from agentdeck.core.models import JSON
from agentdeck.core.ports import Bus
from agentdeck.core.tokenbucket import TokenBucket

TOPIC = "span"
RATE = 100.0
"""Spans per second a process publishes in the long run."""
BURST = 500
"""Spans a process may publish at once after a quiet spell."""
QUEUE = 2000
"""Spans waiting to be published at most; more are dropped."""
#: Seconds between log lines about dropped spans (one line sums the drops since the last).
DROP_REPORT = 60.0
MAX_ATTRIBUTES = 32
MAX_CHARS = 500
_SAMPLE_SCALE = 10_000
log = get_logger(__name__)


def sampled(trace_id: int, sample: float) -> bool:
    """Whether a trace is kept at rate ``sample`` (0 to 1): the same answer on every node."""
    return (trace_id % _SAMPLE_SCALE) < sample * _SAMPLE_SCALE


def span_data(span: ReadableSpan) -> dict[str, JSON]:
    """A finished span as the ``data`` of a ``span`` event (docs/messages.md)."""
    ctx = span.context
    if ctx is None:
        raise AgentdeckError(f"span {span.name!r} has no context")
    resource = span.resource.attributes if span.resource is not None else {}
    attributes: dict[str, JSON] = {}
    for key, value in (span.attributes or {}).items():
        if len(attributes) >= MAX_ATTRIBUTES:
            break
        attributes[key] = _scalar(value)
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "name": span.name[:MAX_CHARS],
        "kind": span.kind.name.lower(),
        "start": (span.start_time or 0) / 1e9,
        "end": (span.end_time or span.start_time or 0) / 1e9,
        "status": span.status.status_code.name.lower(),
        "message": (span.status.description or "")[:MAX_CHARS] or None,
        "service": _scalar(resource.get("service.name")),
        "node": _scalar(resource.get("host.name")),
        "attributes": attributes,
    }


def span_from_data(data: Mapping[str, Any]) -> ReadableSpan:
    """A ``span`` event's data as a ``ReadableSpan`` (AgentdeckError when it is not one)."""
    try:
        trace_id, span_id = int(data["trace_id"], 16), int(data["span_id"], 16)
        parent_hex = data.get("parent_id")
        flags = TraceFlags(TraceFlags.SAMPLED)
        context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
        parent = (
            SpanContext(trace_id, int(parent_hex, 16), is_remote=True, trace_flags=flags)
            if parent_hex
            else None
        )
        status = Status(
            StatusCode[str(data.get("status") or "unset").upper()],
            data.get("message") if data.get("status") == "error" else None,
        )
        resource = {k: v for k in ("service", "node") if isinstance(v := data.get(k), str) and v}
        return ReadableSpan(
            name=str(data["name"]),
            context=context,
            parent=parent,
            resource=Resource.create(
                {
                    "service.name": resource.get("service", "unknown"),
                    **({"host.name": resource["node"]} if "node" in resource else {}),
                }
            ),
            attributes=dict(data.get("attributes") or {}),
            kind=SpanKind[str(data.get("kind") or "internal").upper()],
            status=status,
            start_time=int(float(data["start"]) * 1e9),
            end_time=int(float(data["end"]) * 1e9),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise AgentdeckError(f"not a span event: {exc!r}") from None


class SpanEvents(SpanProcessor):
    """Publishes this process's finished spans on the events stream (see the module's notes).

    A runtime service: :meth:`run` until :meth:`stop`, which publishes what is queued within
    its grace."""

    def __init__(
        self,
        bus: Bus,
        clock: Clock,
        *,
        sample: float = 1.0,
        rate: float = RATE,
        burst: int = BURST,
        queue: int = QUEUE,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise AgentdeckError(f"span sample {sample!r} is not a fraction from 0 to 1")
        self.sample, self.rate, self.burst = sample, rate, burst
        self.on_drop = on_drop
        self.published = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        """Spans not published, by reason: ``sampled`` (left out by the sample rate),
        ``rate``, ``queue``, ``publish`` (the bus refused), ``invalid``."""
        self._bus, self._clock, self._size = bus, clock, queue
        self._spans: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()
        self._bucket = TokenBucket(rate, burst, clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._ready: asyncio.Event | None = None
        self._stopping = False
        self._reported: collections.Counter[str] = collections.Counter()
        self._reported_at = clock.now()

    def __repr__(self) -> str:
        return (
            f"<SpanEvents queued={len(self._spans)} published={self.published}"
            f" dropped={sum(self.dropped.values())}>"
        )

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished span, or drop and count it (any thread; never blocks or raises)."""
        try:
            ctx = span.context
            failed = span.status.status_code is StatusCode.ERROR
            if ctx is None or not (failed or sampled(ctx.trace_id, self.sample)):
                self._drop("sampled")
                return
            event = Event(topic=TOPIC, at=self._clock.now(), data=span_data(span))
            with self._lock:
                if not self._take_token():
                    reason = "rate"
                elif len(self._spans) >= self._size:
                    reason = "queue"
                else:
                    self._spans.append(event)
                    reason = ""
            if reason:
                self._drop(reason)
            else:
                self._wake()
        except Exception:  # ending a span must never break the code that ends it
            self._drop("invalid")

    async def run(self) -> None:
        """Publish queued spans until stopped."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._ready = asyncio.Event()
        while True:
            await self._publish_queued()
            if (drops := self.drops_to_report()) is not None:
                log.warning("spans_dropped", **drops)
            if self._stopping:
                return
            await self._ready.wait()
            self._ready.clear()

    async def stop(self, grace: float) -> None:
        """Publish what is queued (within ``grace`` seconds), then make :meth:`run` return."""
        self._stopping = True
        if self._ready is not None and self._loop is asyncio.get_running_loop():
            self._ready.set()
        else:
            # never run: publish here what was queued
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._publish_queued(), grace)

    async def _publish_queued(self) -> None:
        while True:
            with self._lock:
                if not self._spans:
                    return
                event = self._spans.popleft()
            try:
                await self._bus.publish_event(encode(event))
            except Exception:
                self._drop("publish")
            else:
                self.published += 1

    def drops_to_report(self) -> dict[str, int] | None:
        """The spans dropped (sampled-out ones aside) since the last report, by reason, when
        there are some and :data:`DROP_REPORT` seconds have passed since; else None."""
        now = self._clock.now()
        if now - self._reported_at < DROP_REPORT:
            return None
        new = {
            reason: count - self._reported[reason]
            for reason, count in self.dropped.items()
            if reason != "sampled" and count > self._reported[reason]
        }
        if not new:
            return None
        self._reported = collections.Counter(self.dropped)
        self._reported_at = now
        return new

    def _wake(self) -> None:
        loop, ready = self._loop, self._ready
        if loop is None or ready is None:
            return
        try:
            if threading.get_ident() == self._thread:
                ready.set()
            else:
                loop.call_soon_threadsafe(ready.set)
        except RuntimeError:  # the loop is closed: the process is ending
            return

    def _take_token(self) -> bool:
        return self._bucket.take()

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        if self.on_drop is not None:
            with contextlib.suppress(Exception):  # a metric must not break the span's end
                self.on_drop(reason)

    def shutdown(self) -> None:
        """Nothing to release (the runtime stops :meth:`run`)."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Spans are published by :meth:`run`; nothing is held back to flush here."""
        return True


def _scalar(value: Any) -> JSON:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:MAX_CHARS]
    if isinstance(value, list | tuple):
        return [_scalar(v) for v in value[:MAX_ATTRIBUTES]]
    return str(value)[:MAX_CHARS]
