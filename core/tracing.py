"""OpenTelemetry traces: one trace per workflow, a span per task attempt and per agent run.

The trace model (docs/observability.md draws it)::

    workflow <name>                  root span, emitted by the leader when the workflow ends
    └── attempt <capability>         scheduler side: from dispatch to the applied result
        └── run <capability>         agent side, in the agent's process, parent read from the
                                     message's W3C ``traceparent`` header

The workflow's trace id and span id, and each attempt's span id, are derived from the
workflow id and ``(task id, attempt)``: any scheduler node, a standby that took over
included, names the same spans without sharing memory, and an attempt's ``traceparent`` can be
written at dispatch although its parent (the workflow span) ends later.

Export is configured by the standard OpenTelemetry variables: OTLP over HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (plus
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``, ``OTEL_SERVICE_NAME``...);
``OTEL_SDK_DISABLED=true`` turns tracing off. Whatever the export, the last spans stay in an
in-process ring buffer (:class:`RecentSpans`) for the Traces pane.
"""

from __future__ import annotations

import collections
import contextvars
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentdeck.core.models import Task, Workflow
from agentdeck.core.scheduler.observer import SchedulerObserver
from agentdeck.core.states import TaskStatus
from agentdeck.core.traceids import attempt_span_id as attempt_span_id
from agentdeck.core.traceids import traceparent as traceparent
from agentdeck.core.traceids import workflow_span_id as workflow_span_id
from agentdeck.core.traceids import workflow_trace_id as workflow_trace_id

T = TaskStatus
TRACE_HEADER = "traceparent"
"""The W3C trace context header carried by task messages and reports."""
RECENT_SPANS = 2_000
"""How many finished spans the in-process buffer keeps."""
_ENDS_ATTEMPT = frozenset({T.SUCCEEDED, T.FAILED, T.RETRYING, T.CANCELLED})
_PROPAGATOR = TraceContextTextMapPropagator()
_fixed_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "agentdeck_fixed_span_ids", default=None
)


class _Ids(IdGenerator):
    """Random ids, unless the caller fixed the next span's ids (see :func:`_fixed`)."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        fixed = _fixed_ids.get()
        return fixed[1] if fixed else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        fixed = _fixed_ids.get()
        return fixed[0] if fixed else self._random.generate_trace_id()


class RecentSpans(SpanProcessor):
    """Keeps the last ``size`` finished spans in memory (thread-safe), newest last.

    A span is held once: the same span again (this process's own, heard back from the events
    stream, ``core.spanstream``) replaces the copy held rather than adding one."""

    def __init__(self, size: int = RECENT_SPANS) -> None:
        self._spans: collections.OrderedDict[tuple[int, int], ReadableSpan] = (
            collections.OrderedDict()
        )
        self._size = size
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        """Remember a finished span."""
        ctx = span.context
        key = (ctx.trace_id, ctx.span_id) if ctx is not None else (0, id(span))
        with self._lock:
            self._spans.pop(key, None)
            self._spans[key] = span
            while len(self._spans) > self._size:
                self._spans.popitem(last=False)

    def spans(self, trace_id: int | None = None) -> list[ReadableSpan]:
        """The buffered spans, oldest first; only one trace's when ``trace_id`` is given."""
        with self._lock:
            spans = list(self._spans.values())
        if trace_id is None:
            return spans
        return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def enabled_by_env(env: Mapping[str, str] | None = None) -> bool:
    """False when ``OTEL_SDK_DISABLED`` is true (the standard switch)."""
    env = os.environ if env is None else env
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def _exporting(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


class Tracing:
    """One process's TracerProvider, its ring buffer, and the spans agentdeck makes.

    ``service`` names the process kind (``agentdeck`` for a daemon, ``agentdeck-agent`` for an
    agent process) unless ``OTEL_SERVICE_NAME`` says otherwise.
    """

    def __init__(
        self,
        service: str = "agentdeck",
        node: str = "",
        *,
        env: Mapping[str, str] | None = None,
        processors: Iterable[SpanProcessor] = (),
        buffer_size: int = RECENT_SPANS,
    ) -> None:
        env = os.environ if env is None else env
        attributes: dict[str, Any] = {"service.name": env.get("OTEL_SERVICE_NAME") or service}
        if node:
            attributes["host.name"] = node
        # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; ours win for the service name.
        self.provider = TracerProvider(resource=Resource.create(attributes), id_generator=_Ids())
        self.recent = RecentSpans(buffer_size)
        self.provider.add_span_processor(self.recent)
        for processor in processors:
            self.provider.add_span_processor(processor)
        self.exporting = _exporting(env)
        if self.exporting:
            # Imported only when asked for: the exporter pulls in an HTTP client.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("agentdeck")
        self._attempts: dict[str, tuple[int, float]] = {}
        """Task id -> (attempt, dispatch time) for attempts dispatched by this process."""

    def __repr__(self) -> str:
        return f"<Tracing exporting={self.exporting} open_attempts={len(self._attempts)}>"

    def shutdown(self) -> None:
        """Flush exporters and stop (call once, at process exit)."""
        self.provider.shutdown()

    # ------------------------------------------------------------------- scheduler side

    def attempt_dispatched(self, task: Task, now: float) -> dict[str, str]:
        """Note an attempt's dispatch; the headers its task message carries."""
        self._attempts[task.id] = (task.attempt, now)
        trace_id = workflow_trace_id(task.workflow_id)
        return {TRACE_HEADER: traceparent(trace_id, attempt_span_id(task.id, task.attempt))}

    def tasks_changed(self, tasks: Iterable[Task], now: float) -> None:
        """End the attempt span of every task whose attempt just ended."""
        for t in tasks:
            if t.status not in _ENDS_ATTEMPT:
                continue
            attempt, start = self._attempts.pop(t.id, (t.attempt, None))
            if attempt != t.attempt or (start is None and t.started_at is None):
                continue  # never dispatched (cancelled while waiting), or a stale attempt
            self._end_attempt(t, start if start is not None else t.started_at or now, now)

    def _end_attempt(self, t: Task, start: float, now: float) -> None:
        trace_id = workflow_trace_id(t.workflow_id)
        parent = _remote_parent(trace_id, workflow_span_id(t.workflow_id))
        attributes: dict[str, Any] = {
            "agentdeck.task_id": t.id,
            "agentdeck.workflow_id": t.workflow_id,
            "agentdeck.task_key": t.key,
            "agentdeck.capability": t.capability,
            "agentdeck.attempt": t.attempt,
            "agentdeck.status": t.status.value,
        }
        if t.agent_id:
            attributes["agentdeck.agent"] = t.agent_id
        with _fixed(trace_id, attempt_span_id(t.id, t.attempt)):
            span = self.tracer.start_span(
                f"attempt {t.capability}",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes=attributes,
                start_time=_ns(start),
            )
        if t.status is not T.SUCCEEDED:
            message = t.error.message if t.error else t.status.value
            span.set_status(Status(StatusCode.ERROR, message))
        span.end(end_time=_ns(max(now, start)))

    def workflow_finished(self, workflow: Workflow, now: float) -> None:
        """Emit a finished workflow's root span (from its creation to ``now``)."""
        trace_id = workflow_trace_id(workflow.id)
        with _fixed(trace_id, workflow_span_id(workflow.id)):
            span = self.tracer.start_span(
                f"workflow {workflow.name}",
                context=otel_context.Context(),  # a root: ignore any current span
                kind=SpanKind.INTERNAL,
                attributes={
                    "agentdeck.workflow_id": workflow.id,
                    "agentdeck.status": workflow.status.value,
                    "agentdeck.tasks": workflow.task_count,
                },
                start_time=_ns(workflow.created_at),
            )
        if workflow.status.value != "succeeded":
            span.set_status(Status(StatusCode.ERROR, workflow.status.value))
        span.end(end_time=_ns(max(now, workflow.created_at)))

    # ---------------------------------------------------------------------- agent side

    def start_run(
        self, headers: Mapping[str, str], name: str, attributes: Mapping[str, Any], now: float
    ) -> Span:
        """Start an agent's run span, child of the message's ``traceparent`` when it has one."""
        parent = _PROPAGATOR.extract(dict(headers)) if TRACE_HEADER in headers else None
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        assert isinstance(span, Span)
        return span


class TracingObserver(SchedulerObserver):
    """The scheduler's moments as spans: a ``traceparent`` on each attempt's message, the
    attempt's span when it ends, the workflow's root span when it finishes."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def __repr__(self) -> str:
        return f"<TracingObserver {self.tracing!r}>"

    def message_headers(self, task: Task, now: float) -> Mapping[str, str]:
        return self.tracing.attempt_dispatched(task, now)

    async def tasks_changed(
        self,
        tasks: Sequence[Task],
        released: Sequence[Task],
        kinds: Mapping[str, str | None],
        now: float,
    ) -> None:
        self.tracing.tasks_changed(tasks, now)

    async def workflow_finished(self, workflow: Workflow, now: float) -> None:
        self.tracing.workflow_finished(workflow, now)


def _remote_parent(trace_id: int, span_id: int) -> otel_context.Context:
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


class _FixedIds:
    def __init__(self, trace_id: int, span_id: int) -> None:
        self.ids = (trace_id, span_id)
        self.token: contextvars.Token[tuple[int, int] | None] | None = None

    def __enter__(self) -> None:
        self.token = _fixed_ids.set(self.ids)

    def __exit__(self, *exc: object) -> None:
        assert self.token is not None
        _fixed_ids.reset(self.token)


def _fixed(trace_id: int, span_id: int) -> _FixedIds:
    """Within the block, the next span made gets these ids."""
    return _FixedIds(trace_id, span_id)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def span_ids(span: trace.Span | None = None) -> Iterator[tuple[str, str]]:
    """``("trace_id", hex)`` and ``("span_id", hex)`` of ``span`` (default: the current one)
    when it is valid; nothing otherwise. Used to put trace ids on log lines."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if ctx.is_valid:
        yield "trace_id", f"{ctx.trace_id:032x}"
        yield "span_id", f"{ctx.span_id:016x}"
