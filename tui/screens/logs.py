"""Logs: the events stream as a capped log view, newest first, with filters and search.

The app keeps the last :data:`LOG_CAP` events as :class:`LogLine` (see ``AgentdeckApp.record``)
whatever screen is visible, so opening the logs shows the recent past at once. ``f`` stops and
starts following (while not following, the cursor stays where it is instead of jumping to the
newest line); ``p`` freezes the whole view as everywhere; ``/`` searches the lines' text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from agentdeck.core.messages import Event
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.table import when
from agentdeck.tui.widgets.live_table import LiveTable

#: How many lines the log keeps (older ones drop off).
LOG_CAP = 2000
LEVELS = ("debug", "info", "warning", "error")
_LEVEL_STYLE = {"error": "failed", "warning": "retrying", "debug": "skipped"}


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


class LogsScreen(DeckScreen):
    """The log, optionally narrowed to one task, workflow, agent or minimum level."""

    crumb: ClassVar[str] = "Logs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "follow", "Follow/stop"),
        Binding("e", "errors", "Errors only"),
    ]

    def __init__(
        self,
        *,
        task: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        level: str | None = None,
    ) -> None:
        super().__init__()
        self.task_filter, self.workflow_filter, self.agent_filter = task, workflow, agent
        self.level = level
        self.following = True

    def crumb_text(self) -> str:
        """``Logs task=wf/a level=error`` and so on."""
        parts = [
            f"{name}={value}"
            for name, value in (
                ("task", self.task_filter),
                ("wf", self.workflow_filter),
                ("agent", self.agent_filter),
                ("level", self.level),
            )
            if value
        ]
        if not self.following:
            parts.append("(not following)")
        return " ".join([self.crumb, *parts])

    def body(self) -> ComposeResult:
        """The log table."""
        yield LiveTable(
            ["time", "level", "topic", "message"], render=self._cell_text, window=LOG_CAP, id="logs"
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        if column == 1:
            return Text(str(value), style=self.deck.status_style(_LEVEL_STYLE.get(str(value), "")))
        return str(value)

    def matches(self, line: LogLine) -> bool:
        """True if ``line`` passes this screen's filters."""
        if self.task_filter and line.task != self.task_filter:
            return False
        if self.workflow_filter and line.workflow != self.workflow_filter:
            return False
        if self.agent_filter and line.agent != self.agent_filter:
            return False
        if self.level and line.level in LEVELS and self.level in LEVELS:
            return LEVELS.index(line.level) >= LEVELS.index(self.level)
        return True

    def lines(self) -> Iterable[LogLine]:
        """The matching lines, newest first."""
        return (line for line in reversed(self.deck.logbook) if self.matches(line))

    async def reload(self) -> None:
        """Show the matching lines; when following, put the cursor on the newest."""
        table = self.query_one(LiveTable)
        table.sync(
            [
                (str(line.seq), (when(line.at)[11:], line.level, line.topic, line.text))
                for line in self.lines()
            ]
        )
        if self.following and table.row_count:
            table.goto(0)

    def action_follow(self) -> None:
        """Stop or start following the newest line."""
        self.following = not self.following
        self.deck.update_bar()
        self.call_later(self.deck.refresh_now)

    def action_errors(self) -> None:
        """Show only errors, or everything again."""
        self.level = None if self.level == "error" else "error"
        self.deck.update_bar()
        self.call_later(self.deck.refresh_now)
