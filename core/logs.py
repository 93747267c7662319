"""Logging: structlog, one line per event, to stderr.

JSON lines (ISO timestamp, level, event, node and every bound key, with ``trace_id`` and
``span_id`` inside an OpenTelemetry span) for machines and log shippers; a coloured console
for people at a terminal. Events are snake_case words and values are keys:
``log.info("task_dispatched", task_id=..., attempt=...)``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any, Literal, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]

LogTee = Callable[[str, MutableMapping[str, Any]], None]
"""Takes a copy of a log line: its method name (``info``...) and its keys so far."""

_tee: ContextVar[LogTee | None] = ContextVar("agentdeck_log_tee", default=None)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _add_node(node: str) -> Processor:
    def add_node(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        event.setdefault("node", node)
        return event

    return add_node


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that remembers the name it was made for."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _add_logger_name(logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    name = getattr(logger, "name", "")
    if name:
        event.setdefault("logger", name)
    return event


def _add_trace_ids(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    # Lines written inside an OpenTelemetry span carry its ids, so logs and traces join up.
    # Keys bound explicitly (the worker binds its run span's) win.
    if "trace_id" not in event:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event["trace_id"] = f"{ctx.trace_id:032x}"
            event["span_id"] = f"{ctx.span_id:016x}"
    return event


@contextlib.contextmanager
def tee_logs(sink: LogTee | None) -> Iterator[None]:
    """Hand every line logged in this context, and in tasks started from it, to ``sink`` too.

    Only lines that pass the level filter reach it, with their bound keys and trace ids; the
    sink must be quick and must not raise. ``None`` stops the tee (for the task that ships the
    lines, so its own lines do not loop back).
    """
    token = _tee.set(sink)
    try:
        yield
    finally:
        _tee.reset(token)


def _to_tee(_logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    sink = _tee.get()
    if sink is not None:
        sink(method, event)
    return event


def _leading_keys(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    # The same four keys open every JSON line, so people reading raw logs find them at a glance.
    head = {k: event.pop(k) for k in ("timestamp", "level", "event", "node") if k in event}
    return {**head, **event}


def configure_logging(
    level: str = "info",
    fmt: LogFormat | str = "auto",
    node: str = "",
    *,
    stream: TextIO | None = None,
) -> None:
    """Set up structlog for the whole process; calling it again replaces the setup.

    ``fmt`` ``auto`` writes JSON unless ``stream`` (default: stderr, read at call time) is a
    terminal. Raises ValueError for an unknown level or format.
    """
    if level.lower() not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or console")
    out = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.add_log_level,
        _add_node(node),
        _add_logger_name,
        _add_trace_ids,
        _to_tee,
        structlog.processors.StackInfoRenderer(),
    ]
    if as_json:
        processors += [
            structlog.processors.format_exc_info,
            _leading_keys,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        logger_factory=lambda *args: _NamedPrintLogger(out, str(args[0]) if args else ""),
        # Not cached: loggers made at import time follow a later configure_logging().
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **bound: Any) -> FilteringBoundLogger:
    """A logger whose lines carry ``logger=name`` and the ``bound`` keys."""
    # A lazy proxy, not a bound logger: it follows a later configure_logging() call. The name
    # reaches the logger factory, which hands it to _add_logger_name.
    logger: FilteringBoundLogger = structlog.get_logger(name, **bound)
    return logger
