"""A DataTable that follows live data cheaply: a window of rows, changed cells only, stable cursor.

Screens hand :meth:`LiveTable.sync` the whole current list as ``(key, cells)`` rows; the table
filters and sorts it, keeps at most ``window`` rows, and then either updates just the cells that
changed (same rows in the same order: the common case while watching) or rebuilds its rows and
puts the cursor back on the item it was on (rows came, went or moved after a re-sort).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

Row = tuple[str, tuple[Any, ...]]
"""A row: its key (a task or workflow id) and its cell values."""

#: Renders one cell value as shown (plain values become text; status cells get colour).
CellRenderer = Callable[[int, Any], str | Text]


def _sort_key(value: Any) -> tuple[int, Any]:
    # None sorts last, numbers as numbers, everything else as text.
    if value is None:
        return (2, "")
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())


class LiveTable(DataTable[str | Text]):
    """A row-cursor table fed by :meth:`sync`, with filter, sort by column and tagged rows."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
        Binding("s", "sort_next", "Sort", show=False),
        Binding("S", "sort_reverse", "Reverse", show=False),
    ]

    def __init__(
        self,
        columns: Sequence[str],
        *,
        render: CellRenderer | None = None,
        window: int = 1000,
        taggable: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.column_names = list(columns)
        self.window = window
        self.taggable = taggable
        self.filter_text = ""
        self.sort_column: int | None = None
        self.sort_reverse = False
        self.tagged: set[str] = set()
        self.total = 0
        """How many rows matched before the window cut them (the table holds at most ``window``)."""
        self._renderer = render or (lambda _i, v: "-" if v is None else str(v))
        self._source: list[Row] = []
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Any, ...]] = {}
        self.cell_updates = 0
        """Cells written by in-place updates (a measure of how little a refresh redraws)."""

    def on_mount(self) -> None:
        """Create the columns (a narrow tag column first when rows can be tagged)."""
        if self.taggable:
            self.add_column(" ", key="_tag", width=1)
        for name in self.column_names:
            self.add_column(name, key=name)

    # ------------------------------------------------------------------------------ data

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._keys[self.cursor_row]

    @property
    def keys(self) -> list[str]:
        """The keys of the rows shown, top to bottom."""
        return list(self._keys)

    def sync(self, rows: Sequence[Row]) -> None:
        """Show ``rows`` (filtered, sorted, windowed), touching only what changed."""
        self._source = list(rows)
        self._refresh_rows()

    def restyle(self) -> None:
        """Redraw every cell (the theme changed, so colours did)."""
        self._keys = []
        self._refresh_rows()

    def _visible(self) -> list[Row]:
        rows = self._source
        if self.filter_text:
            needle = self.filter_text.lower()
            rows = [r for r in rows if any(needle in str(c).lower() for c in (r[0], *r[1]))]
        if self.sort_column is not None:
            col = self.sort_column
            rows = sorted(rows, key=lambda r: _sort_key(r[1][col]), reverse=self.sort_reverse)
        self.total = len(rows)
        return rows[: self.window]

    def _shown(self, key: str, cells: tuple[Any, ...]) -> tuple[Any, ...]:
        return ((key in self.tagged), *cells) if self.taggable else cells

    def _cell(self, index: int, value: Any) -> str | Text:
        if self.taggable:
            if index == 0:
                return Text("●", style="bold") if value else " "
            index -= 1
        return self._renderer(index, value)

    def _refresh_rows(self) -> None:
        if not self.is_mounted:
            return
        rows = [(key, self._shown(key, cells)) for key, cells in self._visible()]
        keys = [key for key, _ in rows]
        if keys == self._keys:
            column_keys = list(self.columns)
            for key, cells in rows:
                old = self._cells[key]
                for i, (before, after) in enumerate(zip(old, cells, strict=True)):
                    if before != after:
                        self.update_cell(
                            key, column_keys[i], self._cell(i, after), update_width=True
                        )
                        self.cell_updates += 1
                self._cells[key] = cells
            return
        was_on, was_row = self.cursor_key, self.cursor_row
        self.clear()
        self.add_rows_keyed(rows)
        self._keys = keys
        self._cells = dict(rows)
        if was_on in self._cells:
            self.move_cursor(row=keys.index(was_on), animate=False)
        elif keys:
            self.move_cursor(row=min(was_row, len(keys) - 1), animate=False)

    def add_rows_keyed(self, rows: Sequence[tuple[Hashable, tuple[Any, ...]]]) -> None:
        """Append rows with their keys, rendering every cell."""
        for key, cells in rows:
            self.add_row(*(self._cell(i, v) for i, v in enumerate(cells)), key=str(key))

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # Textual 8 widens auto-width columns on idle but keeps cells it rendered before that
        # (moving the cursor renders at once) under a cache key that ignores widths, so a
        # rebuilt table could keep showing cells cut to the header's width. Bumping the update
        # count is how DataTable itself invalidates that cache.
        super()._update_dimensions(new_rows)
        self._update_count += 1
        self.refresh()

    # --------------------------------------------------------------------------- actions

    def set_filter(self, text: str) -> None:
        """Show only rows with a cell containing ``text`` (any case); empty shows all."""
        self.filter_text = text
        self._refresh_rows()

    def toggle_tag(self) -> None:
        """Tag or untag the row under the cursor, then move down (like a file manager)."""
        key = self.cursor_key
        if not self.taggable or key is None:
            return
        self.tagged.symmetric_difference_update({key})
        self._refresh_rows()
        self.action_cursor_down()

    def tagged_keys(self) -> list[str]:
        """Tagged rows still in the data, in table order."""
        present = [k for k, _ in self._source if k in self.tagged]
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
        self._refresh_rows()
        self._notify_sort()

    def action_sort_reverse(self) -> None:
        """Reverse the sort order (sorting by the first column if none is chosen)."""
        if self.sort_column is None:
            self.sort_column = 0
        self.sort_reverse = not self.sort_reverse
        self._refresh_rows()
        self._notify_sort()

    def sort_by(self, column: int, reverse: bool = False) -> None:
        """Sort by ``column`` (an index into the columns given at construction)."""
        self.sort_column, self.sort_reverse = column, reverse
        self._refresh_rows()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by it (again: reverses)."""
        index = event.column_index - (1 if self.taggable else 0)
        if index < 0:
            return
        if self.sort_column == index:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = index, False
        self._refresh_rows()

    def _notify_sort(self) -> None:
        if self.sort_column is None:
            self.notify("unsorted", timeout=1.5)
        else:
            arrow = "▼" if self.sort_reverse else "▲"
            self.notify(f"sorted by {self.column_names[self.sort_column]} {arrow}", timeout=1.5)
