"""Text that changes a few lines at a time, drawn as a ``Static`` draws it, repainting only the
lines that changed.

A ``Static`` repaints every line of itself on each update: the overview's cards are 23 lines
high at 160x48 and two of them change four times a second (a count moves), so most of the
overview's repaint was lines that had not changed. :class:`LineCard` draws its text with the
same public call a ``Static`` makes (``Visual.to_strips`` over ``visualize``), compares the lines
with those on screen and asks Textual to repaint only those that differ. Its look (size,
styles, theme, a text selection) changing draws every line again, as a ``Static`` would.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.visual import Visual, VisualType, visualize
from textual.widgets import Static


class LineCard(Static):
    """A ``Static`` showing one :class:`~rich.text.Text` (lines split at newlines and wrapped
    as a ``Static`` wraps them) whose updates repaint only the lines that changed."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text: Text | None = Text()
        self._strips: list[Strip] = []
        self._drawn_for: tuple[Any, ...] | None = None
        self.lines_repainted = 0
        """Lines asked to be repainted by :meth:`update` (a measure of how little it
        repaints)."""

    def render(self) -> Any:
        """The text (what Textual measures the card's height by)."""
        return super().render() if self._text is None else self._text

    def update(self, content: VisualType = "", *, layout: bool = True) -> None:
        """Show ``content``: a :class:`~rich.text.Text` repaints only the lines that come out
        different (anything else is shown as ``Static.update`` shows it)."""
        if not isinstance(content, Text):
            self._text, self._drawn_for = None, None
            super().update(content, layout=layout)
            return
        if content == self._text:
            return
        self._text = content
        before, drawn_for = self._strips, self._drawn_for
        if not self.is_mounted or drawn_for is None or drawn_for != self._look():
            self._drawn_for = None
            self.refresh(layout=layout)
            return
        after = self._draw()
        if len(after) != len(before):
            self.refresh(layout=layout)
            return
        width = self.size.width
        for y, (old, new) in enumerate(zip(before, after, strict=True)):
            if old != new:
                self.lines_repainted += 1
                self.refresh(Region(0, y, width, 1))

    def _look(self) -> tuple[Any, ...]:
        # What the drawn lines depend on besides the text.
        return (self.size, self.visual_style, self.text_selection)

    def _draw(self) -> list[Strip]:
        width, height = self.size
        visual = visualize(self, self._text or Text(), markup=False)
        self._strips = Visual.to_strips(self, visual, width, height, self.visual_style)
        self._drawn_for = self._look()
        return self._strips

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the text as drawn (blank below it)."""
        if self._text is None:
            return super().render_line(y)
        if self._drawn_for != self._look():
            self._draw()
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width, self.visual_style.rich_style)
