"""The action log: every operator command, who asked, when, and what came of it."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult

from tui.screens.base import DeckScreen
from tui.table import when
from tui.widgets.live_table import LiveTable

#: The log is capped: the newest this many commands.
LOG_LIMIT = 500


class ActionsScreen(DeckScreen):
    """Commands newest first, with their outcome (pending until the scheduler carries them out)."""

    crumb: ClassVar[str] = "Action log"

    def body(self) -> ComposeResult:
        """The log table."""
        yield LiveTable(
            ["when", "actor", "action", "target", "status", "result"],
            render=self._cell_text,
            window=LOG_LIMIT,
            id="actions",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        if column == 4:
            style = {"done": "succeeded", "failed": "failed", "pending": "running"}.get(str(value))
            return Text(str(value), style=self.deck.status_style(style or ""))
        return str(value)

    async def reload(self) -> None:
        """Read the newest commands."""
        commands = await self.sources.store.list_commands(limit=LOG_LIMIT)
        self.query_one(LiveTable).sync(
            [
                (
                    c.id,
                    (
                        when(c.created_at),
                        c.actor,
                        c.action,
                        c.target,
                        c.status.value,
                        c.result,
                    ),
                )
                for c in commands
            ]
        )
