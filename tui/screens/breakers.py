"""Circuit breakers: per capability and per agent, their state, failures and why they opened."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from agentdeck.core.actions import Action
from agentdeck.core.holds import is_hold_record
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.table import ago
from agentdeck.tui.widgets.live_table import LiveTable

#: Breaker state -> the task-state colour that reads the same way.
_COLOUR = {"closed": "succeeded", "open": "failed", "half_open": "retrying"}


class BreakersScreen(DeckScreen):
    """Breakers from the registry, open ones first: ``o`` trips one open, ``c`` resets it closed."""

    crumb: ClassVar[str] = "Breakers"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "trip", "Trip open"),
        Binding("c", "reset", "Reset closed"),
    ]

    def body(self) -> ComposeResult:
        """The breaker table."""
        yield LiveTable(
            ["breaker", "state", "failures", "since", "reason"],
            render=self._cell_text,
            id="breakers",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        if column == 1:
            return Text(str(value), style=self.deck.status_style(_COLOUR.get(str(value), "")))
        return "-" if value is None else str(value)

    async def reload(self) -> None:
        """Read the breakers."""
        now = self.sources.clock.now()
        # Paused capabilities share the breaker records (core/holds.py): the capabilities
        # screen shows those.
        records = [r for r in await self.sources.registry.breakers() if not is_hold_record(r.name)]
        rank = {"open": 0, "half_open": 1}
        rows = []
        for b in sorted(records, key=lambda b: (rank.get(b.state, 2), b.name)):
            data = dict(b.data)
            since = data.get("changed_at") or data.get("opened_at")
            rows.append(
                (
                    b.name,
                    (
                        b.name,
                        b.state,
                        data.get("consecutive_failures", "-"),
                        ago(float(since), now) if isinstance(since, int | float) else "-",
                        data.get("reason") or "",
                    ),
                )
            )
        self.query_one(LiveTable).sync(rows)

    def action_trip(self) -> None:
        """Open the breaker under the cursor (hold its capability or agent)."""
        self.request(Action.TRIP, self.cursor_keys(), "breaker")

    def action_reset(self) -> None:
        """Close the breaker under the cursor (let work through again)."""
        self.request(Action.RESET, self.cursor_keys(), "breaker")
