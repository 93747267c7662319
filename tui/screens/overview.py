"""The overview: the fleet at a glance (workflows, queues, agents, throughput, the leader,
and on a cluster each engine's health per host: ``agentdeck.tui.engines``)."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.widgets import Sparkline, Static

from agentdeck.core.actions import LEADER, Action
from agentdeck.core.models import AgentState
from agentdeck.core.scheduler import LEASE_NAME
from agentdeck.core.states import WorkflowStatus
from agentdeck.tui.engines import host_table
from agentdeck.tui.queue_counts import IN_FLIGHT, QUEUED
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.widgets.line_card import LineCard


class OverviewScreen(DeckScreen):
    """Workflows by state, queue depth per capability, agents up/down, throughput, the leader."""

    crumb: ClassVar[str] = "Overview"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("R", "reload", "Reload limits")]

    def body(self) -> ComposeResult:
        """Four cards in a grid."""
        with Grid(id="overview"):
            card = LineCard(id="workflows", classes="card")
            card.border_title = "Workflows"
            yield card
            card = LineCard(id="queues", classes="card")
            card.border_title = "Queues (queued / in flight)"
            yield card
            card = LineCard(id="agents", classes="card")
            card.border_title = "Agents"
            yield card
            with Vertical(id="throughput", classes="card") as box:
                box.border_title = "Throughput and spend (per s, 60 s)"
                yield LineCard(id="rates")
                yield Sparkline([], id="done-rate")
                yield Sparkline([], id="fail-rate")
                yield Sparkline([], id="cost-rate")

    def action_reload(self) -> None:
        """Ask the leader to re-read its capability limits and label budgets (as SIGHUP)."""
        self.request(Action.RELOAD, [LEADER], "node")

    def on_screen_resume(self) -> None:
        """Shown again: the queues are counted by the Store afresh (DeckScreen's handler,
        which Textual calls after this one, reads the screen again)."""
        self.deck.feed.queues.forget()

    async def reload(self) -> None:
        """Count workflows, open tasks and agents; read the leader and the breakers."""
        src = self.sources
        by_status = Counter(await src.store.count_workflows())
        text = Text()
        for status in WorkflowStatus:
            text.append(f"{status.value:<10}", style=self.deck.status_style(status.value))
            text.append(f"{by_status[status]:>6}\n")
        lease = await src.registry.get_lease(LEASE_NAME)
        text.append("\nleader     ", style="dim")
        none = "none\nstart one: agentdeck --daemon" if src.attached else "none (no scheduler)"
        text.append(lease.holder if lease else none)
        self._show("#workflows", text)

        # Counted by the Store at most every RECOUNT_SECONDS (a scan of every open task, ~7 ms
        # with 10,000 of them, scripts/bench_tui.py), kept from the task events in between
        # (agentdeck.tui.queue_counts says how stale that can be); with no events stream,
        # counted every time.
        counts = self.deck.feed.queues
        now = src.clock.now()
        if src.events is None or counts.due(now):
            counts.recount(await src.store.count_by_capability([*QUEUED, *IN_FLIGHT]), now)
        queued, flying = counts.queued, counts.flying
        text = Text()
        caps = sorted(set(queued) | set(flying))
        for cap in caps[:8]:
            text.append(f"{cap:<16}{queued[cap]:>6} / {flying[cap]:<6}\n")
        if len(caps) > 8:
            text.append(f"… {len(caps) - 8} more capabilities\n", style="dim")
        if not caps:
            text.append("nothing queued", style="dim")
        self._show("#queues", text)

        agents = await src.registry.agents()
        states = Counter(a.state for a in agents)
        text = Text()
        for state in AgentState:
            text.append(f"{state.value:<10}{states[state]:>6}\n")
        busy = sum(a.in_flight for a in agents)
        slots = sum(a.concurrency for a in agents)
        text.append(f"busy      {busy:>6} / {slots} slots\n")
        breakers = [b for b in await src.registry.breakers() if b.state != "closed"]
        text.append("breakers  ", style="dim")
        text.append(", ".join(f"{b.name} {b.state}" for b in breakers) or "all closed")
        for line in host_table(src, self.deck.status_style):  # (none when all is embedded)
            text.append("\n")
            text.append_text(line)
        self._show("#agents", text)

        done, failed = self.deck.feed.rates()
        spent = self.deck.feed.spending()
        self._show(
            "#rates",
            Text.assemble(
                ("succeeded ", self.deck.status_style("succeeded")),
                f"{done[-1] if done else 0:>4}/s   ",
                ("failed ", self.deck.status_style("failed")),
                f"{failed[-1] if failed else 0:>4}/s\n",
                ("spent ", self.deck.status_style("retrying")),
                f"${sum(spent):,.4f} in 60 s",
            ),
        )
        # (a reactive: an equal list is not set again, so it is not redrawn)
        self.query_one("#done-rate", Sparkline).data = done
        self.query_one("#fail-rate", Sparkline).data = failed
        self.query_one("#cost-rate", Sparkline).data = spent

    def _show(self, selector: str, text: Text) -> None:
        # Four times a second most cards read the same: those are left alone. A changed card
        # is repainted without a layout pass: the cards are sized by the grid (and the rates
        # line is one line), never by their text, and a layout pass redraws the whole screen.
        shown = getattr(self, "_shown", {})
        self._shown = shown
        if shown.get(selector) != text:
            shown[selector] = text
            self.query_one(selector, Static).update(text, layout=False)
