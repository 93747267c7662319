"""How a :class:`~agentdeck.tui.widgets.live_table.LiveTable` row becomes one line of segments.

The lines are the ones Textual's ``DataTable`` draws for a row cursor (the snapshots and
tests/tui/test_live_table.py hold them equal, segment for segment): each cell padded, styled by
its row, by the cursor or the mouse, with the cell's own style in between, its position as
mouse metadata, and the row's colour carried to the right edge. Only Rich and Textual's public
API is used. A one-line text cell, the cells the screens write, is drawn here directly (the
steps of ``Text.__rich_console__``, ``Padding`` and ``Styled``, without the generic machinery,
which costs about a millisecond a row); any other cell goes through Rich as DataTable sends it.

A row whose cells are all :func:`simple_cell` (plain text in at most one style: every row of
the logs and of the lists) is drawn by :func:`draw_simple_row` from what was read of each cell
once, when the row came, and from styles worked out once per line kind (:class:`RowStyles`):
no segments per cell are made and joined, and no style is added twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.render import measure
from textual.renderables.styled import Styled

_JOIN = Text("\n")
_NULL = Style.null()
EMPTY = Text(no_wrap=True, end="")
"""What an empty cell is drawn as (DataTable's stand-in for a falsy cell)."""


@lru_cache(maxsize=4096)
def cell_meta(row: int, column: int) -> Style:
    """The mouse metadata of a cell: which row and column the pointer is over."""
    return Style.from_meta({"row": row, "column": column})


@lru_cache(maxsize=1024)
def fill_meta(row: int) -> Style:
    """The mouse metadata of the space right of the last column (it belongs to the row)."""
    return Style.from_meta({"row": row, "column": 0, "out_of_bounds": True})


Simple = tuple[str, Style | str | None, int]
"""A cell of one line of plain text as :func:`simple_cell` reads it: its text, its style (None:
none) and its width in cells."""


def simple_cell(cell: Text) -> Simple | None:
    """``cell`` as text, style and width when it is one printable line in at most one style,
    left-aligned (what :func:`one_line` draws without Rich); None when it is anything else."""
    if cell.spans or cell.justify not in (None, "default"):
        return None
    plain = cell.plain
    if not plain.isprintable():  # (line breaks, tabs, controls: drawn by Rich)
        return None
    return plain, cell.style or None, cell_len(plain)


def width_of(cell: Text, console: Console) -> int:
    """The columns ``cell`` asks for, as DataTable measures a cell."""
    if cell.plain.isprintable():  # (no line breaks, tabs or controls: its cell length)
        return cell.cell_len
    return measure(console, cell, 1)


def one_line(cell: Text, width: int, console: Console) -> list[Segment] | None:
    """A one-line text cell that fits in ``width`` as the segments Rich would give it (padded
    to ``width``, unstyled by the table), or None when it is not that simple (too long,
    several lines, tabs, justified)."""
    if cell.justify not in (None, "default"):
        return None
    plain = cell.plain
    length = cell.cell_len
    if length > width or "\n" in plain or "\t" in plain:
        return None
    if cell.spans:
        # (how Text.__rich_console__ renders it: the line joined, its own style a span)
        segments = list(_JOIN.join([cell]).render(console))
    elif cell.style:
        # (what that comes to for a cell in one style, without Rich's span machinery, which
        # cost a third of drawing a log line)
        style = cell.style
        if isinstance(style, str):
            style = console.get_style(style, default=_NULL)
        segments = [Segment(plain, style)] if plain else []
    else:
        segments = [Segment(plain)]
    if length < width:
        segments.append(Segment(" " * (width - length), _NULL))
    return segments


def cut_line(cell: Text, width: int, console: Console) -> list[Segment] | None:
    """A one-line text cell cut (or padded) to ``width`` as Rich would do it; None when it is
    not one line of text."""
    if "\n" in cell.plain or width < 1:
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


@dataclass(frozen=True)
class Look:
    """The styles a render pass draws with: the table's own style and its components'.

    They follow the theme, focus and the ancestors' colours, so they are read once a pass and
    compared with the last pass's (a change redraws every line)."""

    base: Style
    header: Style
    even: Style
    odd: Style
    hover: Style
    header_hover: Style
    cursor: Style
    header_cursor: Style

    def row_style(self, index: int, zebra: bool) -> Style:
        """The style of row ``index`` (-1: the header), before the cursor or the mouse."""
        if index == -1:
            return self.header
        if zebra:
            return self.odd if index % 2 else self.even
        return self.base

    def cell_styles(self, header: bool, hover: bool, cursor: bool) -> tuple[Style, Style]:
        """What the mouse and the cursor add to a cell (under its own style), and what goes
        over it (the cursor's colour wins over the cell's; its background does not)."""
        component = Style()
        if hover:
            component += self.hover
            if header:
                component += self.header_hover
        if cursor:
            component += self.cursor
            if header:
                component += self.header_cursor
        return component, Style.from_color(color=component.color) + _NULL


@dataclass(frozen=True, slots=True)
class LineStyles:
    """The styles of one line (a row in a state: its stripe, the cursor, the mouse): what a
    cell of plain text is drawn in (with each column's mouse metadata), and what a styled cell
    is drawn between."""

    row_component: Style
    post: Style
    bare: Style
    metas: tuple[Style, ...]
    """Per column: ``bare`` with the cell's mouse metadata."""
    fill: Style
    """The blank right of the last column."""


class RowStyles:
    """The styles of every line kind of one look, worked out when first drawn and kept (the
    same few dozen for every line a table draws until its look changes: a new one then)."""

    def __init__(self, look: Look, zebra: bool, columns: int) -> None:
        self.look, self.zebra, self.columns = look, zebra, columns
        self._lines: dict[tuple[int, bool, bool], LineStyles] = {}
        self._styled: dict[tuple[int, bool, bool, int, Style], Style] = {}

    def line(self, index: int, cursor: bool, hover: bool) -> LineStyles:
        """The styles of row ``index`` (-1: the header) with or without the cursor, the mouse."""
        key = (index, cursor, hover)
        styles = self._lines.get(key)
        if styles is None:
            # (the same sums, in the same order, as draw_row makes for each line)
            row_style = self.look.row_style(index, self.zebra)
            component, post = self.look.cell_styles(index == -1, hover, cursor)
            row_component = row_style + component
            bare = row_component + post
            styles = self._lines[key] = LineStyles(
                row_component,
                post,
                bare,
                tuple(bare + cell_meta(index, column) for column in range(self.columns)),
                row_style + component + fill_meta(index),
            )
        return styles

    def styled(
        self, index: int, cursor: bool, hover: bool, column: int, style: Style, line: LineStyles
    ) -> tuple[Style, Style]:
        """A styled cell's text style on ``line``, with and without its mouse metadata."""
        key = (index, cursor, hover, column, style)
        final = self._styled.get(key)
        if final is None:
            final = self._styled[key] = line.row_component + style + line.post
        return final, final + cell_meta(index, column)


def draw_simple_row(
    cells: Sequence[Simple],
    widths: Sequence[int],
    *,
    index: int,
    cursor: bool,
    hover: bool,
    styles: RowStyles,
    pad: int,
    fill: int,
    console: Console,
) -> list[Segment] | None:
    """Row ``index`` of :func:`simple_cell` cells as :func:`draw_row` draws it, segment for
    segment, or None when a cell is wider than its column (draw it with :func:`draw_row`)."""
    line_styles = styles.line(index, cursor, hover)
    bare, metas = line_styles.bare, line_styles.metas
    margin = " " * pad
    line: list[Segment] = []
    append = line.append
    for column, ((plain, style, length), inner) in enumerate(zip(cells, widths, strict=True)):
        spaces = inner - length
        if spaces < 0:
            return None
        if style is not None and plain:
            if isinstance(style, str):
                style = console.get_style(style, default=_NULL)
            if style:
                final, final_meta = styles.styled(index, cursor, hover, column, style, line_styles)
                if final != bare:
                    # (the margins and the padding in the row's style, the text in its own)
                    if margin:
                        append(Segment(margin, metas[column]))
                    append(Segment(plain, final_meta))
                    if rest := " " * spaces + margin:
                        append(Segment(rest, metas[column]))
                    continue
        if text := f"{margin}{plain}{' ' * spaces}{margin}":
            append(Segment(text, metas[column]))
    append(Segment(" " * fill, line_styles.fill))
    return line


def draw_row(
    cells: Sequence[Text],
    widths: Sequence[int],
    *,
    index: int,
    look: Look,
    zebra: bool,
    cursor: bool,
    hover: bool,
    pad: int,
    fill: int,
    contents: Sequence[list[Segment] | None],
    console: Console,
    options: Callable[[], ConsoleOptions],
) -> list[Segment]:
    """Row ``index`` (-1: the header) as one line of segments: ``cells`` in columns of
    ``widths`` (content widths; ``pad`` is added on each side), then ``fill`` blank cells in
    the row's colour. ``contents`` are the cells as :func:`one_line` draws them (None: drawn
    by :func:`draw_cell`, with ``options()``)."""
    row_style = look.row_style(index, zebra)
    header = index == -1
    component, post = look.cell_styles(header, hover, cursor)
    edge = [Segment(" " * pad, _NULL)] if pad else []
    margin = " " * pad
    # A cell's segment is styled row + component + its own + post, then given its metadata
    # (which only adds keys no other style has, so it can come last). Neighbouring segments of
    # one style are joined, as Strip.simplify would join them.
    row_component = row_style + component
    bare = row_component + post
    line: list[Segment] = []
    append = line.append
    for column, (cell, inner, drawn) in enumerate(zip(cells, widths, contents, strict=True)):
        meta = cell_meta(index, column)
        if drawn is None:
            if not cell and index != -1:
                cell = EMPTY  # (as DataTable draws an empty cell: without its style)
            pre = row_style + meta + component
            line += draw_cell(cell, inner, pad, pre, post, console, options())
            continue
        if not any(segment.style for segment in drawn):
            # (a cell of plain text, most cells: one segment in the row's style)
            if plain := f"{margin}{''.join(seg.text for seg in drawn)}{margin}":
                append(Segment(plain, bare + meta))
            continue
        texts: list[str] = []
        last = bare
        for text, style, _control in (*edge, *drawn, *edge):
            final = bare if not style else row_component + style + post
            if final != last and texts:
                append(Segment("".join(texts), last + meta))
                texts = []
            texts.append(text)
            last = final
        if texts:
            append(Segment("".join(texts), last + meta))
    extend = row_style + component + fill_meta(index)
    append(Segment(" " * fill, extend))
    return line


def draw_cell(
    cell: RenderableType,
    inner: int,
    pad: int,
    pre: Style,
    post: Style,
    console: Console,
    options: ConsoleOptions,
) -> list[Segment]:
    """One cell that is not a simple line of text, cut to one line of ``inner + 2 * pad``
    cells: a line of text cut as Rich cuts it, anything else rendered by Rich."""
    if isinstance(cell, Text) and (content := cut_line(cell, inner, console)) is not None:
        edge = [Segment(" " * pad, _NULL)] if pad else []
        return list(Segment.apply_style([*edge, *content, *edge], pre, post))
    width = inner + 2 * pad
    lines = console.render_lines(
        Styled(Padding(cell, (0, pad)), pre_style=pre, post_style=post),
        options.update_dimensions(width, 1).update(no_wrap=True),
    )
    return lines[0]
