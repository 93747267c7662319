"""Capabilities: each one's queue and agents, and whether it is held (paused by an operator,
behind an open circuit breaker, rate-limited by its provider), with the holds in force listed
under the table the same way the command line lists them (``agentdeck.tui.holds``)."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from agentdeck.core.actions import Action
from agentdeck.core.holds import CapabilityHolds, Hold
from agentdeck.tui.holds import COLUMNS, hold_row
from agentdeck.tui.queue_counts import IN_FLIGHT, QUEUED
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.widgets.live_table import LiveTable


class CapabilitiesScreen(DeckScreen):
    """Every capability agents offer or tasks need: ``z`` pauses one, ``a`` resumes it."""

    crumb: ClassVar[str] = "Capabilities"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("z", "pause_capability", "Pause"),
        Binding("a", "resume_capability", "Resume"),
    ]

    def body(self) -> ComposeResult:
        """The capability table, and the holds in force under it (hidden when none)."""
        yield LiveTable(
            ["capability", "state", "queued", "running", "agents"],
            render=self._cell_text,
            id="capabilities",
        )
        holds = Static(id="holds", markup=False, classes="summary")
        holds.display = False
        yield holds

    def on_screen_resume(self) -> None:
        """Shown again: the queues are counted by the Store afresh (DeckScreen's handler,
        which Textual calls after this one, reads the screen again)."""
        self.deck.feed.queues.forget()

    def _cell_text(self, column: int, value: Any) -> str | Text:
        if column == 1:
            style = "succeeded" if value == "active" else "paused"
            return Text(str(value), style=self.deck.status_style(style))
        return str(value)

    def _show_holds(self, holds: list[Hold], now: float) -> None:
        shown = self.query_one("#holds", Static)
        shown.display = bool(holds)
        if not holds:
            return
        rows = [hold_row(h, now) for h in holds]
        # The columns of the one table of holds, minus "since", and minus "until" too when
        # they would not fit on one line ("left" says the same, relative): 80 columns are few.
        keep = [i for i, name in enumerate(COLUMNS) if name != "since"]
        widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in rows)) for i in keep]
        if sum(widths) + 2 * (len(widths) - 1) > self.size.width - 2:  # (the padding)
            at = keep.index(COLUMNS.index("until"))
            del keep[at], widths[at]
        text = Text("Holds\n", style="bold")
        text.append("  ".join(COLUMNS[i].ljust(w) for i, w in zip(keep, widths, strict=True)))
        text.append("\n", style="bold")
        for r in rows:
            text.append("  ".join(r[i].ljust(w) for i, w in zip(keep, widths, strict=True)) + "\n")
        shown.update(text)

    async def reload(self) -> None:
        """Read the agents, the open tasks and the holds in force."""
        now = self.sources.clock.now()
        sources = self.sources
        holds = await CapabilityHolds(
            sources.registry, sources.clock, refresh=0, breakers=sources.breakers
        ).holds()
        kinds: dict[str, str] = {}
        for hold in holds:  # (paused sorts first: an operator's pause shows)
            kinds.setdefault(hold.capability, hold.kind)
        self._show_holds(holds, now)
        paused = set(kinds)
        agents: Counter[str] = Counter()
        for agent in await self.sources.registry.agents():
            agents.update(agent.capabilities)
        # The overview's queue counts: counted by the Store at most every RECOUNT_SECONDS and
        # when shown (a scan of every open task, ~7 ms with 10,000 of them, four times a
        # second, was most of this screen's refresh), kept from the task events in between
        # (agentdeck.tui.queue_counts says how stale that can be); with no events stream,
        # counted every time.
        counts = self.deck.feed.queues
        if sources.events is None or counts.due(now):
            counts.recount(await sources.store.count_by_capability([*QUEUED, *IN_FLIGHT]), now)
        queued, running = counts.queued, counts.flying
        names = sorted(set(agents) | paused | set(queued) | set(running))
        self.query_one(LiveTable).sync(
            [
                (
                    name,
                    (
                        name,
                        kinds.get(name, "active"),
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
