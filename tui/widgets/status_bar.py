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
        # Only a label that changed is updated, and without a layout pass when it keeps its
        # width: a layout pass reflows the whole screen, and the rows badge ("rows 1-45 of
        # 1,650") changes with every batch of a growing list, four times a second.
        crumb_line = Text(" \u203a ".join(["agentdeck", *crumbs]))
        badge_line = Text()
        for text, style in badges:
            badge_line.append(f" {text} ", style=style)
            badge_line.append(" ")
        shown: dict[str, Text] = getattr(self, "_shown", {})
        self._shown = shown
        for selector, line in (("#crumbs", crumb_line), ("#badges", badge_line)):
            before = shown.get(selector)
            if before is not None and before == line:
                continue
            shown[selector] = line
            # (#crumbs takes the width left; #badges is as wide as its text)
            same_width = before is not None and before.cell_len == line.cell_len
            self.query_one(selector, Static).update(line, layout=not same_width)
