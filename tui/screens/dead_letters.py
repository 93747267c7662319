"""Dead letters: messages the bus gave up on, with their queue and reason; ``r`` requeues one.

Requeueing goes through a command like every other action, although the bus is shared and the
UI could requeue directly: that way it lands in the action log (who, when, result) and works
the same from the CLI, and the UI needs no write access of its own to the bus.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from agentdeck.core.actions import Action
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.table import ago
from agentdeck.tui.widgets.live_table import LiveTable

#: The newest this many dead letters are shown.
LIMIT = 500


class DeadLettersScreen(DeckScreen):
    """The newest dead letters first."""

    crumb: ClassVar[str] = "Dead letters"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "requeue", "Requeue"),
        Binding("space", "tag", "Tag"),
    ]

    def body(self) -> ComposeResult:
        """The dead-letter table."""
        yield LiveTable(
            ["id", "queue", "age", "reason", "bytes"],
            window=LIMIT,
            taggable=True,
            id="dead-letters",
        )

    async def reload(self) -> None:
        """Read the bus's dead letters (none when this node has no bus to read)."""
        bus = self.sources.bus
        letters = await bus.dead_letters(limit=LIMIT) if bus is not None else []
        now = self.sources.clock.now()
        self.query_one(LiveTable).sync(
            [(d.id, (d.id, d.queue, ago(d.at, now), d.reason, len(d.body))) for d in letters]
        )

    def action_requeue(self) -> None:
        """Requeue the tagged dead letters, or the one under the cursor."""
        table = self.query_one(LiveTable)
        key = table.cursor_key
        targets = sorted(table.tagged) or ([key] if key else [])
        self.request(Action.REQUEUE, targets, "dead letter")
