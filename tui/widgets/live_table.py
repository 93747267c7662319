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

It is a Line API widget on Textual's public API (``ScrollView`` + ``render_line``, as Textual's
``Log`` is): it draws what Textual's ``DataTable`` draws for a row cursor, line for line (see
:mod:`agentdeck.tui.widgets.table_lines`), and posts the ``RowSelected`` message screens
written for a DataTable handle.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets.data_table import RowKey

from agentdeck.tui.widgets.table_lines import (
    EMPTY,
    Look,
    draw_row,
    one_line,
    width_of,
)

Row = tuple[str, tuple[Any, ...]]
"""A row: its key (a task or workflow id) and its cell values."""

#: Renders one cell value as shown (plain values become text; status cells get colour).
CellRenderer = Callable[[int, Any], str | Text]

#: Rows a window holds before the table is laid out (then: as many as fit).
UNSIZED_ROWS = 50
#: Cells whose drawn content is kept (a few screens' worth at 160x48).
CONTENTS_HELD = 2_000
#: Lines kept drawn (every line of a few states of a big screen: cursor, hover, scroll).
LINES_HELD = 1_000
#: Rows one turn of the mouse wheel moves the window.
WHEEL_ROWS = 3
#: Blank columns each side of a cell.
PAD = 1
#: The tag column's key (it shows ● on a tagged row).
TAG = "_tag"

_stamps = itertools.count(1)


def _sort_key(value: Any) -> tuple[int, Any]:
    # None sorts last, numbers as numbers, everything else as text.
    if value is None:
        return (2, "")
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())


class LiveTable(ScrollView, can_focus=True):
    """A row-cursor table fed by :meth:`sync` or :meth:`sync_page`, with filter, sort by column
    and tagged rows, holding only the rows on screen."""

    # Its height must come from the layout: sized to its content, a table holding only the
    # rows that fit would shrink to them, and fewer would fit each time. The rest is
    # DataTable's look, so a screen looks the same as it did on one.
    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        height: 1fr;
        max-height: 100%;

        &:focus {
            background-tint: $foreground 5%;
            & > .live-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .live-table--header {
                background-tint: $foreground 5%;
            }
        }
        &:dark {
            & > .live-table--even-row {
                background: $surface-darken-1 40%;
            }
        }
        & > .live-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .live-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .live-table--odd-row {
        }
        & > .live-table--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .live-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .live-table--header-cursor {
            background: $accent-darken-1;
            color: $foreground;
        }
        & > .live-table--header-hover {
            background: $accent 30%;
        }
        & > .live-table--hover {
            background: $block-hover-background;
        }
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-table--header",
        "live-table--odd-row",
        "live-table--even-row",
        "live-table--cursor",
        "live-table--header-cursor",
        "live-table--header-hover",
        "live-table--hover",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("ctrl+home,g", "scroll_top", "Top", show=False),
        Binding("ctrl+end,G", "scroll_bottom", "Bottom", show=False),
        Binding("s", "sort_next", "Sort", show=False),
        Binding("S", "sort_reverse", "Reverse", show=False),
    ]

    zebra_stripes = reactive(False)
    """Alternate rows in two colours."""

    header_height = 1
    """Lines the header takes (the rows start below it)."""

    class Reload(Message):
        """A paged table needs other rows (the window moved, the sort or the filter changed):
        the screen should read again."""

    class RowSelected(Message, namespace="data_table"):
        """Enter, or a click on the cursor's row: open that row.

        Handled as ``on_data_table_row_selected``, with ``row_key`` and ``cursor_row``, the
        names DataTable's message has: screens written for a DataTable need no change."""

        def __init__(self, table: LiveTable, cursor_row: int, row_key: RowKey) -> None:
            super().__init__()
            self.table = table
            self.cursor_row = cursor_row
            """The line of the window the row is on."""
            self.row_key = row_key
            """The row's key (``row_key.value`` is the item's id)."""

        @property
        def control(self) -> LiveTable:
            """The table the row was selected in."""
            return self.table

    def __init__(
        self,
        columns: Sequence[str],
        *,
        render: CellRenderer | None = None,
        window: int | None = None,
        taggable: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
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
        self.cell_updates = 0
        """Cells rendered again for rows already held (a measure of how little a refresh
        redraws)."""
        self.rebuilds = 0
        """Times the window changed its number of rows."""
        self.rekeys = 0
        """Times the window's lines took other rows in place (re-sorted, moved)."""
        self._renderer = render or (lambda _i, v: "-" if v is None else str(v))
        labels = ([" "] if taggable else []) + self.column_names
        self._labels = [Text.from_markup(label) for label in labels]
        self._widths: list[int] = []  # content widths: measured on mount, then only grow
        self._fixed = 1 if taggable else 0  # (the tag column is one cell wide, always)
        self._source: list[Row] = []
        self._ordered: list[Row] | None = None
        self._index: dict[str, int] = {}
        self._page_offset = 0
        self._want: int | None = None
        self._follow: str | None = None
        # The window: its keys top to bottom, and per key the values, the cells as shown,
        # and a stamp that changes whenever those cells do (the drawn lines are keyed on it).
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._shown: dict[str, list[Text]] = {}
        self._stamp: dict[str, int] = {}
        self._cursor = 0
        self._hover = 0
        self._show_hover = False
        self._look: Look | None = None
        self._generation = 0  # bumped when the look or the column widths change
        self._lines: LRUCache[tuple[Any, ...], Strip] = LRUCache(LINES_HELD)
        # (the cell is held with its content, so an id is not reused while it is here)
        self._contents: LRUCache[tuple[int, int], tuple[Text, list[Segment] | None]] = LRUCache(
            CONTENTS_HELD
        )

    def on_mount(self) -> None:
        """Measure the headers (the columns are at least that wide)."""
        console = self.app.console
        self._widths = [width_of(label, console) for label in self._labels]
        if self.taggable:
            self._widths[0] = 1
        self._resize_virtual()

    def on_resize(self) -> None:
        """More or fewer rows fit: hold as many as can be seen."""
        if self.is_mounted and len(self._keys) != self.fits() and self.total:
            self._moved()

    # ------------------------------------------------------------------------------ data

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._keys or not 0 <= self._cursor < len(self._keys):
            return None
        return self._keys[self._cursor]

    @property
    def cursor_row(self) -> int:
        """The cursor's line in the window (0: the top row held)."""
        return self._cursor

    @property
    def hover_row(self) -> int:
        """The line the mouse is over (-1: the header), whether it is shown or not."""
        return self._hover

    @property
    def row_count(self) -> int:
        """How many rows the window holds."""
        return len(self._keys)

    @property
    def position(self) -> int:
        """The cursor's index in the whole list (not just the window)."""
        return self.top + self._cursor

    @property
    def keys(self) -> list[str]:
        """The keys of the rows held (the window), top to bottom."""
        return list(self._keys)

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

    def get_row(self, key: str) -> list[Text]:
        """The cells of the held row ``key`` as shown (the tag cell first on a taggable
        table); KeyError if the window does not hold it."""
        try:
            return list(self._shown[key])
        except KeyError:
            raise KeyError(f"no row {key!r} in the window (it holds {self.keys!r})") from None

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

    def sync(self, rows: Sequence[Row]) -> None:
        """Show ``rows``, the whole list (filtered, sorted, windowed), touching only what
        changed."""
        self.paged = False
        self._source = list(rows)
        self._ordered = None
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
        self._cells.clear()
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

    def _cell(self, index: int, value: Any) -> Text:
        # Text, never str: a str would be read as markup elsewhere, and a task key or a log
        # line holding "[/]" must show as written.
        if self.taggable:
            if index == 0:
                return Text("●", style="bold") if value else Text(" ", end="")
            index -= 1
        shown = self._renderer(index, value)
        return Text(shown, no_wrap=True, end="") if isinstance(shown, str) else shown

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
            found = self._index_of(was_on) if was_on is not None else None
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
        self._show(
            [
                (key, (key in tagged, *cells) if tagged is not None else cells)
                for key, cells in window
            ]
        )
        row = max(0, min(target - self.top, len(self._keys) - 1)) if self._keys else 0
        self.move_cursor(row=row)

    def _show(self, rows: Sequence[Row]) -> None:
        # Give each line of the window its row. A row held before keeps its cells, and only
        # its changed cells are rendered again; only lines whose row or cells changed are
        # drawn again; a column grows (and everything is drawn again) only for a wider cell.
        old_keys = self._keys
        keys = [key for key, _ in rows]
        if len(keys) != len(old_keys):
            self.rebuilds += 1
        elif keys != old_keys:
            self.rekeys += 1
        console = self.app.console
        widths = self._widths
        grew = False
        cells_of: dict[str, tuple[Any, ...]] = {}
        shown_of: dict[str, list[Text]] = {}
        stamp_of: dict[str, int] = {}
        for key, cells in rows:
            before = self._cells.get(key)
            shown = self._shown.get(key)
            if before == cells and shown is not None:
                stamp = self._stamp[key]
            else:
                changed: Sequence[int]
                if before is None or shown is None or len(before) != len(cells):
                    changed = range(len(cells))
                    shown = [EMPTY] * len(cells)
                else:
                    changed = [
                        i for i, (b, a) in enumerate(zip(before, cells, strict=True)) if b != a
                    ]
                    shown = list(shown)
                    self.cell_updates += len(changed)
                for i in changed:
                    shown[i] = cell = self._cell(i, cells[i])
                    if i >= self._fixed and (width := width_of(cell, console)) > widths[i]:
                        widths[i] = width
                        grew = True
                stamp = next(_stamps)
            cells_of[key], shown_of[key], stamp_of[key] = cells, shown, stamp
        old_stamps = self._stamp
        self._keys, self._cells, self._shown, self._stamp = keys, cells_of, shown_of, stamp_of
        if grew or len(keys) != len(old_keys):
            self._resize_virtual()
        if grew:
            self._generation += 1
            self.refresh()
            return
        for line, key in enumerate(keys):
            if line >= len(old_keys) or old_keys[line] != key or old_stamps[key] != stamp_of[key]:
                self.refresh_line(self.header_height + line)
        for line in range(len(keys), len(old_keys)):
            self.refresh_line(self.header_height + line)

    def _resize_virtual(self) -> None:
        width = sum(self._widths) + 2 * PAD * len(self._widths)
        self.virtual_size = Size(width, self.header_height + len(self._keys))

    # ------------------------------------------------------------------------------ drawing

    def notify_style_update(self) -> None:
        """The CSS changed: draw every line again."""
        super().notify_style_update()
        self._look = None
        self.refresh()

    def watch_zebra_stripes(self) -> None:
        """Stripes on or off: every line changes."""
        self._generation += 1
        self.refresh()

    def _read_look(self) -> Look:
        # The styles of this render pass; a change from the last pass draws every line again.
        style = self.get_component_rich_style
        look = Look(
            base=self.rich_style,
            header=style("live-table--header"),
            even=style("live-table--even-row"),
            odd=style("live-table--odd-row"),
            hover=style("live-table--hover"),
            header_hover=style("live-table--header-hover"),
            cursor=style("live-table--cursor"),
            header_cursor=style("live-table--header-cursor"),
        )
        if look != self._look:
            self._look = look
            self._generation += 1
        return look

    def render_lines(self, crop: Region) -> list[Strip]:
        """Render the lines in ``crop`` (the styles are read once for them all)."""
        self._read_look()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the table on screen: the header, a row, or blank below the rows."""
        look = self._look or self._read_look()
        width = self.size.width
        scroll_x = self.scroll_offset.x
        index = y - self.header_height
        if index >= len(self._keys):
            return Strip.blank(width, look.base)
        if index < 0:
            cells, stamp = self._labels, 0
        else:
            key = self._keys[index]
            cells, stamp = self._shown[key], self._stamp[key]
        cursor = index == self._cursor
        hover = self._show_hover and index == self._hover
        cache_key = (stamp, index, cursor, hover, width, scroll_x, self._generation)
        strip = self._lines.get(cache_key)
        if strip is None:
            table_width = sum(self._widths) + 2 * PAD * len(self._widths)
            segments = draw_row(
                cells,
                self._widths,
                index=index,
                look=look,
                zebra=self.zebra_stripes,
                cursor=cursor,
                hover=hover,
                pad=PAD,
                fill=max(0, width - table_width),
                content=self._content,
                console=self.app.console,
                options=self.app.console_options,
            )
            strip = Strip(segments).crop(scroll_x, scroll_x + width)
            strip = strip.adjust_cell_length(width, look.base).simplify()
            self._lines[cache_key] = strip
        return strip

    def _content(self, cell: Text, width: int) -> list[Segment] | None:
        # What a cell draws before the table styles it, kept while the cell is: a row that
        # moves to another line (a re-sort) is styled again, not drawn again.
        key = (id(cell), width)
        held = self._contents.get(key)
        if held is not None and held[0] is cell:
            return held[1]
        content = one_line(cell, width, self.app.console)
        self._contents[key] = (cell, content)
        return content

    # ------------------------------------------------------------------------ moving

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        """Put the cursor on line ``row`` of the window (kept within the rows held)."""
        del animate  # (DataTable's signature: the window never scrolls, nothing to animate)
        row = max(0, min(row, len(self._keys) - 1))
        if row != self._cursor:
            self.refresh_line(self.header_height + self._cursor)
            self._cursor = row
            self.refresh_line(self.header_height + row)

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

    def _keyboard(self) -> None:
        # The keys move the cursor: the mouse's row is no longer lit.
        self._set_hover(self._hover, shown=False)

    def action_cursor_down(self) -> None:
        """Down one row (past the window: the window follows)."""
        self._keyboard()
        self.goto(self.position + 1)

    def action_cursor_up(self) -> None:
        """Up one row."""
        self._keyboard()
        self.goto(self.position - 1)

    def action_page_down(self) -> None:
        """Down one screenful."""
        self._keyboard()
        self.goto(self.position + self.fits())

    def action_page_up(self) -> None:
        """Up one screenful."""
        self._keyboard()
        self.goto(self.position - self.fits())

    def action_scroll_top(self) -> None:
        """The first row of the whole list."""
        self._keyboard()
        self.goto(0)

    def action_scroll_bottom(self) -> None:
        """The last row of the whole list."""
        self._keyboard()
        self.goto(self.total - 1)

    def action_select_cursor(self) -> None:
        """Enter: the row under the cursor is selected (:class:`RowSelected`)."""
        self._keyboard()
        key = self.cursor_key
        if key is not None:
            self.post_message(self.RowSelected(self, self._cursor, RowKey(key)))

    # ------------------------------------------------------------------------ the mouse

    def _set_hover(self, row: int, *, shown: bool) -> None:
        if (row, shown) == (self._hover, self._show_hover):
            return
        self.refresh_line(self.header_height + self._hover)
        self._hover, self._show_hover = row, shown
        self.refresh_line(self.header_height + row)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        """The row under the mouse is lit (the metadata of the cell under it says which)."""
        meta = event.style.meta
        if "row" in meta:
            self._set_hover(meta["row"], shown=True)
        else:
            self._set_hover(self._hover, shown=False)

    def on_leave(self, _event: events.Leave) -> None:
        """The mouse went away: no row is lit."""
        self._set_hover(self._hover, shown=False)

    def on_click(self, event: events.Click) -> None:
        """A click on a header sorts by it (again: reverses); on a row, moves the cursor
        there; on the cursor's row, selects it."""
        meta = event.style.meta
        if "row" not in meta or "column" not in meta:
            return
        row = meta["row"]
        self._set_hover(row, shown=True)
        if row == -1:
            self._header_clicked(meta["column"])
            return
        event.stop()
        if row == self._cursor:
            self.action_select_cursor()
        else:
            self.move_cursor(row=row)

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

    def _header_clicked(self, column: int) -> None:
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
