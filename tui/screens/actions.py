"""The action log: every operator command, who asked, when, and what came of it."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult

from agentdeck.core.models import Command
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.table import when
from agentdeck.tui.widgets.live_table import LiveTable

#: Sorted or filtered, the table orders the rows itself: it reads the newest this many.
SORT_LIMIT = 5_000


class ActionsScreen(DeckScreen):
    """Commands newest first, with their outcome (pending until the scheduler carries them out)."""

    crumb: ClassVar[str] = "Action log"

    def body(self) -> ComposeResult:
        """The log table."""
        yield LiveTable(
            ["when", "actor", "action", "target", "status", "result"],
            render=self._cell_text,
            id="actions",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        if column == 4:
            style = {"done": "succeeded", "failed": "failed", "pending": "running"}.get(str(value))
            return Text(str(value), style=self.deck.status_style(style or ""))
        return str(value)

    async def reload(self) -> None:
        """Read the window of the log the table shows, and how long the log is.

        The log keeps every command, so the table holds only the rows on screen and the Store
        is asked for those (newest first) and a count. Sorted by a column or filtered with
        ``/``, the table orders and filters the newest ``SORT_LIMIT`` itself."""
        store = self.sources.store
        table = self.query_one(LiveTable)
        if table.filter_text or table.sort_column is not None:
            table.sync([_row(c) for c in await store.list_commands(limit=SORT_LIMIT)])
            return
        offset, limit = table.page
        total = await store.count_commands()
        offset = max(0, min(offset, total - limit))
        commands = await store.list_commands(limit=limit, offset=offset)
        table.sync_page([_row(c) for c in commands], offset, total)


def _row(c: Command) -> tuple[str, tuple[Any, ...]]:
    return (c.id, (when(c.created_at), c.actor, c.action, c.target, c.status.value, c.result))
