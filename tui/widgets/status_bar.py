"""The top line: breadcrumbs on the left, badges (PAUSED, READ-ONLY, tagged rows) on the right."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static


class StatusBar(Horizontal):
    """Where you are and what mode the view is in."""

    def compose(self) -> ComposeResult:
        """Two labels: crumbs and badges."""
        yield Static(id="crumbs")
        yield Static(id="badges")

    def show(self, crumbs: Sequence[str], badges: Sequence[tuple[str, str]]) -> None:
        """Set the breadcrumbs and the badges (``(text, style)`` pairs)."""
        # Unchanged, it is left alone: an update re-lays out the screen, 4 times a second.
        if (shown := (list(crumbs), list(badges))) == getattr(self, "_shown", None):
            return
        self._shown = shown
        self.query_one("#crumbs", Static).update(Text(" \u203a ".join(["agentdeck", *crumbs])))
        line = Text()
        for text, style in badges:
            line.append(f" {text} ", style=style)
            line.append(" ")
        self.query_one("#badges", Static).update(line)
