"""The overview's queue depths (tasks queued and in flight per capability), kept between
Store recounts from the task events.

Counting them in the Store costs a scan of every open task (about 7 ms a time with 10,000 of
them, scripts/bench_tui.py), four times a second. :class:`QueueCounts` takes a recount from the
Store, then moves one task from one bucket to another for each task event, and asks for a new
recount every :data:`RECOUNT_SECONDS`.

How stale the counts can be, and how wrong: an event names the task's new status, not the one it
left. A task seen since the last recount left the status its last event named, exactly. For
another, the status it left is the usual one for its new status (:data:`USUAL_SOURCE`: a task
is dispatched from ``ready``, runs from ``dispatched``, ...); when it came from elsewhere (a
task dispatched again after it was lost, a retrying task made ready again that went retrying
before the recount), or an event is lost, comes twice or was on its way while the Store
counted, one count is off by one. Every such error lasts until the next recount: at most
:data:`RECOUNT_SECONDS` (plus one refresh); the overview also counts afresh whenever it is
shown. Plain data, no Textual.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from agentdeck.core.states import TaskStatus as T

__all__ = ["IN_FLIGHT", "QUEUED", "RECOUNT_SECONDS", "USUAL_SOURCE", "QueueCounts"]

#: Statuses counted as queued, and as in flight.
QUEUED = (T.READY, T.RETRYING)
IN_FLIGHT = (T.DISPATCHED, T.RUNNING)
#: Seconds between two Store recounts at most: the longest an error can last.
RECOUNT_SECONDS = 10.0
#: The status a task usually leaves for the status its event names (the scheduler's path).
USUAL_SOURCE: Mapping[T, T] = {
    T.READY: T.BLOCKED,
    T.DISPATCHED: T.READY,
    T.RUNNING: T.DISPATCHED,
    T.SUCCEEDED: T.RUNNING,
    T.FAILED: T.RUNNING,
    T.RETRYING: T.RUNNING,
    T.CANCELLED: T.READY,
    T.SKIPPED: T.BLOCKED,
    T.BLOCKED: T.READY,
}

_BUCKET: dict[T, str] = dict.fromkeys(QUEUED, "queued") | dict.fromkeys(IN_FLIGHT, "flying")


class QueueCounts:
    """Tasks queued and in flight per capability: a Store recount plus the task events since.

    Feed it every task event (:meth:`on_task`), ask :meth:`due` before showing the counts, and
    when it is due count in the Store and hand the counts to :meth:`recount`."""

    def __init__(self) -> None:
        self.queued: Counter[str] = Counter()
        """Tasks ready or retrying, per capability."""
        self.flying: Counter[str] = Counter()
        """Tasks dispatched or running, per capability."""
        self.recounted_at: float | None = None
        """When the last recount was handed over (None: never)."""
        self.moves = 0
        """Task events applied since the last recount."""
        self._seen: dict[str, T] = {}  # task id -> status its last event named (since recount)

    def __repr__(self) -> str:
        return (
            f"<QueueCounts queued={sum(self.queued.values())} "
            f"flying={sum(self.flying.values())} moves={self.moves}>"
        )

    def due(self, now: float) -> bool:
        """True when the Store should count again: never counted, or the last count is
        :data:`RECOUNT_SECONDS` old (a clock that went back counts too)."""
        last = self.recounted_at
        return last is None or not 0 <= now - last < RECOUNT_SECONDS

    def recount(self, counts: Mapping[str, Mapping[T, int]], now: float) -> None:
        """Start again from the Store's ``counts`` (capability -> status -> tasks, as
        ``Store.count_by_capability`` gives them) taken at ``now``."""
        self.queued = Counter(
            {c: n for c, by in counts.items() if (n := sum(by.get(s, 0) for s in QUEUED))}
        )
        self.flying = Counter(
            {c: n for c, by in counts.items() if (n := sum(by.get(s, 0) for s in IN_FLIGHT))}
        )
        self.recounted_at = now
        self.moves = 0
        self._seen.clear()

    def forget(self) -> None:
        """Count again at the next look (the events stopped, or the view was away)."""
        self.recounted_at = None

    def on_task(self, data: Mapping[str, object]) -> None:
        """Move the task of a task event's ``data`` to the bucket of its new status (an event
        without a task, a capability or a known status is left out)."""
        task, capability = data.get("task_id"), data.get("capability")
        try:
            status = T(str(data.get("status")))
        except ValueError:
            return
        if not isinstance(task, str) or not isinstance(capability, str) or not capability:
            return
        if self.recounted_at is None:
            return  # (nothing to move yet: the first recount counts it)
        before = self._seen.get(task, USUAL_SOURCE.get(status))
        self._seen[task] = status
        if before == status:
            return  # (a repeated event, or dispatched again: no bucket changes)
        self.moves += 1
        for bucket, delta in (
            (_BUCKET.get(before) if before else None, -1),
            (_BUCKET.get(status), 1),
        ):
            if bucket is None:
                continue
            counter = self.queued if bucket == "queued" else self.flying
            counter[capability] += delta
            if counter[capability] <= 0:
                del counter[capability]  # (never below zero: an error is cut at none)
