"""What the events stream leaves behind in the control centre: the recent log, the rates, and
running tasks' live progress and streamed output.

The app feeds every event it reads to one :class:`EventFeed`, whatever screen is visible, so
opening the logs shows the recent past at once, the overview's sparklines have their minute and
a task opened mid-run shows how far it is. ``progress`` and ``output`` events go to
:attr:`EventFeed.live` only (``agentdeck.tui.progress``): a model streaming its text would
otherwise push every other line out of the log. ``span`` events (every process's finished
spans, ``core.spanstream``) go to :attr:`EventFeed.spans`, the buffer the traces screen reads.
Plain data, no Textual.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agentdeck.core.errors import AgentdeckError
from agentdeck.core.messages import Event
from agentdeck.core.spanstream import TOPIC as SPAN_TOPIC
from agentdeck.core.spanstream import span_from_data
from agentdeck.core.tracing import RecentSpans
from agentdeck.tui.progress import TOPICS as LIVE_TOPICS
from agentdeck.tui.progress import LiveProgress
from agentdeck.tui.queue_counts import QueueCounts

#: Seconds of throughput the rates keep.
RATE_WINDOW = 60
#: How many lines the log keeps (older ones drop off).
LOG_CAP = 2000
LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One event as a log line, with the fields the filters look at."""

    seq: int
    at: float
    level: str
    topic: str
    text: str
    agent: str = ""
    workflow: str = ""
    task: str = ""


def log_line(seq: int, event: Event) -> LogLine:
    """An event from the stream as a log line (task failures are errors, retries warnings)."""
    d = event.data
    level, text = "info", ""
    task, workflow = str(d.get("task_id") or ""), str(d.get("workflow_id") or "")
    agent = str(d.get("agent_id") or "")
    if event.topic == "task":
        kind = str(d.get("kind") or d.get("status") or "")
        level = {"failed": "error", "retrying": "warning"}.get(kind, "info")
        text = f"{task} {kind}"
        if d.get("attempt"):
            text += f" (attempt {d['attempt']})"
        if agent:
            text += f" on {agent}"
        error = d.get("error")
        if isinstance(error, dict) and error.get("message"):
            text += f": {error.get('type', 'error')}: {error['message']}"
    elif event.topic == "workflow":
        text = f"workflow {workflow} {d.get('name', '')} {d.get('status', '')}".replace("  ", " ")
    elif event.topic == "command":
        level = "info" if d.get("status") == "done" else "error"
        text = f"{d.get('action')} {d.get('target')}: {d.get('result')}"
    elif event.topic == "log":  # an agent's own log line (agents/logstream.py)
        level = str(d.get("level") or "info").lower()
        level = {"critical": "error", "exception": "error", "warn": "warning"}.get(level, level)
        extra = {k: v for k, v in d.items() if k not in ("agent_id", "level", "event")}
        text = " ".join([f"{agent}: {d.get('event', '')}", *(f"{k}={v}" for k, v in extra.items())])
    else:
        text = " ".join(f"{k}={v}" for k, v in sorted(d.items()))
        level = str(d.get("level") or "info")
    return LogLine(seq, event.at, level, event.topic, text, agent, workflow, task)


class EventFeed:
    """The newest events as log lines (at most :data:`LOG_CAP`) and the tasks that succeeded
    and failed per second over the last :data:`RATE_WINDOW` seconds (by the events' own
    times, so a fake clock drives it in tests)."""

    def __init__(self) -> None:
        self.logbook: deque[LogLine] = deque(maxlen=LOG_CAP)
        """The newest events as log lines, oldest first."""
        self._seq = 0
        self._done: deque[int] = deque([0] * RATE_WINDOW, maxlen=RATE_WINDOW)
        self._failed: deque[int] = deque([0] * RATE_WINDOW, maxlen=RATE_WINDOW)
        self._spent: deque[float] = deque([0.0] * RATE_WINDOW, maxlen=RATE_WINDOW)
        self._second: int | None = None
        self.live = LiveProgress()
        """Running tasks' newest progress and streamed output."""
        self.spans = RecentSpans()
        """The cluster's recent spans (the app hands over its process's own buffer when it
        has one, so its own spans and the others' are in one place)."""
        self.bad_spans = 0
        """``span`` events that could not be read (counted, not kept)."""
        self.queues = QueueCounts()
        """Tasks queued and in flight per capability, kept from the task events between the
        overview's Store recounts."""

    def __repr__(self) -> str:
        return f"<EventFeed lines={len(self.logbook)} seq={self._seq}>"

    def record(self, event: Event) -> None:
        """Keep ``event`` as a log line and, a task's, in the rates (progress and output: in
        :attr:`live`)."""
        if event.topic in LIVE_TOPICS:
            self.live.record(event)
            return
        if event.topic == SPAN_TOPIC:
            try:
                self.spans.on_end(span_from_data(event.data))
            except AgentdeckError:
                self.bad_spans += 1
            return
        self._seq += 1
        self.logbook.append(log_line(self._seq, event))
        if event.topic == "task":
            self._count(event)
            self.queues.on_task(event.data)
        elif event.topic == "usage":
            self._advance(int(event.at))
            cost = event.data.get("cost_usd")
            if isinstance(cost, int | float):
                self._spent[-1] += cost

    def _count(self, event: Event) -> None:
        self._advance(int(event.at))
        kind = event.data.get("kind")
        if kind == "succeeded":
            self._done[-1] += 1
        elif kind in ("failed", "retrying"):
            self._failed[-1] += 1

    def _advance(self, second: int) -> None:
        """Open a new slot for each second up to ``second`` (never go back: a late event
        counts in the newest slot)."""
        if self._second is None:
            self._second = second
        while self._second < second:
            self._second += 1
            self._done.append(0)
            self._failed.append(0)
            self._spent.append(0.0)

    def rates(self) -> tuple[list[int], list[int]]:
        """Tasks that succeeded and that failed, per second, over the last minute."""
        return list(self._done), list(self._failed)

    def spending(self) -> list[float]:
        """US dollars the agents' attempts spent, per second, over the last minute (from the
        scheduler's ``usage`` events; costs not known count 0)."""
        return list(self._spent)
