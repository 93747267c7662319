"""A DataTable that follows live data cheaply: it holds only the rows that can be seen.

Textual's DataTable costs grow with the rows it holds (every width update measures the whole
column), so a :class:`LiveTable` holds only a *window*: the rows that fit on screen. The list
behind it has ``total`` rows and comes in one of two ways:

- :meth:`LiveTable.sync`: the screen hands over the whole current list as ``(key, cells)`` rows
  (agents, workflows, breakers: lists that fit in memory); the table filters and sorts it
  itself and shows the window;
- :meth:`LiveTable.sync_page`: the screen reads from the Store only the rows of the window
  (:attr:`LiveTable.page`, an offset and a limit) and the total (the tasks list, which can be
  huge). Moving past the window, sorting or filtering posts :class:`LiveTable.Reload`, and the
  screen reads again.

Either way a refresh updates only the cells that changed (same rows in the same order: the
common case while watching), or rebuilds the window's few rows when rows came, went or moved,
and puts the cursor back on the item it was on, at the same height on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual._two_way_dict import TwoWayDict
from textual._types import SegmentLines
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.coordinate import Coordinate
from textual.css.styles import RenderStyles
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets._data_table import Row as DataTableRow
from textual.widgets._data_table import RowRenderables, default_cell_formatter
from textual.widgets.data_table import ColumnKey, RowKey

Row = tuple[str, tuple[Any, ...]]
"""A row: its key (a task or workflow id) and its cell values."""

#: Renders one cell value as shown (plain values become text; status cells get colour).
CellRenderer = Callable[[int, Any], str | Text]

#: Rows a window holds before the table is laid out (then: as many as fit).
UNSIZED_ROWS = 50
#: Cells whose drawn content is kept (a few screens' worth at 160x48).
CONTENTS_HELD = 2_000
#: Rows one turn of the mouse wheel moves the window.
WHEEL_ROWS = 3


def _sort_key(value: Any) -> tuple[int, Any]:
    # None sorts last, numbers as numbers, everything else as text.
    if value is None:
        return (2, "")
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())


def _drop(cache: LRUCache[Any, Any], stale: Callable[[Any], bool]) -> None:
    # (an LRUCache cannot be iterated over, only its keys)
    keys = cache.keys()
    for key in [k for k in keys if stale(k)]:
        cache.discard(key)


_JOIN = Text("\n")
_EMPTY_TEXT = Text(no_wrap=True, end="")
_NULL = Style.null()


def _width(renderable: str | Text) -> int:
    return renderable.cell_len if isinstance(renderable, Text) else cell_len(renderable)


def _one_line(cell: object, width: int, console: Console) -> list[Segment] | None:
    """A one-line text cell that fits in ``width`` as the segments Rich would give it (padded
    to ``width``, unstyled by the table), or None when Rich must do it (too long, several
    lines, tabs, justified: :func:`_cut_line` or DataTable handles those)."""
    if not isinstance(cell, Text) or cell.justify not in (None, "default"):
        return None
    plain = cell.plain
    length = cell.cell_len
    if length > width or "\n" in plain or "\t" in plain:
        return None
    if cell.style or cell.spans:
        # (how Text.__rich_console__ renders it: the line joined, its own style a span)
        segments = list(_JOIN.join([cell]).render(console))
    else:
        segments = [Segment(plain)]
    if length < width:
        segments.append(Segment(" " * (width - length), _NULL))
    return segments


def _cut_line(cell: object, width: int, console: Console) -> list[Segment] | None:
    """A one-line text cell cut (or padded) to ``width`` as Rich would do it; None when it is
    not one line of text."""
    if not isinstance(cell, Text) or "\n" in cell.plain or width < 1:
        return None
    tab_size = console.tab_size if cell.tab_size is None else cell.tab_size
    lines = cell.wrap(
        console,
        width,
        justify=cell.justify or "default",
        overflow=cell.overflow or "fold",
        tab_size=tab_size or 8,
        no_wrap=True,
    )
    return Segment.adjust_line_length(list(_JOIN.join(lines).render(console)), width, style=_NULL)


class _HeldStyles(RenderStyles):
    """Component styles with their Rich style worked out once (for one render pass)."""

    def __init__(self, styles: RenderStyles) -> None:
        assert styles.node is not None
        super().__init__(styles.node, styles.base, styles.inline)
        self._held = styles.rich_style

    @property
    def rich_style(self) -> Style:
        """The Rich style, as it was when these styles were held."""
        return self._held


class LiveTable(DataTable[str | Text]):
    """A row-cursor table fed by :meth:`sync` or :meth:`sync_page`, with filter, sort by column
    and tagged rows, holding only the rows on screen."""

    # Its height must come from the layout: sized to its content, a table holding only the
    # rows that fit would shrink to them, and fewer would fit each time.
    DEFAULT_CSS = """
    LiveTable {
        height: 1fr;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
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
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
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
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Any, ...]] = {}
        self.cell_updates = 0
        """Cells written by in-place updates (a measure of how little a refresh redraws)."""
        self.rebuilds = 0
        """Times the window's rows were rebuilt (rows came or went)."""
        self.rekeys = 0
        """Times the window's lines took other rows in place (re-sorted, moved)."""
        self._pass_style: Style | None = None
        # (the cell is held with its content, so an id is not reused while it is here)
        self._contents: LRUCache[tuple[int, int], tuple[object, list[Segment] | None]] = LRUCache(
            CONTENTS_HELD
        )
        self._pass_components: dict[tuple[str, ...], RenderStyles] | None = None

    def on_mount(self) -> None:
        """Create the columns (a narrow tag column first when rows can be tagged)."""
        if self.taggable:
            self.add_column(" ", key="_tag", width=1)
        for name in self.column_names:
            self.add_column(name, key=name)

    def on_resize(self) -> None:
        """More or fewer rows fit: hold as many as can be seen."""
        if self.is_mounted and len(self._keys) != self.fits() and self.total:
            self._moved()

    # ------------------------------------------------------------------------------ data

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._keys[self.cursor_row]

    @property
    def position(self) -> int:
        """The cursor's index in the whole list (not just the window)."""
        return self.top + self.cursor_row

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

    def fits(self) -> int:
        """How many rows the window holds: those that fit on screen (capped by ``window``)."""
        height = self.scrollable_content_region.height
        if height <= 0:
            height = UNSIZED_ROWS
        elif self.show_header:
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
        """Show ``rows``, the rows of the list from ``top`` on (read for :attr:`page`), out
        of ``total``; filter and sort were the screen's to apply."""
        self.paged = True
        self._source = list(rows)
        self._ordered = None
        self._page_offset, self.total = offset, total
        self._refresh_rows()

    def restyle(self) -> None:
        """Redraw every cell (the theme changed, so colours did)."""
        self._keys = []
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

    def _shown(self, key: str, cells: tuple[Any, ...]) -> tuple[Any, ...]:
        return ((key in self.tagged), *cells) if self.taggable else cells

    def _cell(self, index: int, value: Any) -> Text:
        # Text, never str: DataTable reads a str cell as markup, so a task key or a log line
        # holding "[/]" would break the screen (and "[red]" would colour it).
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
        was_on, was_row = self.cursor_key, self.cursor_row
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
        rows = [(key, self._shown(key, cells)) for key, cells in window]
        keys = [key for key, _ in rows]
        if keys == self._keys:
            self._update_cells(rows)
        elif keys and len(keys) == len(self._keys) == self.row_count:
            self._rekey(rows, keys)
        else:
            self._rebuild(rows, keys)
        if keys:
            row = max(0, min(target - self.top, len(keys) - 1))
            if row != self.cursor_row:
                self.move_cursor(row=row, animate=False)

    def _update_cells(self, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        column_keys = list(self.columns)
        changed: dict[str, list[tuple[ColumnKey, str | Text]]] = {}
        wider: list[tuple[str, ColumnKey, str | Text]] = []
        for key, cells in rows:
            old = self._cells[key]
            for i, (before, after) in enumerate(zip(old, cells, strict=True)):
                if before != after:
                    shown = self._cell(i, after)
                    column = self.columns[column_keys[i]]
                    if column.auto_width and _width(shown) > column.content_width:
                        wider.append((key, column_keys[i], shown))
                    else:
                        changed.setdefault(key, []).append((column_keys[i], shown))
                    self.cell_updates += 1
            self._cells[key] = cells
        if changed:
            self.write_cells(changed)
        # A wider cell re-measures its column and redraws everything. Only wider cells go
        # that way: DataTable shrinks a column to its widest cell when a narrower one is
        # written through it, and the next wider value would then redraw everything again
        # (with statuses coming and going, most batches did). So widths only grow.
        for key, column_key, wide in wider:
            self.update_cell(key, column_key, wide, update_width=True)

    def write_cells(self, changed: dict[str, list[tuple[ColumnKey, str | Text]]]) -> None:
        """Set the changed cells (rendered) of rows held, by row key, and repaint just those
        rows."""
        # DataTable.update_cell bumps a counter that every render cache is keyed on, so one
        # changed cell redraws every cell on screen (the most of a batch's cost). Here the
        # values are set, only the changed rows' cached renders are dropped, and only those
        # rows are repainted. tests/tui/test_live_table.py checks the screen shows the new
        # values, in case a Textual upgrade changes what the caches are keyed on.
        rows = {RowKey(key) for key in changed}
        cells: set[tuple[RowKey, ColumnKey]] = set()
        # A row's cells as DataTable formats them (markup parsed) are cached together: only
        # the changed ones are formatted again (formatting the whole row was a third of the
        # cost of repainting it).
        formatted: dict[tuple[int, int], RowRenderables] = {}
        for key, cells_changed in changed.items():
            row_key = RowKey(key)
            data = self._data[row_key]
            index = self._row_locations.get(row_key)
            cache_key = (self._update_count, -2 if index is None else index)
            held = self._row_renderable_cache.get(cache_key)
            kept = None if held is None else list(held.cells)
            height = self.rows[row_key].height
            for column_key, shown in cells_changed:
                data[column_key] = shown
                cells.add((row_key, column_key))
                column = self._column_locations.get(column_key)
                if kept is not None and column is not None:
                    kept[column] = (
                        _EMPTY_TEXT
                        if shown is None
                        else default_cell_formatter(shown, wrap=height != 1, height=height)
                        or _EMPTY_TEXT
                    )
            if held is not None and kept is not None:
                formatted[cache_key] = RowRenderables(held.label, kept)
        indexes = {self._row_locations.get(RowKey(key)) for key in changed}
        _drop(self._cell_render_cache, lambda k: k[:2] in cells)
        _drop(self._row_render_cache, lambda k: k[0] in rows)
        _drop(self._row_renderable_cache, lambda k: k[1] in indexes)
        for cache_key, renderables in formatted.items():
            self._row_renderable_cache[cache_key] = renderables
        lines = {self.header_height + i for i in indexes if i is not None}  # rows are 1 high
        _drop(self._line_cache, lambda k: k[0] in lines)
        for index in indexes:
            if index is not None:
                self.refresh_row(index)

    def _rekey(self, rows: Sequence[tuple[str, tuple[Any, ...]]], keys: list[str]) -> None:
        # As many rows as before, but other items or another order (a re-sort, the window
        # moved): each line keeps its place and takes its new row. DataTable's clear() and
        # add_row() would measure every cell again (a third of a re-sorted window's cost),
        # reset the cursor and the scroll; here a row that is the same keeps its cells, the
        # others get theirs, and a column grows only if a new cell is wider.
        self.rekeys += 1
        column_keys = list(self.columns)
        data: dict[RowKey, dict[ColumnKey, Any]] = {}
        table_rows: dict[RowKey, DataTableRow] = {}
        grew = False
        for (key, cells), old in zip(rows, self._keys, strict=True):
            row_key = RowKey(key)
            before = self.rows[RowKey(old)]
            table_rows[row_key] = DataTableRow(
                row_key, before.height, before.label, before.auto_height
            )
            if self._cells.get(key) == cells:
                # The same row, here or on another line: its rendered cells (and what was
                # drawn of them: _cell_content) are kept.
                data[row_key] = self._data[row_key]
                continue
            shown = {}
            for i, (column_key, value) in enumerate(zip(column_keys, cells, strict=True)):
                shown[column_key] = cell = self._cell(i, value)
                column = self.columns[column_key]
                if column.auto_width and (width := _width(cell)) > column.content_width:
                    column.content_width = width
                    grew = True
            data[row_key] = shown
        self._data = data
        self.rows = table_rows
        self._row_locations = TwoWayDict({RowKey(key): i for i, key in enumerate(keys)})
        self._keys = keys
        self._cells = dict(rows)
        # Every cache DataTable keeps is keyed on this count (or on row keys that moved).
        self._update_count += 1
        if grew:
            self._require_update_dimensions = True  # the table is wider: its virtual size
            self.check_idle()
        self.refresh()

    def _rebuild(self, rows: Sequence[tuple[str, tuple[Any, ...]]], keys: list[str]) -> None:
        self.rebuilds += 1
        self.clear()
        self.add_rows_keyed(rows)
        self._keys = keys
        self._cells = dict(rows)

    def add_rows_keyed(self, rows: Sequence[tuple[Hashable, tuple[Any, ...]]]) -> None:
        """Append rows with their keys, rendering every cell."""
        for key, cells in rows:
            self.add_row(*(self._cell(i, v) for i, v in enumerate(cells)), key=str(key))

    def render_lines(self, crop: Region) -> list[Strip]:
        """Render the lines in ``crop``, working out the table's own style once for them all."""
        # DataTable.render_line asks for it for every line, and it is worked out afresh from
        # every ancestor's styles each time: for a repainted row, about a tenth of its cost.
        # Styles do not change while lines are rendered, so it is held for this pass only.
        # The same goes for the header style, asked for by every row (a fifth of a row's cost).
        self._pass_style = super().rich_style
        self._pass_components = {}
        try:
            return super().render_lines(crop)
        finally:
            self._pass_style = None
            self._pass_components = None

    def get_component_styles(self, *names: str) -> RenderStyles:
        """A component's styles (held while lines are rendered)."""
        held = self._pass_components
        if held is None:
            return super().get_component_styles(*names)
        styles = held.get(names)
        if styles is None:
            styles = held[names] = _HeldStyles(super().get_component_styles(*names))
        return styles

    @property
    def rich_style(self) -> Style:
        """The table's Rich style (held while lines are rendered)."""
        return super().rich_style if self._pass_style is None else self._pass_style

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[SegmentLines, SegmentLines]:
        # DataTable renders a row cell by cell through Rich (Styled(Padding(cell)) and
        # Console.render_lines), about a millisecond a row: a re-sorted window of 45 rows took
        # 25-75 ms to repaint. A row of one-line cells is built here with the same steps, less
        # the generic machinery, and what is the same for every cell of a row (a row cursor
        # highlights whole rows) worked out once: each cell's text wrapped and joined as
        # Text.__rich_console__ does, padded as Padding does, styled as Styled does, with
        # DataTable's cache key, component styles and fill to the right. Tables with row labels,
        # fixed columns or another cursor go DataTable's way, as do cells that do not fit in
        # one line. tests/tui/test_live_table.py compares both ways line by line.
        if (
            line_no
            or self.cursor_type != "row"
            or self.fixed_columns
            or (self._labelled_row_exists and self.show_row_labels)
        ):
            return super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        cache_key = (
            row_key,
            line_no,
            base_style,
            cursor_location,
            hover_location,
            self.cursor_type,
            self.show_cursor,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cached = self._row_render_cache.get(cache_key)
        if cached is not None:
            return cached
        header = row_key is self._header_row_key
        row_index = -1 if header else self._row_locations.get(row_key)
        if row_index is None:
            row_index = -1
        one_line = self.header_height == 1 if header else self.rows[row_key].height == 1
        if not one_line:
            return super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        columns = self.ordered_columns
        row_style = self._get_row_style(row_index, base_style)
        # With a row cursor, the cursor and the mouse light up whole rows: one answer a row.
        cursor = cursor_location.row == row_index
        hover = hover_location.row == row_index
        component_style, post_style = self._cell_styles(
            header, not header and row_index < self.fixed_rows, hover, cursor
        )
        cells = self._get_row_renderables(row_index).cells
        pad = self.cell_padding
        edge = [Segment(" " * pad, _NULL)] if pad else []
        console = self.app.console
        from_meta = Style.from_meta
        # DataTable styles a cell's segment (base + meta) + component + own + post. Meta (which
        # cell the mouse is on) only adds keys no other style has, so it can come last; the
        # rest is the same for many cells and Rich caches it. Neighbouring segments of one
        # style are joined (as Strip.simplify would join them anyway).
        row_component = row_style + component_style
        bare = row_component + post_style
        line: list[list[Segment]] = []
        table_width = 0
        for column_index, column in enumerate(columns):
            # (Column.get_render_width, without reading the padding reactive for every cell)
            width = 2 * pad + (column.content_width if column.auto_width else column.width)
            table_width += width
            content = self._cell_content(cells[column_index], width - 2 * pad, console)
            if content is None:
                line.append(
                    self._render_cell(row_index, column_index, row_style, width, cursor, hover)[0]
                )
                continue
            meta = from_meta({"row": row_index, "column": column_index})
            texts: list[str] = []
            cell: list[Segment] = []
            last: Style | None = None
            for text, style, _control in (*edge, *content, *edge):
                final = bare if not style else row_component + style + post_style
                if final != last and texts:
                    cell.append(Segment("".join(texts), last + meta))  # type: ignore[operator]
                    texts = []
                texts.append(text)
                last = final
            if texts:
                cell.append(Segment("".join(texts), last + meta))  # type: ignore[operator]
            line.append(cell)
        # The row's colour reaches the right edge of the table, as DataTable does it.
        extend_style, _ = self._get_styles_to_render_cell(
            header,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            False,
            False,
        )
        extend_style = row_style + extend_style
        extend_style += from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        remaining = max(0, self.size.width - table_width - self._row_label_column_width)
        line.append([Segment(" " * remaining, extend_style)])
        pair: tuple[SegmentLines, SegmentLines] = ([], line)
        self._row_render_cache[cache_key] = pair
        return pair

    def _cell_styles(
        self, header: bool, fixed: bool, hover: bool, cursor: bool
    ) -> tuple[Style, Style]:
        # A cell's component style and post style, as DataTable works them out (cached there).
        return self._get_styles_to_render_cell(
            header,
            False,
            fixed,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )

    def _cell_content(self, cell: object, width: int, console: Console) -> list[Segment] | None:
        # What a cell draws before the table styles it (see _one_line), kept while the cell
        # is: a row that moves to another line (a re-sort) is styled again, not drawn again.
        key = (id(cell), width)
        held = self._contents.get(key)
        if held is not None and held[0] is cell:
            return held[1]
        content = _one_line(cell, width, console)
        self._contents[key] = (cell, content)
        return content

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        # One cell, for DataTable's own callers (and the cells a lean row cannot draw): the
        # same steps as in _render_line_in_row when the cell fits in one line.
        header = row_index == -1
        pad = self.cell_padding
        if column_index < 0 or width - 2 * pad < 1:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._header_row_key if header else self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        row = None if header or row_key is None else self.rows.get(row_key)
        one_line = self.header_height == 1 if header else row is not None and row.height == 1
        if row_key is None or column_key is None or not one_line:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        cache_key = (
            row_key,
            column_key,
            base_style,
            cursor,
            hover,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cached = self._cell_render_cache.get(cache_key)
        if cached is not None:
            return cached
        cell = self._get_row_renderables(row_index).cells[column_index]
        console = self.app.console
        content = _one_line(cell, width - 2 * pad, console)
        if content is None:
            content = _cut_line(cell, width - 2 * pad, console)
        if content is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        fixed = not header and (row_index < self.fixed_rows or column_index < self.fixed_columns)
        component_style, post_style = self._cell_styles(header, fixed, hover, cursor)
        pre_style = base_style + Style.from_meta({"row": row_index, "column": column_index})
        pre_style += component_style
        edge = [Segment(" " * pad, _NULL)] if pad else []
        line = list(Segment.apply_style([*edge, *content, *edge], pre_style, post_style))
        result: SegmentLines = [line]
        self._cell_render_cache[cache_key] = result
        return result

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # Textual 8 widens auto-width columns on idle but keeps cells it rendered before that
        # (moving the cursor renders at once) under a cache key that ignores widths, so a
        # rebuilt table could keep showing cells cut to the header's width. Bumping the update
        # count is how DataTable itself invalidates that cache.
        super()._update_dimensions(new_rows)
        self._update_count += 1
        self.refresh()

    # ------------------------------------------------------------------------ moving

    def goto(self, pos: int) -> None:
        """Put the cursor on row ``pos`` of the whole list, moving the window if need be."""
        if not self.total:
            return
        pos = max(0, min(pos, self.total - 1))
        start = self._window_start(pos)
        if start == self.top and pos - start < len(self._keys):
            self.move_cursor(row=pos - start, animate=False)
            return
        self._want = pos
        self._moved()

    def goto_key(self, key: str) -> bool:
        """Put the cursor on the row with ``key``; False if the table does not know it."""
        index = self._index_of(key)
        if index is None:
            if key in self._keys:
                self.move_cursor(row=self._keys.index(key), animate=False)
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
        self.goto(self.position + 1)

    def action_cursor_up(self) -> None:
        """Up one row."""
        self.goto(self.position - 1)

    def action_page_down(self) -> None:
        """Down one screenful."""
        self.goto(self.position + self.fits())

    def action_page_up(self) -> None:
        """Up one screenful."""
        self.goto(self.position - self.fits())

    def action_scroll_top(self) -> None:
        """The first row of the whole list."""
        self.goto(0)

    def action_scroll_bottom(self) -> None:
        """The last row of the whole list."""
        self.goto(self.total - 1)

    def _on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        if not (event.ctrl or event.shift):
            event.stop()
            self._wheel(WHEEL_ROWS)

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if not (event.ctrl or event.shift):
            event.stop()
            self._wheel(-WHEEL_ROWS)

    def _wheel(self, rows: int) -> None:
        # The wheel moves the cursor a few rows, so it reaches rows the window does not hold.
        self.goto(self.position + rows)

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

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by it (again: reverses)."""
        index = event.column_index - (1 if self.taggable else 0)
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
