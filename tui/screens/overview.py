"""The overview: the fleet at a glance (workflows, queues, agents, throughput, the leader,
and on a cluster each engine's health per host: ``agentdeck.tui.engines``). While the Store or
the Registry does not answer, the cards that read it keep their last picture, dimmed, and say
which source is down and how old the picture is."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.widgets import Sparkline, Static

from agentdeck.core.actions import LEADER, Action
from agentdeck.core.errors import BackendUnavailable
from agentdeck.core.models import AgentState
from agentdeck.core.scheduler import LEASE_NAME
from agentdeck.core.states import WorkflowStatus
from agentdeck.tui.engines import host_table
from agentdeck.tui.queue_counts import IN_FLIGHT, QUEUED
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.sources import ENGINE_OF, REGISTRY, STORE
from agentdeck.tui.widgets.line_card import LineCard

CARD_SOURCES = {
    "#workflows": (STORE, REGISTRY),
    "#queues": (STORE,),
    "#agents": (REGISTRY,),
}
"""The sources each card reads (the throughput card reads the events stream)."""


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
        """Count workflows, open tasks and agents; read the leader and the breakers.

        A card whose source does not answer (BackendUnavailable) keeps its last picture,
        dimmed, and says under it how old the picture is and which source is down (``stale
        12s: Store down``); the next good read shows it live again. The first
        failure is raised after every card is drawn (the app shows it as a toast)."""
        failed: list[BackendUnavailable] = []
        for card, read in (
            ("#workflows", self._workflows),
            ("#queues", self._queues),
            ("#agents", self._agents),
        ):
            try:
                self._show(card, await read())
            except BackendUnavailable as exc:
                failed.append(exc)
        for card in CARD_SOURCES:  # (once all are read: a card names every source down)
            self._mark_stale(card)
        self._throughput()
        if failed:
            raise failed[0]

    async def _workflows(self) -> Text:
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
        return text

    async def _queues(self) -> Text:
        # Counted by the Store at most every RECOUNT_SECONDS (a scan of every open task, ~7 ms
        # with 10,000 of them, scripts/bench_tui.py), kept from the task events in between
        # (agentdeck.tui.queue_counts says how stale that can be); with no events stream,
        # counted every time.
        src = self.sources
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
        return text

    async def _agents(self) -> Text:
        src = self.sources
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
        return text

    def _host_lines(self) -> Text:
        """The engine health table (none when all is embedded): an engine whose source does
        not answer is down in every cell, whatever its last report said."""
        health = self.deck.health
        down = {ENGINE_OF[n] for n in health.failing()} if health is not None else set()
        text = Text()
        for line in host_table(self.sources, self.deck.status_style, down=down):
            text.append("\n")
            text.append_text(line)
        return text

    def _throughput(self) -> None:
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

    def _mark_stale(self, card: str) -> None:
        """Dim ``card``'s last picture and say under it how old it is and which source(s) it
        reads are down (``stale 12s: Store down``); clear that once they answer."""
        health = self.deck.health
        stale = health.summary(CARD_SOURCES[card]) if health is not None else ""
        widget = self.query_one(card, LineCard)
        if widget.border_subtitle != stale:
            widget.border_subtitle = stale
        shown = getattr(self, "_shown", {}).get(card, Text())
        if card == "#agents":  # the engines' table is drawn from reports, not read: always live
            shown = shown + self._host_lines()
        if stale:
            shown = shown.copy()
            shown.stylize("dim")
        self._paint(card, shown)

    def _show(self, selector: str, text: Text) -> None:
        """Keep ``text`` as the card's last good picture; the rates line is painted at once
        (the others by :meth:`_mark_stale`, live or dimmed)."""
        shown = getattr(self, "_shown", {})
        self._shown = shown
        shown[selector] = text
        if selector == "#rates":
            self._paint(selector, text)

    def _paint(self, selector: str, text: Text) -> None:
        # Four times a second most cards read the same: those are left alone. A changed card
        # is repainted without a layout pass: the cards are sized by the grid (and the rates
        # line is one line), never by their text, and a layout pass redraws the whole screen.
        painted = getattr(self, "_painted", {})
        self._painted = painted
        if painted.get(selector) != text:
            painted[selector] = text
            self.query_one(selector, Static).update(text, layout=False)
