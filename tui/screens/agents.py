"""Agents: every live agent with its capabilities, load, success rate and last heartbeat."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from agentdeck.core.actions import Action
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.table import ago
from agentdeck.tui.widgets.live_table import LiveTable


class AgentsScreen(DeckScreen):
    """The fleet as the registry sees it (heartbeats keep it fresh)."""

    crumb: ClassVar[str] = "Agents"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "drain", "Drain"),
        Binding("u", "undrain", "Undrain"),
    ]

    def body(self) -> ComposeResult:
        """The agent table."""
        yield LiveTable(
            ["name", "state", "capabilities", "busy", "ok%", "ok", "failed", "seen"],
            render=self._cell_text,
            id="agents",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        if column == 1:
            style = {"up": "succeeded", "draining": "retrying", "down": "failed"}.get(str(value))
            return Text(str(value), style=self.deck.status_style(style or ""))
        return str(value)

    async def reload(self) -> None:
        """Read the registry."""
        now = self.sources.clock.now()
        agents = await self.sources.registry.agents()
        rows = []
        for a in sorted(agents, key=lambda a: a.name):
            runs = a.succeeded + a.failed
            rate = f"{100 * a.succeeded / runs:.0f}" if runs else "-"
            rows.append(
                (
                    a.id,
                    (
                        a.name,
                        a.state.value,
                        ",".join(a.capabilities),
                        f"{a.in_flight}/{a.concurrency}",
                        rate,
                        a.succeeded,
                        a.failed,
                        ago(a.last_seen, now),
                    ),
                )
            )
        self.query_one(LiveTable).sync(rows)

    def action_drain(self) -> None:
        """Drain the agent under the cursor: it finishes what runs and takes nothing new."""
        self.request(Action.DRAIN, self.cursor_keys(), "agent")

    def action_undrain(self) -> None:
        """Let the drained agent under the cursor take tasks again."""
        self.request(Action.UNDRAIN, self.cursor_keys(), "agent")
