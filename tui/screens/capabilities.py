"""Capabilities: each one's queue and agents, and whether an operator paused it."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from agentdeck.core.actions import Action
from agentdeck.core.holds import CapabilityHolds
from agentdeck.core.states import TaskStatus
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.widgets.live_table import LiveTable

_QUEUED = (TaskStatus.READY, TaskStatus.RETRYING)
_RUNNING = (TaskStatus.DISPATCHED, TaskStatus.RUNNING)


class CapabilitiesScreen(DeckScreen):
    """Every capability agents offer or tasks need: ``z`` pauses one, ``a`` resumes it."""

    crumb: ClassVar[str] = "Capabilities"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("z", "pause_capability", "Pause"),
        Binding("a", "resume_capability", "Resume"),
    ]

    def body(self) -> ComposeResult:
        """The capability table."""
        yield LiveTable(
            ["capability", "state", "queued", "running", "agents"],
            render=self._cell_text,
            id="capabilities",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        if column == 1:
            style = "paused" if value == "paused" else "succeeded"
            return Text(str(value), style=self.deck.status_style(style))
        return str(value)

    async def reload(self) -> None:
        """Read the agents, the open tasks and the paused set."""
        holds = CapabilityHolds(self.sources.registry, self.sources.clock, refresh=0)
        paused = await holds.paused()
        agents: Counter[str] = Counter()
        for agent in await self.sources.registry.agents():
            agents.update(agent.capabilities)
        store = self.sources.store
        counts = await store.count_by_capability([*_QUEUED, *_RUNNING])
        queued = Counter({c: sum(by.get(s, 0) for s in _QUEUED) for c, by in counts.items()})
        running = Counter({c: sum(by.get(s, 0) for s in _RUNNING) for c, by in counts.items()})
        names = sorted(set(agents) | paused | set(queued) | set(running))
        self.query_one(LiveTable).sync(
            [
                (
                    name,
                    (
                        name,
                        "paused" if name in paused else "active",
                        queued[name],
                        running[name],
                        agents[name],
                    ),
                )
                for name in names
            ]
        )

    def action_pause_capability(self) -> None:
        """Pause the capability under the cursor: its ready tasks stay ready, none dispatched."""
        self.request(Action.PAUSE_CAPABILITY, self.cursor_keys(), "capability")

    def action_resume_capability(self) -> None:
        """Resume the paused capability under the cursor."""
        self.request(Action.RESUME_CAPABILITY, self.cursor_keys(), "capability")
