"""The keyboard and the mouse on a LiveTable: Enter and a click select a row (as a DataTable's
row does, so screens written for one work), a click on a header sorts, the wheel reaches rows
beyond the window, and the row under the mouse is lit until a key is pressed."""

from __future__ import annotations

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import DataTable

from agentdeck.tui.widgets.live_table import WHEEL_ROWS, LiveTable, Row

pytestmark = pytest.mark.tui


def rows(n: int) -> list[Row]:
    """``n`` rows ``r000``... whose second column counts down."""
    return [(f"r{i:03d}", (f"r{i:03d}", n - i)) for i in range(n)]


class SelectApp(App[None]):
    """One table; the rows selected in it, by key, as a screen handles them."""

    def __init__(self) -> None:
        super().__init__()
        self.selected: list[str] = []

    def compose(self) -> ComposeResult:
        """The table."""
        yield LiveTable(["name", "n"], id="t")

    def on_mount(self) -> None:
        """Fill it and focus it."""
        table = self.query_one(LiveTable)
        table.sync(rows(100))
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """What the screens do: read the row's key."""
        assert event.row_key.value is not None
        self.selected.append(event.row_key.value)


async def started(pilot: Pilot[None]) -> LiveTable:
    """The app's table, once it is on screen."""
    await pilot.pause()
    return pilot.app.query_one(LiveTable)


async def test_enter_selects_the_row_under_the_cursor_as_a_data_table_row_is() -> None:
    """Enter posts RowSelected, handled by ``on_data_table_row_selected`` with the row's key."""
    app = SelectApp()
    async with app.run_test(size=(40, 12)) as pilot:
        t = await started(pilot)
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        assert t.cursor_key == "r002"
        assert app.selected == ["r002"]


async def test_a_click_moves_the_cursor_and_a_second_click_selects() -> None:
    """A click on a row puts the cursor there; a click on the cursor's row selects it."""
    app = SelectApp()
    async with app.run_test(size=(40, 12)) as pilot:
        t = await started(pilot)
        await pilot.click(LiveTable, offset=(2, t.header_height + 4))
        await pilot.pause()
        assert t.cursor_key == "r004" and app.selected == []
        await pilot.click(LiveTable, offset=(12, t.header_height + 4))
        await pilot.pause()
        assert app.selected == ["r004"]


async def test_a_click_on_a_header_sorts_by_it_and_again_reverses() -> None:
    """The "n" header sorts by n (smallest first), a second click reverses the order."""
    app = SelectApp()
    async with app.run_test(size=(40, 12)) as pilot:
        t = await started(pilot)
        n_header = t.get_row("r000")[0].cell_len + 4  # past the first column and its padding
        await pilot.click(LiveTable, offset=(n_header, 0))
        await pilot.pause()
        assert (t.sort_column, t.sort_reverse) == (1, False)
        assert t.all_keys[:2] == ["r099", "r098"]
        assert t.cursor_key == "r000"  # (the cursor stays on its item, now last)
        await pilot.click(LiveTable, offset=(n_header, 0))
        await pilot.pause()
        assert (t.sort_column, t.sort_reverse) == (1, True)
        assert t.all_keys[:2] == ["r000", "r001"]


async def test_the_wheel_moves_the_cursor_past_the_window() -> None:
    """Each turn of the wheel moves the cursor a few rows; the window follows it down the list
    and back up."""
    app = SelectApp()
    async with app.run_test(size=(40, 12)) as pilot:
        t = await started(pilot)
        turns = t.fits()  # far enough to leave the first window
        for _ in range(turns):  # (a wheel turn has no Pilot helper: it is posted)
            t.post_message(wheel(t, down=True))
        await pilot.pause()
        assert t.position == turns * WHEEL_ROWS and t.top > 0
        assert t.cursor_key == f"r{turns * WHEEL_ROWS:03d}"
        t.post_message(wheel(t, down=False))
        await pilot.pause()
        assert t.position == (turns - 1) * WHEEL_ROWS


def wheel(t: LiveTable, *, down: bool) -> events.MouseEvent:
    """One turn of the mouse wheel over the table."""
    kind = events.MouseScrollDown if down else events.MouseScrollUp
    return kind(t, 2, 3, 0, 0, 0, False, False, False, screen_x=2, screen_y=3)


async def test_the_row_under_the_mouse_is_lit_until_a_key_is_pressed() -> None:
    """Hovering lights the row under the mouse (its line changes, its text does not); a key
    press puts it out."""
    app = SelectApp()
    async with app.run_test(size=(40, 12)) as pilot:
        t = await started(pilot)
        y = t.header_height + 5
        plain = list(t.render_line(y))
        await pilot.hover(LiveTable, offset=(3, y))
        await pilot.pause()
        lit = list(t.render_line(y))
        assert t.hover_row == 5 and lit != plain
        assert "".join(s.text for s in lit) == "".join(s.text for s in plain)
        await pilot.press("down")
        await pilot.pause()
        assert list(t.render_line(y)) == plain
