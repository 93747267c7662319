"""A Line API table of a few rows with a row cursor, drawn as Textual's DataTable draws them.

:class:`LineTable` holds the rows it is given (the few that fit on screen: the
:class:`~agentdeck.tui.widgets.live_table.LiveTable` above it decides which) and draws them
on Textual's public API alone: a ``ScrollView`` whose ``render_line`` builds each line (see
:mod:`agentdeck.tui.widgets.table_lines`), as Textual's own ``Log`` widget does. Lines are
kept drawn, keyed on what they show; a refresh draws again only the lines whose row or cells
changed, a column only grows (a wider cell draws everything again, once), and the cursor and
the mouse redraw only the lines they leave and reach.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar, cast

from rich.segment import Segment
from rich.text import Text
from textual import events
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
    RowStyles,
    Simple,
    draw_row,
    draw_simple_row,
    one_line,
    simple_cell,
    width_of,
)

# The caches hold a few windows' worth (160x48 shows 45 rows), not more: what they hold lives
# long enough to reach Python's older GC generations, which every collection of theirs walks.
# A log at 200 events/s draws 45 new lines a batch, never shown again; with 1,000 lines and
# 2,000 cells held, the batches that met a collection took up to 45 ms instead of ~15-20
# (scripts/bench_tui.py --screens logs, 2026-12-07, docs/performance.md).
#: Cells whose drawn content is kept (two windows of 6 columns at 160x48).
CONTENTS_HELD = 600
#: Lines kept drawn (every line of a screen in a few states: cursor, hover, scroll).
LINES_HELD = 200
#: Rows whose cells are kept drawn (unstyled), two windows' worth.
ROWS_HELD = 100
#: Blank columns each side of a cell.
PAD = 1

_stamps = itertools.count(1)


class LineTable(ScrollView, can_focus=True):
    """Rows of cells under a header, with a row cursor; each row a key and its values."""

    # Its height must come from the layout: sized to its content, a table holding only the
    # rows that fit would shrink to them, and fewer would fit each time. The rest is
    # DataTable's look, so a screen looks the same as it did on one.
    DEFAULT_CSS = """
    LineTable {
        background: $surface;
        color: $foreground;
        height: 1fr;
        max-height: 100%;

        &:focus {
            background-tint: $foreground 5%;
            & > .line-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .line-table--header {
                background-tint: $foreground 5%;
            }
        }
        &:dark {
            & > .line-table--even-row {
                background: $surface-darken-1 40%;
            }
        }
        & > .line-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .line-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .line-table--odd-row {
        }
        & > .line-table--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .line-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .line-table--header-cursor {
            background: $accent-darken-1;
            color: $foreground;
        }
        & > .line-table--header-hover {
            background: $accent 30%;
        }
        & > .line-table--hover {
            background: $block-hover-background;
        }
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "line-table--header",
        "line-table--odd-row",
        "line-table--even-row",
        "line-table--cursor",
        "line-table--header-cursor",
        "line-table--header-hover",
        "line-table--hover",
    }
    zebra_stripes = reactive(False)
    """Alternate rows in two colours."""

    header_height = 1
    """Lines the header takes (the rows start below it)."""

    class RowSelected(Message, namespace="data_table"):
        """Enter, or a click on the cursor's row: open that row.

        Handled as ``on_data_table_row_selected``, with ``row_key`` and ``cursor_row``, the
        names DataTable's message has: screens written for a DataTable need no change."""

        def __init__(self, table: LineTable, cursor_row: int, row_key: RowKey) -> None:
            super().__init__()
            self.table = table
            self.cursor_row = cursor_row
            """The line of the window the row is on."""
            self.row_key = row_key
            """The row's key (``row_key.value`` is the item's id)."""

        @property
        def control(self) -> LineTable:
            """The table the row was selected in."""
            return self.table

    def __init__(self, labels: Sequence[str], *, fixed: int = 0, id: str | None = None) -> None:
        """Columns headed ``labels``; the first ``fixed`` are one cell wide, whatever they
        hold."""
        super().__init__(id=id)
        self._labels = [Text.from_markup(label) for label in labels]
        self._widths: list[int] = []  # content widths: measured on mount, then only grow
        self._fixed = fixed
        self.cell_updates = 0
        """Cells rendered again for rows already held (a measure of how little a refresh
        redraws)."""
        self.rebuilds = 0
        """Times the table changed its number of rows."""
        self.rekeys = 0
        """Times the table's lines took other rows in place (re-sorted, moved)."""
        # The rows: keys top to bottom, and per key the values, the cells as shown, and a
        # stamp that changes whenever those cells do (the drawn lines are keyed on it).
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Any, ...]] = {}
        # (a cell given as plain text is kept as read, its Text made only when asked for:
        # None here; most cells are, and a log draws 180 new ones a batch)
        self._shown: dict[str, list[Text | None]] = {}
        # (and the cells as simple_cell reads them, once, when they come: None for a cell
        # that is not one line of plain text; such a row is drawn by draw_row)
        self._simple: dict[str, list[Simple | None]] = {}
        self._label_cells: list[Simple | None] = []
        self._stamp: dict[str, int] = {}
        self._cursor = 0
        self._hover = 0
        self._show_hover = False
        self._look: Look | None = None
        self._look_key: tuple[Any, ...] = ()  # what the look was read for (see _read_look)
        self._pass: tuple[int, int] | None = None  # width and scroll of the render pass
        self._generation = 0  # bumped when the look or the column widths change
        self._styles: tuple[int, RowStyles] | None = None  # a generation's line styles
        self._lines: LRUCache[tuple[Any, ...], Strip] = LRUCache(LINES_HELD)
        self._row_contents: LRUCache[tuple[int, int], list[list[Segment] | None]] = LRUCache(
            ROWS_HELD
        )
        # (the cell is held with its content, so an id is not reused while it is here)
        self._contents: LRUCache[tuple[int, int], tuple[Text, list[Segment] | None]] = LRUCache(
            CONTENTS_HELD
        )

    def on_mount(self) -> None:
        """Measure the headers (the columns are at least that wide)."""
        console = self.app.console
        self._widths = [width_of(label, console) for label in self._labels]
        self._label_cells = [simple_cell(label) for label in self._labels]
        for column in range(self._fixed):
            self._widths[column] = 1
        self._resize_virtual()

    # ------------------------------------------------------------------------------ rows

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._keys or not 0 <= self._cursor < len(self._keys):
            return None
        return self._keys[self._cursor]

    @property
    def cursor_row(self) -> int:
        """The cursor's line among the rows (0: the top row)."""
        return self._cursor

    @property
    def hover_row(self) -> int:
        """The line the mouse is over (-1: the header), whether it is shown or not."""
        return self._hover

    @property
    def row_count(self) -> int:
        """How many rows the table holds."""
        return len(self._keys)

    @property
    def keys(self) -> list[str]:
        """The keys of the rows held, top to bottom."""
        return list(self._keys)

    def get_row(self, key: str) -> list[Text]:
        """The cells of the held row ``key`` as shown; KeyError if the table does not hold
        it."""
        try:
            return self._texts(self._shown[key], self._simple[key])
        except KeyError:
            raise KeyError(f"no row {key!r} here (the table holds {self.keys!r})") from None

    @staticmethod
    def _texts(shown: list[Text | None], simple: list[Simple | None]) -> list[Text]:
        # The cells as Text, those kept as read made now (as LiveTable.render_cell makes one).
        return [
            cell if cell is not None else Text(cast(Simple, read)[0], no_wrap=True, end="")
            for cell, read in zip(shown, simple, strict=True)
        ]

    def read_cell(self, column: int, value: Any) -> tuple[Text | None, Simple | None]:
        """:meth:`render_cell`, and the cell as :func:`simple_cell` reads it; a subclass may
        give ``(None, (text, None, width))`` for a cell of plain text, whose Text is then made
        only when asked for (by :meth:`get_row`)."""
        cell = self.render_cell(column, value)
        return cell, simple_cell(cell)

    def render_cell(self, column: int, value: Any) -> Text:
        """How ``value`` shows in ``column`` (here: as plain text; "-" for None)."""
        return Text("-" if value is None else str(value), no_wrap=True, end="")

    def forget_cells(self) -> None:
        """Render every cell again at the next :meth:`show` (the renderer changed)."""
        self._cells.clear()

    def show(self, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Hold ``rows`` (key, values), top to bottom, drawing again only what changed (once
        mounted: the columns are measured with the app's console)."""
        # Give each line its row. A row held before keeps its cells, and only
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
        shown_of: dict[str, list[Text | None]] = {}
        simple_of: dict[str, list[Simple | None]] = {}
        stamp_of: dict[str, int] = {}
        for key, cells in rows:
            before = self._cells.get(key)
            shown = self._shown.get(key)
            if before == cells and shown is not None:
                stamp = self._stamp[key]
                simple = self._simple[key]
            else:
                changed: Sequence[int]
                if before is None or shown is None or len(before) != len(cells):
                    changed = range(len(cells))
                    shown = [None] * len(cells)
                    simple = [None] * len(cells)
                else:
                    changed = [
                        i for i, (b, a) in enumerate(zip(before, cells, strict=True)) if b != a
                    ]
                    shown = list(shown)
                    simple = list(self._simple[key])
                    self.cell_updates += len(changed)
                for i in changed:
                    shown[i], simple[i] = cell, read = self.read_cell(i, cells[i])
                    if i < self._fixed:
                        continue
                    width = read[2] if read is not None else width_of(cell or EMPTY, console)
                    if width > widths[i]:
                        widths[i] = width
                        grew = True
                stamp = next(_stamps)
            cells_of[key], shown_of[key], simple_of[key], stamp_of[key] = (
                cells,
                shown,
                simple,
                stamp,
            )
        old_stamps = self._stamp
        self._keys, self._cells, self._shown, self._stamp = keys, cells_of, shown_of, stamp_of
        self._simple = simple_of
        if grew or len(keys) != len(old_keys):
            self._resize_virtual()
        if grew:
            self._generation += 1
            self.refresh()
            return
        changed = [
            line
            for line, key in enumerate(keys)
            if line >= len(old_keys) or old_keys[line] != key or old_stamps[key] != stamp_of[key]
        ]
        changed += range(len(keys), len(old_keys))
        self._refresh_rows_at(changed)

    def _refresh_rows_at(self, lines: Sequence[int]) -> None:
        # One region per run of neighbouring lines, not one per line: a log that follows its
        # newest line changes every line, and each region costs a look at the widget's size.
        start = previous = -2
        for line in lines:
            if line != previous + 1:
                if start >= 0:
                    self.refresh_lines(self.header_height + start, previous - start + 1)
                start = line
            previous = line
        if start >= 0:
            self.refresh_lines(self.header_height + start, previous - start + 1)

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
        # Reading the eight component styles walks the ancestors for each (Textual forgets
        # them at every refresh): ~1 ms a pass, a fifth of repainting a log's 45 new lines.
        # They are read again only when what they follow may have changed: the table's own
        # style (its colours over its ancestors'), its focus, the theme, ANSI colour, or a
        # CSS update of the table itself.
        base = self.rich_style
        app = self.app
        key = (base, self.has_focus, app.theme, app.ansi_color)
        if self._look is not None and key == self._look_key:
            return self._look
        style = self.get_component_rich_style
        look = Look(
            base=base,
            header=style("line-table--header"),
            even=style("line-table--even-row"),
            odd=style("line-table--odd-row"),
            hover=style("line-table--hover"),
            header_hover=style("line-table--header-hover"),
            cursor=style("line-table--cursor"),
            header_cursor=style("line-table--header-cursor"),
        )
        if look != self._look:
            self._look = look
            self._generation += 1
        self._look_key = key
        return look

    def render_lines(self, crop: Region) -> list[Strip]:
        """Render the lines in ``crop`` (the styles, the width and the scroll are read once
        for them all)."""
        self._read_look()
        self._pass = (self.size.width, self.scroll_offset.x)
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the table on screen: the header, a row, or blank below the rows."""
        look = self._look or self._read_look()
        width, scroll_x = self._pass or (self.size.width, self.scroll_offset.x)
        index = y - self.header_height
        if index >= len(self._keys):
            return Strip.blank(width, look.base)
        if index < 0:
            shown, simple, stamp = list[Text | None](self._labels), self._label_cells, 0
        else:
            key = self._keys[index]
            shown, simple, stamp = self._shown[key], self._simple[key], self._stamp[key]
        cursor = index == self._cursor
        hover = self._show_hover and index == self._hover
        generation = self._generation
        cache_key = (stamp, index, cursor, hover, width, scroll_x, generation)
        strip = self._lines.get(cache_key)
        if strip is None and None not in simple:
            strip = self._draw_simple(simple, index, cursor, hover, look, width, scroll_x)
            if strip is not None:
                self._lines[cache_key] = strip
        if strip is None:
            cells = self._texts(shown, simple)
            # What the row's cells draw before they are styled is kept with the row: a row
            # that moves to another line (a re-sort) is styled again, not drawn again.
            contents = self._row_contents.get((stamp, generation))
            if contents is None:
                contents = [
                    self._content(cell if cell or index < 0 else EMPTY, inner)
                    for cell, inner in zip(cells, self._widths, strict=True)
                ]
                self._row_contents[stamp, generation] = contents
            table_width = sum(self._widths) + 2 * PAD * len(self._widths)
            fill = max(0, width - table_width)
            segments = draw_row(
                cells,
                self._widths,
                index=index,
                look=look,
                zebra=self.zebra_stripes,
                cursor=cursor,
                hover=hover,
                pad=PAD,
                fill=fill,
                contents=contents,
                console=self.app.console,
                options=lambda: self.app.console_options,
            )
            strip = Strip(segments, table_width + fill).crop(scroll_x, scroll_x + width)
            strip = strip.adjust_cell_length(width, look.base)
            if None in contents:
                # (a cell drawn by Rich may have neighbours of one style; the others' are
                # joined already, and no two cells share their mouse metadata)
                strip = strip.simplify()
            self._lines[cache_key] = strip
        return strip

    def _draw_simple(
        self,
        cells: list[Simple | None],
        index: int,
        cursor: bool,
        hover: bool,
        look: Look,
        width: int,
        scroll_x: int,
    ) -> Strip | None:
        # A row of one-line text cells, the rows every screen writes, drawn from what was read
        # of its cells when they came, in styles worked out once per line kind and look (the
        # same segments as draw_row's; None when a cell is wider than its column).
        # (a new look or stripes bump the generation: its styles are worked out again)
        if self._styles is None or self._styles[0] != self._generation:
            self._styles = (
                self._generation,
                RowStyles(look, self.zebra_stripes, len(self._widths)),
            )
        styles = self._styles[1]
        table_width = sum(self._widths) + 2 * PAD * len(self._widths)
        fill = max(0, width - table_width)
        segments = draw_simple_row(
            cells,  # type: ignore[arg-type]  # (no None: the caller checked)
            self._widths,
            index=index,
            cursor=cursor,
            hover=hover,
            styles=styles,
            pad=PAD,
            fill=fill,
            console=self.app.console,
        )
        if segments is None:
            return None
        strip = Strip(segments, table_width + fill).crop(scroll_x, scroll_x + width)
        return strip.adjust_cell_length(width, look.base)

    def _content(self, cell: Text, width: int) -> list[Segment] | None:
        # What a cell draws before the table styles it, kept while the cell is (a row with
        # one changed cell draws that cell only).
        key = (id(cell), width)
        held = self._contents.get(key)
        if held is not None and held[0] is cell:
            return held[1]
        content = one_line(cell, width, self.app.console)
        self._contents[key] = (cell, content)
        return content

    # ------------------------------------------------------------------------ the cursor

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        """Put the cursor on line ``row`` of the window (kept within the rows held)."""
        del animate  # (DataTable's signature: the window never scrolls, nothing to animate)
        row = max(0, min(row, len(self._keys) - 1))
        if row != self._cursor:
            self.refresh_line(self.header_height + self._cursor)
            self._cursor = row
            self.refresh_line(self.header_height + row)

    def action_select_cursor(self) -> None:
        """Select the row under the cursor (:class:`RowSelected`; a subclass binds a key)."""
        self.hide_hover()
        key = self.cursor_key
        if key is not None:
            self.post_message(self.RowSelected(self, self._cursor, RowKey(key)))

    def hide_hover(self) -> None:
        """The keys move the cursor: the mouse's row is no longer lit."""
        self._set_hover(self._hover, shown=False)

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
            self.header_clicked(meta["column"])
            return
        event.stop()
        if row == self._cursor:
            self.action_select_cursor()
        else:
            self.move_cursor(row=row)

    def header_clicked(self, column: int) -> None:
        """A click on the header of ``column`` (here: nothing happens)."""
