"""Traces: the recent traces of the whole cluster, and a waterfall of one trace's spans.

Spans come from one ring buffer (``core.tracing.RecentSpans``): this process's own, when it
runs a scheduler or agents, and every other process's, which travel on the events stream as
``span`` events (``core.spanstream``: sampled by trace, rate-limited, drops counted) and the
app's feed adds to it, so a control centre attached to a cluster shows the cluster's traces
with no other server. The full history is in the OTLP backend the nodes export to, when one is
configured. ``T`` on a task opens its trace (its workflow's: the trace id is derived from the
workflow id, :func:`core.tracing.workflow_trace_id`), and says so plainly when the trace is not
in the buffer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from agentdeck.core.tracing import RECENT_SPANS, workflow_trace_id
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.table import when
from agentdeck.tui.widgets.live_table import LiveTable

#: Width of the waterfall's bar column, in cells.
BAR = 30
NS = 1e9


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def _end(span: ReadableSpan) -> int:
    return span.end_time or _start(span)


def _failed(span: ReadableSpan) -> bool:
    return span.status.status_code is StatusCode.ERROR


def group_traces(spans: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    """Spans by trace id (32 hex digits), each trace's spans in start order."""
    traces: dict[str, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        if span.context is not None:
            traces[f"{span.context.trace_id:032x}"].append(span)
    return {t: sorted(s, key=_start) for t, s in traces.items()}


def task_trace_id(task_id: str) -> str:
    """The trace (32 hex digits) a task's attempts belong to: its workflow's (``wf/key``)."""
    return f"{workflow_trace_id(task_id.partition('/')[0]):032x}"


def root_name(spans: Sequence[ReadableSpan]) -> str:
    """The name of the trace's root span (the first span when the root is not here yet)."""
    roots = [s for s in spans if s.parent is None]
    return (roots or list(spans))[0].name


class TracesScreen(DeckScreen):
    """Recent traces, newest first: root span, spans, duration, errors; Enter opens one."""

    crumb: ClassVar[str] = "Traces"

    def body(self) -> ComposeResult:
        """The trace table."""
        yield LiveTable(
            ["trace", "root", "spans", "took", "errors", "started"],
            render=self._cell_text,
            id="traces",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        if column == 4 and value:
            return Text(str(value), style=self.deck.status_style("failed"))
        return str(value)

    async def reload(self) -> None:
        """Group the buffered spans by trace."""
        recent = self.sources.recent
        traces = group_traces(recent.spans() if recent is not None else [])
        rows = []
        for trace_id, spans in sorted(traces.items(), key=lambda kv: -_start(kv[1][0])):
            took = (max(_end(s) for s in spans) - _start(spans[0])) / NS
            rows.append(
                (
                    trace_id,
                    (
                        trace_id[:12],
                        root_name(spans),
                        len(spans),
                        f"{took:.2f}s",
                        sum(_failed(s) for s in spans),
                        when(_start(spans[0]) / NS),
                    ),
                )
            )
        self.query_one(LiveTable).sync(rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter: the waterfall of that trace."""
        if event.row_key.value:
            self.open(TraceScreen(event.row_key.value))


class TraceScreen(DeckScreen):
    """One trace as a waterfall: each span's name, offset, duration and a bar on a shared scale.

    Opened from a task (``task_id``), that task's spans are marked ``▸``.
    """

    crumb: ClassVar[str] = "Trace"

    def __init__(self, trace_id: str, *, task_id: str | None = None) -> None:
        super().__init__()
        self.trace_id = trace_id
        self.task_id = task_id
        self.shown = Text()
        """The waterfall as last drawn."""

    def crumb_text(self) -> str:
        """``Trace <first 12 hex digits>``."""
        return f"Trace {self.trace_id[:12]}"

    def body(self) -> ComposeResult:
        """The waterfall text."""
        with VerticalScroll(id="trace-detail"):
            yield Static(id="trace-text")

    async def reload(self) -> None:
        """Draw the spans of this trace still in the buffer."""
        recent = self.sources.recent
        spans = group_traces(recent.spans() if recent is not None else []).get(self.trace_id, [])
        self.shown = self.waterfall(spans)
        self.query_one("#trace-text", Static).update(self.shown)

    def waterfall(self, spans: Sequence[ReadableSpan]) -> Text:
        """The spans as rows of ``name  +offset  took  bar``, children indented under parents."""
        text = Text()
        if not spans:
            return self.missing()
        start = _start(spans[0])
        total = max(max(_end(s) for s in spans) - start, 1)
        ids = {s.context.span_id for s in spans if s.context is not None}
        ok, bad = self.deck.status_style("succeeded"), self.deck.status_style("failed")
        text.append(f"{root_name(spans)}  {len(spans)} spans  {total / NS:.2f}s\n\n", style="bold")
        if self.task_id is not None and not any(self._is_mine(s) for s in spans):
            text.append(
                f"no span of task {self.task_id} in it yet (an attempt's span is written "
                "when the attempt ends)\n\n",
                style="dim",
            )
        for span in spans:
            depth = 1 if span.parent is not None and span.parent.span_id in ids else 0
            indent = "  " * depth
            if self._is_mine(span):
                indent = "▸" + indent[1:] if indent else "▸ "
            name = (indent + span.name)[:24]
            offset, took = (_start(span) - start) / NS, (_end(span) - _start(span)) / NS
            left = round(BAR * (_start(span) - start) / total)
            width = max(1, round(BAR * (_end(span) - _start(span)) / total))
            text.append(f"{name:<24} +{offset:>7.2f}s {took:>7.2f}s ")
            left = min(left, BAR - 1)
            text.append(" " * left)
            text.append("█" * min(width, BAR - left), style=bad if _failed(span) else ok)
            text.append("\n")
        return text

    def _is_mine(self, span: ReadableSpan) -> bool:
        attributes = span.attributes or {}
        return self.task_id is not None and attributes.get("agentdeck.task_id") == self.task_id

    def missing(self) -> Text:
        """Why this trace has no spans here, and where to look for it instead."""
        src = self.sources
        text = Text()
        text.append(f"trace {self.trace_id}\n", style="bold")
        if self.task_id is not None:
            text.append(f"of task {self.task_id}\n")
        text.append("\nnot among the recent spans: ", style="bold")
        if src.recent is None:
            text.append(
                "tracing is off in this process (tracing = false, or OTEL_SDK_DISABLED=true).\n"
            )
            return text
        text.append(
            f"the newest {RECENT_SPANS:,} finished spans of every process are kept here (the "
            "nodes publish theirs on the events stream, sampled and rate-limited: drops are "
            "counted), so an older trace, or spans a node dropped, are not; look the trace id up "
            "in the OTLP backend the nodes export to. A task not yet dispatched has no spans.\n"
        )
        if src.attached:
            leader = self.deck.leader or "none"
            text.append(
                f"Attached to a cluster: the leader (now: {leader}) and the agents record the "
                "spans; a node that runs with tracing off publishes none.\n"
            )
        return text
