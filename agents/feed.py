"""What a handler reports while it runs, besides its output: usage, progress, streamed text.

A handler calls these on its :class:`~agents.context.TaskContext`, which hands them to the
attempt's :class:`AttemptFeed`:

- ``ctx.usage(input_tokens=..., cost_usd=..., model=...)`` adds to the attempt's
  :class:`~core.models.Usage`, sent on its final report (succeeded or failed).
- ``ctx.progress(fraction=None, message=None)`` and ``ctx.emit(text)`` go to the events stream
  as ``progress`` and ``output`` events (docs/messages.md) through the worker's
  :class:`FeedStream`: rate-limited, the queue bounded, every drop counted, like log lines.
  While an event waits to be published, the next one of the same attempt merges into it
  (progress: the newest wins; output: the texts are joined, up to ``MAX_CHARS``), so a model
  streaming many small deltas costs few events and loses none unless the stream falls behind.

Bad values raise :class:`~core.errors.TaskFailed` (not retryable, kind ``bad_usage`` or
``bad_progress``): the handler has a bug that the next attempt would repeat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from agentdeck.agents.logstream import MAX_CHARS, EventStream
from agentdeck.core.errors import TaskFailed
from agentdeck.core.messages import Event
from agentdeck.core.models import JSON, Usage

_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


class FeedStream(EventStream):
    """The pipe from one agent's handlers' progress and streamed output to the events stream."""

    def progress(
        self, ids: Mapping[str, JSON], fraction: float | None, message: str | None
    ) -> None:
        """Queue a ``progress`` event for the attempt ``ids`` names (never blocks or raises)."""
        if self._elsewhere(self.progress, ids, fraction, message):
            return
        data = {**ids, "fraction": fraction, "message": message}
        last = self._last_queued()
        if last is not None and last.topic == "progress" and _same_attempt(last.data, ids):
            self._replace_last(Event(topic="progress", at=self._clock.now(), data=data))
            return
        self._accept("progress", data)

    def output(self, ids: Mapping[str, JSON], text: str) -> None:
        """Queue ``text`` as ``output`` events for the attempt (never blocks or raises)."""
        if self._elsewhere(self.output, ids, text):
            return
        last = self._last_queued()
        if last is not None and last.topic == "output" and _same_attempt(last.data, ids):
            queued = str(last.data.get("text", ""))
            room = MAX_CHARS - len(queued)
            if room > 0:
                merged = {**last.data, "text": queued + text[:room]}
                self._replace_last(Event(topic="output", at=last.at, data=merged))
                text = text[room:]
        for start in range(0, len(text), MAX_CHARS):
            self._accept("output", {**ids, "text": text[start : start + MAX_CHARS]})


def _same_attempt(data: Mapping[str, JSON], ids: Mapping[str, JSON]) -> bool:
    return data.get("task_id") == ids.get("task_id") and data.get("attempt") == ids.get("attempt")


class AttemptFeed:
    """One attempt's usage total, and where its progress and output go.

    ``ids`` is the ``data`` every event of the attempt starts with (``task_id``,
    ``workflow_id``, ``attempt``, ``agent_id``); ``stream`` None: progress and output go
    nowhere (a handler called outside a worker).
    """

    def __init__(
        self, ids: Mapping[str, JSON] | None = None, stream: FeedStream | None = None
    ) -> None:
        self.ids: dict[str, JSON] = dict(ids or {})
        self.usage: Usage | None = None
        """Everything reported with :meth:`add_usage` so far, summed (None: nothing yet)."""
        self._stream = stream

    def __repr__(self) -> str:
        return f"<AttemptFeed {self.ids.get('task_id')} usage={self.usage}>"

    def add_usage(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cost_usd: float | None = None,
        model: str | None = None,
    ) -> Usage:
        """Add one call's spending to the attempt's total; returns the new total."""
        tokens = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": cache_creation_input_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
        }
        for name in _TOKEN_FIELDS:
            value = tokens[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _bad(
                    "bad_usage", f"ctx.usage: {name} must be a whole number >= 0, got {value!r}"
                )
        if cost_usd is not None and (
            isinstance(cost_usd, bool)
            or not isinstance(cost_usd, int | float)
            or not math.isfinite(cost_usd)
            or cost_usd < 0
        ):
            raise _bad(
                "bad_usage", f"ctx.usage: cost_usd must be a number >= 0 or None, got {cost_usd!r}"
            )
        if model is not None and (not isinstance(model, str) or not model):
            raise _bad(
                "bad_usage", f"ctx.usage: model must be a non-empty string or None, got {model!r}"
            )
        call = Usage(
            **tokens,
            cost_usd=float(cost_usd) if cost_usd is not None else None,
            model=model,
        )
        self.usage = call if self.usage is None else self.usage + call
        return self.usage

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Say how far the attempt is: ``fraction`` in [0, 1] and/or a short ``message``."""
        if fraction is not None and (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0.0 <= fraction <= 1.0
        ):
            raise _bad(
                "bad_progress",
                f"ctx.progress: fraction must be a number from 0 to 1 or None, got {fraction!r}",
            )
        if message is not None and not isinstance(message, str):
            raise _bad(
                "bad_progress", f"ctx.progress: message must be a string or None, got {message!r}"
            )
        if self._stream is not None:
            shown = message[:MAX_CHARS] if message is not None else None
            self._stream.progress(
                self.ids, float(fraction) if fraction is not None else None, shown
            )

    def emit(self, text: str) -> None:
        """Stream a piece of partial output (the model's text as it comes)."""
        if not isinstance(text, str):
            raise _bad(
                "bad_progress", f"ctx.emit: text must be a string, got {type(text).__name__}"
            )
        if text and self._stream is not None:
            self._stream.output(self.ids, text)


def _bad(kind: str, message: str) -> TaskFailed:
    return TaskFailed(message, non_retryable=True, kind=kind)
