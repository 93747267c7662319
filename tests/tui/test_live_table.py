"""Big lists stay light: the table holds only the rows on screen, says how many there are in
all, reaches any of them, keeps the cursor on its item and rewrites only the cells that changed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable

from agentdeck.core.models import AgentRecord, AgentState, Change
from agentdeck.core.spec import TaskSpec, WorkflowSpec, build
from agentdeck.core.states import TaskStatus as T
from agentdeck.tui.app import AgentdeckApp
from agentdeck.tui.screens.agents import AgentsScreen
from agentdeck.tui.screens.tasks import TasksScreen
from agentdeck.tui.widgets.live_table import LiveTable, Row
from tests.tui.conftest import START, World
from tests.tui.test_app import command, crumbs, ready, settle, table

pytestmark = pytest.mark.tui
SIZE = (80, 24)
BULK = 1_210
"""More tasks than the old 1,000-row cut, and not a multiple of a screenful."""


async def add_tasks(world: World, n: int = BULK) -> list[str]:
    """``n`` more ready tasks in the store; every task id in list order."""
    per = 400
    for w in range(0, n, per):
        spec = WorkflowSpec(
            name=f"bulk-{w}",
            tasks=tuple(
                TaskSpec(key=f"t{i:04d}", capability="echo") for i in range(min(per, n - w))
            ),
        )
        world.clock.advance(1)
        workflow, tasks = build(spec, workflow_id=f"bulk{w:08d}", now=world.clock.now())
        await world.store.create_workflow(workflow, tasks)
    return [t.id for t in await world.store.list_tasks(limit=100_000)]


def spy_on_list_tasks(world: World) -> list[int]:
    """Record the ``limit`` of every ``list_tasks`` the screens ask the store for."""
    limits: list[int] = []
    real = world.store.list_tasks

    async def list_tasks(**kwargs: Any) -> Any:
        limits.append(kwargs.get("limit", 100))
        return await real(**kwargs)

    world.store.list_tasks = list_tasks  # type: ignore[method-assign]
    return limits


async def test_the_tasks_list_says_how_many_rows_there_are_and_holds_only_those_seen(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Past 1,000 tasks the bar still gives the true total, and the table (and the store
    query behind it) holds just the rows on screen."""
    ids = await add_tasks(world)
    limits = spy_on_list_tasks(world)
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        limits.clear()  # (the overview reads open tasks; only the tasks list is checked here)
        await command(pilot, "tasks")
        t = table(app)
        shown = t.row_count
        assert t.total == await world.store.total_tasks() == len(ids) > 1_000
        assert 0 < shown == t.fits() < 24
        assert t.keys == ids[:shown]
        assert f"rows 1\u2013{shown} of {len(ids):,}" in crumbs(app)
        assert limits and max(limits) == shown


async def test_any_row_can_be_reached_beyond_the_first_window(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """G, g, page down and j past the last row held move the window over the whole list."""
    ids = await add_tasks(world)
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "tasks")
        t = table(app)
        n = t.fits()
        await pilot.press("G")
        await settle(pilot)
        assert t.cursor_key == ids[-1] and t.position == len(ids) - 1
        assert t.keys == ids[-n:]
        assert f"rows {len(ids) - n + 1:,}\u2013{len(ids):,} of {len(ids):,}" in crumbs(app)

        await pilot.press("g")
        await settle(pilot)
        assert t.cursor_key == ids[0] and t.keys == ids[:n]

        await pilot.press("pagedown", "pagedown")
        await settle(pilot)
        assert t.cursor_key == ids[2 * n]

        t.goto(5 * n - 1)  # the last row of a window, then one down: the window follows
        await settle(pilot)
        await pilot.press("j")
        await settle(pilot)
        assert t.cursor_key == ids[5 * n] and t.keys[-1] == ids[5 * n]

        await pilot.press("enter")  # and the row reached opens as any other
        await settle(pilot)
        assert getattr(app.screen, "task_id", None) == ids[5 * n]


async def test_a_long_list_is_sorted_by_the_store_a_window_at_a_time(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Sorted by status, the first and the last rows are those of the whole list sorted, and
    no read asks the store for more than a screenful; a new sort reads from the top, the
    cursor staying on its item when that is there."""
    await add_tasks(world)
    every = await world.store.list_tasks(limit=100_000)
    await world.store.apply(
        [Change(every[i].id, T.DISPATCHED, frozenset({T.READY})) for i in (-1, 700, 400)],
        world.clock.now(),
    )
    every = await world.store.list_tasks(limit=100_000)
    by_status = [t.id for t in sorted(every, key=lambda t: t.status.value)]  # stable: by age
    limits = spy_on_list_tasks(world)
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "tasks")
        t = table(app)
        n = t.fits()
        limits.clear()
        await pilot.press("s", "s", "s")  # task, capability, status
        await settle(pilot)
        assert t.sort_column == 2
        assert t.keys == by_status[:n]
        await pilot.press("G")
        await settle(pilot)
        assert t.keys == by_status[-n:] and t.cursor_key == by_status[-1]
        await pilot.press("S")  # reversed (ties still oldest first), read from the top again
        await settle(pilot)
        reversed_ = [t.id for t in sorted(every, key=lambda t: t.status.value, reverse=True)]
        assert t.keys == reversed_[:n]
        assert t.cursor_key == by_status[-1] in reversed_[:n]  # its item sorts in: followed
        assert limits and max(limits) == n


async def test_the_cursor_stays_on_its_item_when_a_change_re_sorts_the_list(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """Sorted by successes, an agent that gains some moves down the list: the cursor moves
    with it, at the same height on screen, over more agents than the screen holds."""
    for i in range(60):
        record = AgentRecord(
            f"bulk-{i:02d}", f"bulk-{i:02d}@n", ("echo",), 4, AgentState.UP, START, START,
            succeeded=i,
        )  # fmt: skip
        await world.registry.register(record, ttl=3600)
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "agents")
        assert isinstance(app.screen, AgentsScreen)
        t = table(app)
        t.sort_by(5)  # "ok": successes, fewest first
        await settle(pilot)
        t.goto(10)
        await settle(pilot)
        on, row = t.cursor_key, t.cursor_row
        assert on is not None and row > 0

        await world.registry.heartbeat(
            on, 3600, in_flight=0, state=AgentState.UP, succeeded=45, failed=0
        )
        await settle(pilot)

        agents = await world.registry.agents()
        order = [a.id for a in sorted(agents, key=lambda a: (a.succeeded, a.name))]
        assert t.cursor_key == on and t.cursor_row == row
        assert t.position == order.index(on) > 10
        assert t.all_keys == order


class SpyTable(LiveTable):
    """A LiveTable that records the lines it draws (y, as Textual asks for them)."""

    def __init__(self) -> None:
        super().__init__(["name", "state", "n"], id="spy")
        self.drawn: list[int] = []

    def render_line(self, y: int) -> Strip:
        """Record, then draw."""
        self.drawn.append(y)
        return super().render_line(y)


class TableApp(App[None]):
    """Just the table."""

    def compose(self) -> ComposeResult:
        """One spy table."""
        yield SpyTable()


def rows(n: int, changes: dict[int, tuple[Any, ...]] | None = None) -> list[Row]:
    """``n`` rows ``r000``..., with some replaced."""
    out: list[Row] = [(f"r{i:03d}", (f"r{i:03d}", "up", i % 3)) for i in range(n)]
    for i, cells in (changes or {}).items():
        out[i] = (out[i][0], cells)
    return out


def line(t: LiveTable, row: int) -> str:
    """What the screen shows on the table's ``row``-th row."""
    return t.render_line(t.header_height + row).text


async def drawn_after(pilot: Any, t: SpyTable, data: list[Row]) -> list[int]:
    """The table's rows (0: the first row under the header) drawn again to show ``data``."""
    await pilot.pause()
    t.drawn.clear()
    t.sync(data)
    await pilot.pause()
    return sorted({y - t.header_height for y in t.drawn})


async def test_a_refresh_draws_only_the_rows_that_changed_and_the_screen_shows_them() -> None:
    """Of 200 rows, one visible cell and one cell out of sight change: only the visible cell
    is rendered again, only its line is drawn again, and the screen shows the new value."""
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        t = app.query_one(SpyTable)
        t.sync(rows(200))
        await pilot.pause()
        assert t.row_count == t.fits() < 12 and t.total == 200
        assert "up" in line(t, 2)
        cells = t.cell_updates

        changed = rows(200, {2: ("r002", "down", 2), 150: ("r150", "gone", 0)})
        assert await drawn_after(pilot, t, changed) == [2]
        assert t.cell_updates - cells == 1
        assert "down" in line(t, 2) and "up" not in line(t, 2)
        assert "up" in line(t, 1) and "up" in line(t, 3)

        assert await drawn_after(pilot, t, changed) == []  # the same data draws nothing
        assert t.cell_updates - cells == 1


async def test_a_wider_value_widens_its_column() -> None:
    """A value wider than its column widens it (the one case that draws every line again)."""
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        t = app.query_one(SpyTable)
        t.sync(rows(20))
        drawn = await drawn_after(pilot, t, rows(20, {0: ("r000", "draining-for-a-while", 0)}))
        assert drawn == list(range(-1, t.fits()))  # the header too
        assert "draining-for-a-while" in line(t, 0)
        assert line(t, 1).index("up") == line(t, 0).index("draining")


async def test_a_column_widened_once_stays_wide_so_later_values_redraw_only_their_rows() -> None:
    """A wider value widens its column; a narrower value in the same batch, and values up to
    that width later, draw only their own rows: the column does not shrink back, so the next
    wide value does not draw the whole table again."""
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        t = app.query_one(SpyTable)
        t.sync(rows(20))
        wide = rows(20, {0: ("r000", "dispatched", 0), 1: ("r001", "ok", 1)})
        assert len(await drawn_after(pilot, t, wide)) == t.fits() + 1  # "dispatched" only
        assert "dispatched" in line(t, 0) and "ok" in line(t, 1)

        narrower = rows(20, {0: ("r000", "running", 0), 1: ("r001", "ok", 1)})
        assert await drawn_after(pilot, t, narrower) == [0]
        later = rows(
            20, {0: ("r000", "running", 0), 1: ("r001", "ok", 1), 2: ("r002", "retrying", 2)}
        )
        assert await drawn_after(pilot, t, later) == [2]
        assert "retrying" in line(t, 2) and "running" in line(t, 0)


class TwoTablesApp(App[None]):
    """Two tables of the same size, one above the other."""

    def compose(self) -> ComposeResult:
        """The table under test and a fresh one to compare it with."""
        yield LiveTable(["name", "state", "n"], id="moved")
        yield LiveTable(["name", "state", "n"], id="fresh")


async def test_a_re_sorted_window_is_redrawn_in_place_exactly_as_a_new_table_draws_it() -> None:
    """When other rows (or the same rows in another order) fill the window, its lines take
    them in place: nothing is cleared or measured again, the cursor stays on its item, a
    wider value still widens its column, and every line is what a new table with those rows
    shows."""
    app = TwoTablesApp()
    async with app.run_test(size=(60, 24)) as pilot:
        moved, fresh = app.query_one("#moved", LiveTable), app.query_one("#fresh", LiveTable)
        whole = Region(0, 0, moved.size.width, moved.size.height)

        async def as_new(data: list[Row], column: int, reverse: bool) -> list[str]:
            # What a table given these rows, sort and cursor from scratch shows.
            fresh.sync(data)
            fresh.sort_by(column, reverse=reverse)
            fresh.goto(moved.position)
            fresh.move_cursor(row=moved.cursor_row, animate=False)
            fresh.restyle()  # (its rows cleared and added again: what a new table does)
            await pilot.pause()
            await pilot.pause()
            assert moved.keys == fresh.keys and moved.top == fresh.top
            return [strip.text for strip in fresh.render_lines(whole)]

        data = rows(40)
        moved.sync(data)
        await pilot.pause()
        moved.goto_key("r002")
        rebuilds = moved.rebuilds
        moved.sort_by(2, reverse=True)  # as many rows in the window, in another order
        await pilot.pause()
        assert moved.rebuilds == rebuilds and moved.rekeys == 1
        assert moved.cursor_key == "r002"
        assert [strip.text for strip in moved.render_lines(whole)] == await as_new(data, 2, True)

        data[2] = ("r002", ("r002", "draining-for-a-while", 1))  # wider, and it moves
        moved.sync(data)
        await pilot.pause()
        assert moved.rekeys == 2 and moved.rebuilds == rebuilds
        assert moved.cursor_key == "r002"
        assert [strip.text for strip in moved.render_lines(whole)] == await as_new(data, 2, True)

        moved.sort_by(0, reverse=True)
        await pilot.pause()
        assert moved.rekeys == 3 and moved.rebuilds == rebuilds
        texts = [strip.text for strip in moved.render_lines(whole)]
        assert texts == await as_new(data, 0, True)
        assert any("draining-for-a-while" in text for text in texts)
        # And styles too (the cursor's colour depends on focus: neither table has it).
        app.set_focus(None)
        await pilot.pause()
        assert [list(s) for s in moved.render_lines(whole)] == [
            list(s) for s in fresh.render_lines(whole)
        ]


async def test_a_changed_task_rewrites_only_its_own_row(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """One task moving on changes cells of its row only, in place."""
    await add_tasks(world, 50)
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "tasks")
        assert isinstance(app.screen, TasksScreen)
        t = table(app)
        statuses = {k: (await world.store.get_task(k)).status for k in t.keys}
        row = next(i for i, k in enumerate(t.keys) if statuses[k] == T.READY)
        target = t.keys[row]
        rebuilds, cells = t.rebuilds, t.cell_updates
        await world.store.apply(
            [Change(target, T.DISPATCHED, frozenset({T.READY}), values={"attempt": 1})],
            world.clock.now(),
        )
        await settle(pilot)
        assert t.rebuilds == rebuilds
        assert 1 <= t.cell_updates - cells <= 3  # status, attempt (and its age, if it moved)
        assert "dispatched" in line(t, row)
        assert (await world.store.get_task(target)).status == T.DISPATCHED


CELLS: list[str | Text] = [
    "plain",
    "",
    "a [bold]marked[/] up",
    Text("styled", style="bold red"),
    Text.assemble(("two", "green"), " ", ("spans", "italic on blue")),
    Text("日本語のテキスト", style="cyan"),
    Text("tab\there", style="underline"),
    Text("right", style="magenta", justify="right"),
    Text("an ellipsis that is long", style="yellow", overflow="ellipsis"),
    Text(""),
    Text("", style="bold"),
    Text("two\nlines", style="green"),
    Text("wider than the terminal " * 5, style="bold"),
    "x" * 90,
]
"""Cells of every kind the screens write (plain text, markup, styled Text, wide characters,
empty) and some they do not (justified, ellipsis, tabs, two lines, wider than the screen)."""


class SideBySideApp(App[None]):
    """A LiveTable and a DataTable of the same size, one above the other."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def on_mount(self) -> None:
        """Both tables ``width`` wide, 14 high."""
        for widget in self.query("LiveTable, DataTable"):
            widget.styles.width = self.width
            widget.styles.height = widget.styles.max_height = 14

    def compose(self) -> ComposeResult:
        """A tagged table whose cells are shown as given, and a DataTable to compare with."""
        yield LiveTable(
            [f"c{i}" for i in range(4)], render=lambda _i, v: v, taggable=True, id="live"
        )
        yield DataTable(cursor_type="row", id="data")


@pytest.mark.parametrize("wide", [True, False], ids=["wider-than-screen", "narrower"])
async def test_lines_are_drawn_exactly_as_data_table_draws_them(wide: bool) -> None:
    """Every line (header, rows, blank lines below) is the same segments, styles and mouse
    metadata as Textual's DataTable draws for the same cells: every kind of cell, with the
    cursor, the mouse over a row or the header, zebra stripes on and off, focused or not,
    scrolled sideways or not, in a table wider than the screen and in one narrower (whose row
    colours reach the right edge)."""
    cells = CELLS if wide else CELLS[:9]
    app = SideBySideApp(80 if wide else 150)
    async with app.run_test(size=(160, 30)) as pilot:
        live, data = app.query_one(LiveTable), app.query_one(DataTable)
        n = len(cells)
        rows_ = [(f"r{i}", tuple(cells[(i + j) % n] for j in range(4))) for i in range(10)]
        live.tagged = {"r1", "r4"}
        live.sync(rows_)
        await pilot.pause()
        data.add_column(" ", key="_tag", width=1)
        for name in ("c0", "c1", "c2", "c3"):
            data.add_column(name, key=name)
        for key, _ in rows_:
            data.add_row(*live.get_row(key), key=key)
        await pilot.pause()
        assert live.row_count == data.row_count == 10
        assert live.virtual_size.width == data.virtual_size.width
        assert (live.virtual_size.width > live.size.width) is wide

        def lines(shown: LiveTable | DataTable[Any]) -> list[list[Any]]:
            return [list(shown.render_line(y)) for y in range(shown.size.height)]

        seen: set[str] = set()
        for cursor, zebra, scroll_x, hover, focus in itertools.product(
            (0, 3), (False, True), (0, 7), (None, 2, 0), (None, "live")
        ):
            for shown in (live, data):
                shown.move_cursor(row=cursor)
                shown.zebra_stripes = zebra
                shown.scroll_to(x=scroll_x, animate=False, immediate=True)
            await pilot.pause()
            theirs: list[list[Any]] = []
            ours: list[list[Any]] = []
            for shown, out in ((data, theirs), (live, ours)):
                # (the mouse and the focus are on one table at a time: each in turn)
                app.set_focus(shown if focus else None)
                await pilot.hover(None, offset=(159, 29))  # off both tables
                if hover is not None:
                    await pilot.hover(shown, offset=(5, hover))
                await pilot.pause()
                out += lines(shown)
            assert ours == theirs, (cursor, zebra, scroll_x, hover, focus)
            seen.add(repr(ours))
        # Each state shows (else the case would prove nothing); a narrow table cannot scroll.
        assert len(seen) == (48 if wide else 24)
        assert any("日本語" in seg.text for line in ours for seg in line)


async def test_text_that_looks_like_markup_is_shown_as_it_is() -> None:
    """Cells are text, not markup: a task key or log line holding ``[/]`` or ``[red]`` is shown
    as written (DataTable would parse a str cell as markup, and ``[/]`` would break the screen)."""
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        t = app.query_one(SpyTable)
        t.sync([("a", ("[/]", "[red]up[/red]", 1)), ("b", ("[bold]", "x", 2))])
        await pilot.pause()
        await pilot.pause()
        assert "[/]" in line(t, 0) and "[red]up[/red]" in line(t, 0)
        assert "[bold]" in line(t, 1)
        t.sync([("a", ("[/]", "[/red] gone", 1)), ("b", ("[bold]", "x", 2))])
        await pilot.pause()
        assert "[/red] gone" in line(t, 0)


async def test_the_action_log_reaches_every_command_not_just_the_newest_500(
    world: World, app_for: Callable[..., AgentdeckApp]
) -> None:
    """The log holds every command: the table reads the window it shows and the count, so
    G reaches the oldest of 620; sorted, it orders the newest 5,000 itself."""
    from agentdeck.core.models import Command

    before = await world.store.count_commands()
    for i in range(620):
        world.clock.advance(1)
        await world.store.add_command(
            Command(f"bulk{i:04d}", "retry", f"wf/{i}", world.clock.now())
        )
    total = before + 620
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await command(pilot, "actions")
        t = table(app)
        assert t.paged and t.total == total and t.keys[0] == "bulk0619"
        assert f"rows 1\u2013{t.row_count} of {total:,}" in crumbs(app)
        await pilot.press("G")
        await settle(pilot)
        oldest = (await world.store.list_commands(limit=1, offset=total - 1))[0].id
        assert t.cursor_key == oldest and t.position == total - 1
        t.sort_by(3)  # by target: the table sorts what it read
        await settle(pilot)
        await settle(pilot)
        assert not t.paged and t.total == total
        targets = [t.get_row(k)[3] for k in t.keys]
        assert [str(x) for x in targets] == sorted(str(x) for x in targets)


async def test_when_fewer_rows_fit_the_cursor_keeps_its_item_on_screen() -> None:
    """The cursor on the last line, then the terminal gets shorter: the window follows the
    cursor's item instead of dropping it (and the cursor with it onto another row)."""
    app = TableApp()
    async with app.run_test(size=(60, 16)) as pilot:
        t = app.query_one(SpyTable)
        t.sync(rows(200))
        await pilot.pause()
        t.goto(t.fits() + 4)  # past the first window: the window moved down to it
        await pilot.pause()
        assert t.cursor_row == t.fits() - 1
        item = t.cursor_key
        await pilot.resize_terminal(60, 10)
        await pilot.pause()
        await pilot.pause()
        assert t.row_count == t.fits() < 10
        assert t.cursor_key == item and item in t.keys
