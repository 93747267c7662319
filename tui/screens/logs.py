"""Logs: the events stream as a capped log view, newest first, with filters and search.

The app keeps the last :data:`LOG_CAP` events as :class:`LogLine` (``agentdeck.tui.feed``)
whatever screen is visible, so opening the logs shows the recent past at once. ``f`` stops and
starts following (while not following, the cursor stays where it is instead of jumping to the
newest line); ``p`` freezes the whole view as everywhere; ``/`` searches the lines' text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Self

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from agentdeck.core.errors import AgentdeckError
from agentdeck.tui.feed import LEVELS, LOG_CAP, LogLine, log_line
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.table import when
from agentdeck.tui.widgets.live_table import LiveTable

__all__ = ["LEVELS", "LOG_CAP", "LogLine", "LogsScreen", "log_line"]
_LEVEL_STYLE = {"error": "failed", "warning": "retrying", "debug": "skipped"}


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
        # A line's row never changes: built once, not once per refresh (a refresh shows up to
        # LOG_CAP lines, and formatting their times was most of its cost).
        self._rows: dict[int, tuple[str, tuple[str, str, str, str]]] = {}
        # A level's cell, made once per level and refresh (the theme may have changed) and
        # shared by its lines: the table only reads it.
        self._level_cells: dict[str, Text] = {}
        # The matching rows, newest first, with their lines' numbers, as last shown, and the
        # filters and the newest line they were made for: a refresh looks only at the lines
        # that came since (~50 at 200 events/s), not at all 2,000.
        self._matching: list[tuple[str, tuple[str, str, str, str]]] = []
        self._matching_seqs: list[int] = []
        self._matching_for: tuple[str | None, ...] = ()
        self._newest = 0

    @classmethod
    def from_args(cls, args: Sequence[str]) -> Self:
        """``:logs task=<id> wf=<id> agent=<id> level=<level>``, any of them."""
        filters: dict[str, str] = {}
        names = {"task": "task", "wf": "workflow", "workflow": "workflow", "agent": "agent"}
        for arg in args:
            key, eq, value = arg.partition("=")
            if eq and key in names and value:
                filters[names[key]] = value
            elif eq and key == "level" and value in LEVELS:
                filters["level"] = value
            else:
                raise AgentdeckError(
                    f"logs: {arg!r} is not a filter; use task=<id>, wf=<id>, agent=<id> or "
                    f"level=<{'|'.join(LEVELS)}>"
                )
        return cls(**filters)

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
            level = str(value)
            cell = self._level_cells.get(level)
            if cell is None:  # one look-up per level and refresh, not one per cell drawn
                style = self.deck.status_style(_LEVEL_STYLE.get(level, ""))
                cell = self._level_cells[level] = Text(level, style=style)
            return cell
        return str(value)

    def _row(self, line: LogLine) -> tuple[str, tuple[str, str, str, str]]:
        row = self._rows.get(line.seq)
        if row is None:
            row = self._rows[line.seq] = (
                str(line.seq),
                (when(line.at)[11:], line.level, line.topic, line.text),
            )
        return row

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
        return (line for line in reversed(self.deck.feed.logbook) if self.matches(line))

    async def reload(self) -> None:
        """Show the matching lines; when following, put the cursor on the newest."""
        table = self.query_one(LiveTable)
        self._level_cells.clear()  # the theme may have changed since
        if len(self._rows) > 2 * LOG_CAP:  # forget lines the capped logbook let go
            kept = {line.seq for line in self.deck.feed.logbook}
            self._rows = {seq: row for seq, row in self._rows.items() if seq in kept}
        table.sync(self._matching_rows(), cursor=0 if self.following else None)

    def _matching_rows(self) -> list[tuple[str, tuple[str, str, str, str]]]:
        # The rows of the last refresh, with the lines that came since on top and those the
        # logbook let go cut off the bottom (all of them again when a filter changed).
        logbook = self.deck.feed.logbook
        filters = (self.task_filter, self.workflow_filter, self.agent_filter, self.level)
        if filters != self._matching_for:
            self._matching, self._matching_seqs, self._newest = [], [], 0
            self._matching_for = filters
        rows: list[tuple[str, tuple[str, str, str, str]]] = []
        seqs: list[int] = []
        for line in reversed(logbook):
            if line.seq <= self._newest:
                break
            if self.matches(line):
                rows.append(self._row(line))
                seqs.append(line.seq)
        if logbook:
            self._newest = logbook[-1].seq
            oldest = logbook[0].seq
            while self._matching_seqs and self._matching_seqs[-1] < oldest:
                self._matching_seqs.pop()
                self._matching.pop()
        if rows:
            self._matching = rows + self._matching
            self._matching_seqs = seqs + self._matching_seqs
        return self._matching

    def action_follow(self) -> None:
        """Stop or start following the newest line."""
        self.following = not self.following
        self.changed()
        self.reload_soon()

    def action_errors(self) -> None:
        """Show only errors, or everything again."""
        self.level = None if self.level == "error" else "error"
        self.changed()
        self.reload_soon()
