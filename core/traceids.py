"""Trace and span ids derived from workflow and task ids (no OpenTelemetry needed).

Any scheduler node, a standby that took over included, names the same spans without sharing
memory; log lines carry these ids so they join the traces (core/tracing.py makes the spans).
"""

from __future__ import annotations

import hashlib


def _digest(text: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")
    return value or 1  # an all-zero id is invalid in W3C trace context


def workflow_trace_id(workflow_id: str) -> int:
    """The trace id of a workflow's trace."""
    return _digest(f"workflow:{workflow_id}", 16)


def workflow_span_id(workflow_id: str) -> int:
    """The span id of a workflow's root span."""
    return _digest(f"workflow-span:{workflow_id}", 8)


def attempt_span_id(task_id: str, attempt: int) -> int:
    """The span id of one attempt of a task, on the scheduler side."""
    return _digest(f"attempt:{task_id}#{attempt}", 8)


def traceparent(trace_id: int, span_id: int) -> str:
    """A sampled W3C ``traceparent`` header value."""
    return f"00-{trace_id:032x}-{span_id:016x}-01"
