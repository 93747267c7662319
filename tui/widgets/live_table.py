"""A table that follows live data cheaply: it holds, and draws, only the rows that can be seen.

A :class:`LiveTable` holds a *window*: the rows that fit on screen. The list behind it has
``total`` rows and comes in one of two ways:

- :meth:`LiveTable.sync`: the screen hands over the whole current list as ``(key, cells)`` rows
  (agents, workflows, breakers: lists that fit in memory); the table filters and sorts it
  itself and shows the window;
- :meth:`LiveTable.sync_page`: the screen reads from the Store only the rows of the window
  (:attr:`LiveTable.page`, an offset and a limit) and the total (the tasks list, which can be
  huge). Moving past the window, sorting or filtering posts :class:`LiveTable.Reload`, and the
  screen reads again.

Either way a refresh draws again only the lines whose row changed (a changed cell, another row
on that line), and puts the cursor back on the item it was on, at the same height on screen.
The window is drawn by :class:`~agentdeck.tui.widgets.line_table.LineTable`, on Textual's
public API, exactly as Textual's ``DataTable`` would draw it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message

from agentdeck.tui.widgets.line_table import LineTable
from agentdeck.tui.widgets.table_lines import Simple, simple_cell

Row = tuple[str, tuple[Any, ...]]
"""A row: its key (a task or workflow id) and its cell values."""

#: Renders one cell value as shown (plain values become text; status cells get colour).
CellRenderer = Callable[[int, Any], str | Text]

#: Rows a window holds before the table is laid out (then: as many as fit).
UNSIZED_ROWS = 50
#: Rows one turn of the mouse wheel moves the window.
WHEEL_ROWS = 3


def _sort_key(value: Any) -> tuple[int, Any]:
    # None sorts last, numbers as numbers, everything else as text.
    if value is None:
        return (2, "")
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())


class LiveTable(LineTable):
    """A row-cursor table fed by :meth:`sync` or :meth:`sync_page`, with filter, sort by column
    and tagged rows, holding only the rows on screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "cursor_down", "Down", show=False),
        Binding("k,up", "cursor_up", "Up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("g,ctrl+home", "scroll_top", "Top", show=False),
        Binding("G,ctrl+end", "scroll_bottom", "Bottom", show=False),
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("s", "sort_next", "Sort", show=False),
        Binding("S", "sort_reverse", "Reverse", show=False),
    ]

    class Reload(Message):
        """A paged table needs other rows (the window moved, the sort or the filter changed):
        the screen should read again."""

    def __init__(
        self,
        columns: Sequence[str],
        *,
        render: CellRenderer | None = None,
        window: int | None = None,
        taggable: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(([" "] if taggable else []) + list(columns), fixed=int(taggable), id=id)
        self.column_names = list(columns)
        self.window = window
        """The most rows held at once (None: as many as fit on screen)."""
        self.taggable = taggable
        self.filter_text = ""
        self.sort_column: int | None = None
        self.sort_reverse = False
        self.tagged: set[str] = set()
        self.total = 0
        """How many rows the list has (after the filter), held or not."""
        self.top = 0
        """Where the window starts in the list (the index of the top row held)."""
        self.paged = False
        """True when the screen feeds the window only (:meth:`sync_page`)."""
        self._renderer = render or (lambda _i, v: "-" if v is None else str(v))
        self._source: list[Row] = []
        self._ordered: list[Row] | None = None
        self._index: dict[str, int] = {}
        self._page_offset = 0
        self._want: int | None = None
        self._follow: str | None = None

    def on_resize(self) -> None:
        """More or fewer rows fit: hold as many as can be seen."""
        if self.is_mounted and len(self._keys) != self.fits() and self.total:
            self._moved()

    # ------------------------------------------------------------------------------ data

    @property
    def position(self) -> int:
        """The cursor's index in the whole list (not just the window)."""
        return self.top + self._cursor

    @property
    def all_keys(self) -> list[str]:
        """Every key of the list in table order (a paged table knows only its window)."""
        if self.paged:
            return self.keys
        return [key for key, _ in self._order()]

    @property
    def page(self) -> tuple[int, int]:
        """What a paged table needs read: ``(offset, limit)`` of the rows to show."""
        # (the cursor's row stays in the window, even when fewer rows fit than before)
        start = self._window_start(self.position if self._want is None else self._want)
        return start, self.fits()

    def fits(self) -> int:
        """How many rows the window holds: those that fit on screen (capped by ``window``)."""
        height = self.scrollable_content_region.height
        if height <= 0:
            height = UNSIZED_ROWS
        else:
            height -= self.header_height
        rows = max(1, height)
        return rows if self.window is None else max(1, min(rows, self.window))

    def range_text(self) -> str:
        """``rows 41\u201380 of 10,000`` (or ``no rows``)."""
        if not self.total:
            return "no rows"
        last = min(self.total, self.top + max(len(self._keys), 1))
        return f"rows {self.top + 1:,}\u2013{last:,} of {self.total:,}"  # an en dash

    def sync(self, rows: Sequence[Row], *, cursor: int | None = None) -> None:
        """Show ``rows``, the whole list (filtered, sorted, windowed), touching only what
        changed; with ``cursor``, put the cursor on that row of the list (as :meth:`goto`
        would, without drawing the window twice)."""
        self.paged = False
        self._source = list(rows)
        self._ordered = None
        if cursor is not None and self.is_mounted:
            self._want = max(0, min(cursor, len(self._order()) - 1))
        self._refresh_rows()

    def sync_page(self, rows: Sequence[Row], offset: int, total: int) -> None:
        """Show ``rows``, the rows of the list from ``offset`` on (read for :attr:`page`), out
        of ``total``; filter and sort were the screen's to apply."""
        self.paged = True
        self._source = list(rows)
        self._ordered = None
        self._page_offset, self.total = offset, total
        self._refresh_rows()

    def restyle(self) -> None:
        """Render every cell again (the theme changed, so the renderer's colours did)."""
        self.forget_cells()
        self._refresh_rows()

    def _order(self) -> list[Row]:
        # The whole list, filtered and sorted; kept until the rows, filter or sort change.
        if self._ordered is None:
            rows = self._source
            if self.filter_text and not self.paged:
                needle = self.filter_text.lower()
                rows = [r for r in rows if any(needle in str(c).lower() for c in (r[0], *r[1]))]
            if self.sort_column is not None and not self.paged:
                col = self.sort_column
                rows = sorted(rows, key=lambda r: _sort_key(r[1][col]), reverse=self.sort_reverse)
            self._ordered = rows
            self._index = {}
        return self._ordered

    def _index_of(self, key: str) -> int | None:
        if self.paged:
            return None
        if not self._index:
            self._index = {k: i for i, (k, _) in enumerate(self._order())}
        return self._index.get(key)

    def _window_start(self, pos: int) -> int:
        # The smallest move of the window that shows row ``pos``.
        n = self.fits()
        start = self.top
        if pos >= start + n:
            start = pos - n + 1
        elif pos < start:
            start = pos
        return max(0, min(start, self.total - n))

    def render_cell(self, column: int, value: Any) -> Text:
        """How ``value`` shows in ``column``: the tag mark, or the screen's renderer's text."""
        # Text, never str: a str would be read as markup elsewhere, and a task key or a log
        # line holding "[/]" must show as written.
        if self.taggable:
            if column == 0:
                return Text("●", style="bold") if value else Text(" ", end="")
            column -= 1
        shown = self._renderer(column, value)
        return Text(shown, no_wrap=True, end="") if isinstance(shown, str) else shown

    def read_cell(self, column: int, value: Any) -> tuple[Text | None, Simple | None]:
        """:meth:`render_cell`, and a plain ``str`` from the renderer read as it is: no Text
        is made of it unless it is asked for (most cells, and a log's every line)."""
        if self.taggable:
            return super().read_cell(column, value)
        shown = self._renderer(column, value)
        if isinstance(shown, str):
            if shown.isprintable():
                return None, (shown, None, cell_len(shown))
            return Text(shown, no_wrap=True, end=""), None
        return shown, simple_cell(shown)

    def _refresh_rows(self) -> None:
        if not self.is_mounted:
            return
        n = self.fits()
        was_on, was_row = self.cursor_key, self._cursor
        if self.paged:
            self.top = self._page_offset
            window = self._source[:n]
            arrived = self._want is None or self._page_offset == self.page[0]
            follow = self._follow if self._follow is not None and arrived else was_on
            moved = next((i for i, (k, _) in enumerate(window) if k == follow), None)
            if moved is not None and (self._want is None or self._follow is not None):
                target = self.top + moved  # re-sorted within the window: follow the item
            elif self._want is not None:
                target = self._want
            else:
                target = self.top + was_row
            if arrived:
                self._follow = None
        else:
            ordered = self._order()
            self.total = len(ordered)
            found = None
            if self._want is None and was_on is not None:
                found = self._index_of(was_on)
            if self._want is not None:
                target = self._want
                self.top = self._window_start(target)
            elif found is not None:
                # The item the cursor was on stays under it, at the same height if it can
                # (on the last line if fewer lines fit now).
                target = found
                self.top = max(0, min(found - min(was_row, n - 1), self.total - n))
            else:
                target = self.top + was_row
                self.top = max(0, min(self.top, self.total - n))
            window = ordered[self.top : self.top + n]
        if not self.paged or self._want is None or self._page_offset == self.page[0]:
            # (a paged table keeps a pending move until the page it asked for comes)
            self._want = None
        tagged = self.tagged if self.taggable else None
        self.show(
            [
                (key, (key in tagged, *cells) if tagged is not None else cells)
                for key, cells in window
            ]
        )
        row = max(0, min(target - self.top, len(self._keys) - 1)) if self._keys else 0
        self.move_cursor(row=row)

    # ------------------------------------------------------------------------ moving

    def goto(self, pos: int) -> None:
        """Put the cursor on row ``pos`` of the whole list, moving the window if need be."""
        if not self.total:
            return
        pos = max(0, min(pos, self.total - 1))
        start = self._window_start(pos)
        if start == self.top and pos - start < len(self._keys):
            self.move_cursor(row=pos - start)
            return
        self._want = pos
        self._moved()

    def goto_key(self, key: str) -> bool:
        """Put the cursor on the row with ``key``; False if the table does not know it."""
        index = self._index_of(key)
        if index is None:
            if key in self._keys:
                self.move_cursor(row=self._keys.index(key))
                return True
            return False
        self.goto(index)
        return True

    def _moved(self) -> None:
        # The window must show other rows: a paged table asks its screen for them.
        if self.paged:
            self.post_message(self.Reload())
        else:
            self._refresh_rows()

    def action_cursor_down(self) -> None:
        """Down one row (past the window: the window follows)."""
        self.hide_hover()
        self.goto(self.position + 1)

    def action_cursor_up(self) -> None:
        """Up one row."""
        self.hide_hover()
        self.goto(self.position - 1)

    def action_page_down(self) -> None:
        """Down one screenful."""
        self.hide_hover()
        self.goto(self.position + self.fits())

    def action_page_up(self) -> None:
        """Up one screenful."""
        self.hide_hover()
        self.goto(self.position - self.fits())

    def action_scroll_top(self) -> None:
        """The first row of the whole list."""
        self.hide_hover()
        self.goto(0)

    def action_scroll_bottom(self) -> None:
        """The last row of the whole list."""
        self.hide_hover()
        self.goto(self.total - 1)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        """The wheel moves the cursor a few rows (so it reaches rows the window does not
        hold); with ctrl or shift it scrolls sideways, as anywhere."""
        if not (event.ctrl or event.shift):
            event.stop()
            event.prevent_default()
            self.goto(self.position + WHEEL_ROWS)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        """The wheel moves the cursor a few rows up."""
        if not (event.ctrl or event.shift):
            event.stop()
            event.prevent_default()
            self.goto(self.position - WHEEL_ROWS)

    # --------------------------------------------------------------------------- actions

    def _reordered(self) -> None:
        # Filter or sort changed: the order is stale. A paged table cannot tell where its item
        # went in a list it does not hold: it reads the top again and keeps the cursor on the
        # item if the item is there, else puts it on the first row.
        self._ordered = None
        if self.paged:
            self._want, self._follow = 0, self.cursor_key
            self.post_message(self.Reload())
        self._refresh_rows()

    def set_filter(self, text: str) -> None:
        """Show only rows with a cell containing ``text`` (any case); empty shows all."""
        self.filter_text = text
        self._reordered()

    def toggle_tag(self) -> None:
        """Tag or untag the row under the cursor, then move down (like a file manager)."""
        key = self.cursor_key
        if not self.taggable or key is None:
            return
        self.tagged.symmetric_difference_update({key})
        self._refresh_rows()
        self.action_cursor_down()

    def tagged_keys(self) -> list[str]:
        """Tagged rows still in the data, in table order (a paged table keeps every tag: it
        cannot see the rows outside its window)."""
        if self.paged:
            return sorted(self.tagged)
        present = [k for k, _ in self._order() if k in self.tagged]
        self.tagged = set(present)
        return present

    def clear_tags(self) -> None:
        """Untag every row."""
        self.tagged.clear()
        self._refresh_rows()

    def action_sort_next(self) -> None:
        """Sort by the next column (none → first → ... → last → none)."""
        n = len(self.column_names)
        self.sort_column = 0 if self.sort_column is None else self.sort_column + 1
        if self.sort_column >= n:
            self.sort_column = None
        self.sort_reverse = False
        self._reordered()
        self._notify_sort()

    def action_sort_reverse(self) -> None:
        """Reverse the sort order (sorting by the first column if none is chosen)."""
        if self.sort_column is None:
            self.sort_column = 0
        self.sort_reverse = not self.sort_reverse
        self._reordered()
        self._notify_sort()

    def sort_by(self, column: int, reverse: bool = False) -> None:
        """Sort by ``column`` (an index into the columns given at construction)."""
        self.sort_column, self.sort_reverse = column, reverse
        self._reordered()

    def header_clicked(self, column: int) -> None:
        """A click on a header sorts by it (again: reverses)."""
        index = column - self._fixed
        if index < 0:
            return
        if self.sort_column == index:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = index, False
        self._reordered()

    def _notify_sort(self) -> None:
        if self.sort_column is None:
            self.notify("unsorted", timeout=1.5)
        else:
            arrow = "▼" if self.sort_reverse else "▲"
            self.notify(f"sorted by {self.column_names[self.sort_column]} {arrow}", timeout=1.5)
