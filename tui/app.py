"""The control centre: a Textual app over the data sources the composition root hands it.

``agentdeck`` (no subcommand) runs it (``agentdeck.tui.run``) with one opener of
:class:`Sources` (``agentdeck.tui.compose``): a whole node in this process, or a cluster it is
attached to. The app enters it in its own event loop and never opens a backend itself.

Screens read the Store through a :class:`core.client.Client` and change nothing themselves:
they post messages the app handles here (an action to confirm and queue, a screen to open, a
reload). The commands they queue are carried out by the scheduler leader and land in the
action log. The screens, their keys, the ``:`` commands, the palette and the help all come
from one registry (``agentdeck.tui.screens.registry``).

Keys typed ahead wait their turn: one key is forwarded at a time, and the next only once it has
been handled, focus changes and all (``agentdeck.tui.keys``).

Refreshing is batched: events only mark the view dirty; a timer reloads the *visible* screen at
most ``refresh_interval`` apart (and every few seconds anyway, for ages and heartbeats), and never
while the view is paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from rich.segment import Segments
from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import Screen

from agentdeck.core.actions import ACTIONS, LEADER, Action
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.logs import get_logger
from agentdeck.core.messages import Event, decode
from agentdeck.core.models import CommandStatus
from agentdeck.core.scheduler import LEASE_NAME
from agentdeck.themes import APP_CSS, BUILTIN, load_theme
from agentdeck.tui.feed import EventFeed
from agentdeck.tui.screens import registry
from agentdeck.tui.screens.base import Deck, DeckScreen
from agentdeck.tui.screens.modals import AskScreen, ConfirmScreen, HelpScreen
from agentdeck.tui.screens.workflows import WorkflowScreen
from agentdeck.tui.sources import Connect, Health, Sources, watched
from agentdeck.tui.theming import PREFIX, is_colour, textual_theme
from agentdeck.tui.typeahead import TypeAheadApp
from agentdeck.tui.widgets.command_line import CommandLine

#: Seconds between reloads when nothing happened (ages and heartbeats still move).
IDLE_RELOAD = 2.0
log = get_logger(__name__)
#: What an attached control centre says when no scheduler holds the lease.
NO_LEADER = "no leader — start `agentdeck --daemon`"


def _key_label(binding: Binding) -> str:
    return binding.key_display or binding.key.split(",")[0]


class AgentdeckApp(TypeAheadApp):
    """The control centre."""

    CSS_PATH = str(APP_CSS)
    TITLE = "agentdeck"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "command_line", "Command", key_display=":"),
        Binding("slash", "filter", "Filter", key_display="/", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("p", "toggle_pause", "Freeze"),
        Binding("t", "cycle_theme", "Theme", show=False),
        *registry.bindings(),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        connect: Connect,
        *,
        read_only: bool = False,
        theme: str = "dark",
        refresh_interval: float | None = 0.25,
        freeze_heap: bool = False,
    ) -> None:
        super().__init__()
        self._connect_sources = connect
        self.freeze_heap = freeze_heap
        """Move what exists once connected out of the garbage collector's way (the program
        does; tests, which run many apps in one process, do not)."""
        self.read_only = read_only
        self.refresh_interval = refresh_interval
        self.sources: Sources | None = None
        self.health: Health | None = None
        """Whether the Store and the Registry answer (None until connected)."""
        self.connected = asyncio.Event()
        self.paused = False
        self._stack = AsyncExitStack()
        self._dirty = True
        self._last_reload = 0.0
        self._reloading = False
        self._themes: list[str] = []
        self._theme_setting = theme
        self.feed = EventFeed()
        """The recent events as log lines, and the task rates (for the logs and overview)."""
        self.completions = registry.completions(BUILTIN)
        """What the ``:`` command line completes (the screen registry's, and the themes)."""
        self.leader: str | None = None
        """Attached: the node holding the scheduler lease at the last reload (None: nobody)."""
        self._leader_read = False

    # ------------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        """Register the themes, show the overview, connect in the background."""
        for name in BUILTIN:
            self.add_theme(load_theme(name, is_colour))
        self.set_theme(self._theme_setting)
        self.push_screen(registry.HOME.screen())
        self.start_key_watch()
        self.run_worker(self._connect(), name="connect", group="connect")

    async def _connect(self) -> None:
        try:
            sources = await self._stack.enter_async_context(self._connect_sources())
        except AgentdeckError as exc:
            self.exit(return_code=1, message=f"error: {exc}")
            return
        # The traces screen reads one buffer: this process's spans (if it records any) and
        # those every process publishes on the events stream, which the feed adds to it.
        if sources.recent is None:
            sources = replace(sources, recent=self.feed.spans)
        else:
            self.feed.spans = sources.recent
        self.health = Health(sources.clock)
        self.sources = watched(sources, self.health)
        self.connected.set()
        if self.sources.events is not None:
            self.run_worker(self._follow_events(self.sources.events), name="events", group="events")
        if self.refresh_interval:
            self.set_interval(self.refresh_interval, self._tick)
        await self.refresh_now()
        if self.freeze_heap:
            # Python's full collections walk every object, and at start-up the app, its
            # screens and the embedded core are most of them: with 10,000 tasks a full
            # collection took 90-150 ms, a visible stall every few seconds. Frozen, they are
            # not walked again (scripts/bench_tui.py: the stalls went to 10-70 ms).
            gc.collect()
            gc.freeze()

    async def on_unmount(self) -> None:
        """Shut down what the sources opener started (the runtime), after the screens are gone."""
        await self._stack.aclose()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Show a notification, as text: messages carry ids and error texts, and Textual would
        read ``[/]`` in one as markup and fail (widgets ask for markup by default: ignored)."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def request_exit(self) -> None:
        """Leave the app (safe from a signal handler: SIGHUP, SIGTERM)."""
        self.exit()

    def _fatal_error(self) -> None:
        """Exit after an unhandled exception, printing its traceback without local variables.

        Textual's own prints every frame's locals, and those hold settings and URLs with their
        passwords: a crash on an operator's screen (or in a pasted bug report) must not show
        them."""
        from rich.traceback import Traceback

        # The screen's copy goes with the terminal (a tmux pane closes, an SSH link drops):
        # the log keeps one (no locals either).
        log.error("tui_crashed", exc_info=True)
        self.bell()
        traceback = Traceback(show_locals=False, width=None)
        self._exit_renderables.append(
            Segments(self.console.render(traceback, self.console.options))
        )
        self._close_messages_no_wait()

    # -------------------------------------------------------------------------- themes

    def add_theme(self, data: dict[str, object]) -> str:
        """Register a theme loaded by :func:`themes.load_theme`; returns its short name."""
        self.register_theme(textual_theme(data))
        name = str(data["name"])
        if name not in self._themes:
            self._themes.append(name)
        return name

    def set_theme(self, name_or_path: str) -> None:
        """Switch to a built-in theme by name or a theme file by path (ConfigError if neither)."""
        name = (
            name_or_path
            if name_or_path in self._themes
            else self.add_theme(load_theme(name_or_path, is_colour))
        )
        self.theme = f"{PREFIX}{name}"
        for screen in self.screen_stack:
            for table in screen.query("LiveTable"):
                table.restyle()  # type: ignore[attr-defined]

    @property
    def theme_name(self) -> str:
        """The short name of the current theme (``dark``, ``light``, ...)."""
        return self.theme.removeprefix(PREFIX)

    def status_style(self, status: str) -> str:
        """The colour of a task/workflow state in the current theme (empty if none)."""
        return self.current_theme.variables.get(f"status-{status}", "")

    def action_cycle_theme(self) -> None:
        """Next theme."""
        names = self._themes
        current = names.index(self.theme_name) if self.theme_name in names else -1
        self.set_theme(names[(current + 1) % len(names)])
        self.notify(f"theme {self.theme_name}", timeout=1.5)
        self.call_later(self.refresh_now)

    # ---------------------------------------------------------------------- refreshing

    async def _follow_events(self, events: Callable[[], AsyncIterator[bytes]]) -> None:
        async for body in events():
            try:
                event = decode(body, Event)
            except AgentdeckError:
                continue
            self.record(event)
            if event.topic == "command":
                d = event.data
                failed = d.get("status") != "done"
                self.notify(
                    f"{d.get('action')} {d.get('target')}: {d.get('result')}",
                    severity="error" if failed else "information",
                )

    def record(self, event: Event) -> None:
        """Keep ``event`` in the feed and mark the view dirty."""
        self.feed.record(event)
        self._dirty = True

    async def _tick(self) -> None:
        if self.paused or self._reloading or self.sources is None:
            return
        now = self.sources.clock.now()
        if self._dirty or now - self._last_reload >= IDLE_RELOAD:
            await self.refresh_now()

    async def refresh_now(self) -> None:
        """Reload the visible screen now (tests call this instead of waiting for the timer)."""
        screen = self.screen
        if self.sources is None or not isinstance(screen, DeckScreen):
            self.update_bar()
            return
        self._reloading, self._dirty = True, False
        try:
            await screen.reload()
            if self.sources.attached:
                await self._read_leader()
        except AgentdeckError as exc:
            self.notify(str(exc), severity="error", timeout=3)
        except NoMatches:
            if screen is self.screen:
                raise
            # (left while it read: switch_screen removed its widgets, and what it read is
            # shown nowhere; the screen now shown is read by goto's own refresh)
        finally:
            self._reloading = False
            self._last_reload = self.sources.clock.now()
        self.update_bar()

    async def _read_leader(self) -> None:
        """Who holds the scheduler lease now; a warning each time nobody comes to hold it."""
        assert self.sources is not None
        lease = await self.sources.registry.get_lease(LEASE_NAME)
        holder = lease.holder if lease else None
        if holder is None and (self.leader is not None or not self._leader_read):
            self.notify(f"{NO_LEADER}: actions stay queued until one runs", severity="warning")
        self.leader, self._leader_read = holder, True

    def update_bar(self) -> None:
        """Breadcrumbs and badges on the visible screen's status bar."""
        screen = self.screen
        if not isinstance(screen, DeckScreen):
            return
        crumbs = [s.crumb_text() for s in self.screen_stack if isinstance(s, DeckScreen)]
        table = screen.table()
        if table is not None and table.filter_text:
            crumbs[-1] += f" /{table.filter_text}"
        badges: list[tuple[str, str]] = []
        if table is not None and table.tagged:
            badges.append((f"{len(table.tagged)} tagged", "bold reverse"))
        if table is not None:
            badges.append((table.range_text(), "dim"))
        if self.read_only:
            badges.append(("READ-ONLY", "bold reverse"))
        if self.paused:
            badges.append(("PAUSED", f"bold reverse {self.status_style('failed')}".strip()))
        warn = f"bold reverse {self.status_style('failed')}".strip()
        if self.health is not None:  # a source that does not answer: which, and how stale
            badges += [(self.health.label(name), warn) for name in self.health.failing()]
        if self.sources is None:
            badges.append(("connecting…", "dim"))
        elif self.sources.attached and self._leader_read:
            badges.append((f"leader {self.leader}", "dim") if self.leader else (NO_LEADER, warn))
        with contextlib.suppress(Exception):  # the bar may not be mounted yet
            from agentdeck.tui.widgets.status_bar import StatusBar

            screen.query_one(StatusBar).show(crumbs, badges)

    def action_toggle_pause(self) -> None:
        """Freeze the view (data keeps flowing behind it); again to follow live."""
        self.paused = not self.paused
        self.update_bar()
        if not self.paused:
            self.call_later(self.refresh_now)

    # ---------------------------------------------------------------------- navigation

    async def goto(self, screen: DeckScreen) -> None:
        """Make ``screen`` the top-level screen (drill-down screens above it close)."""
        while len(self.screen_stack) > 2:
            await self.pop_screen()
        await self.switch_screen(screen)
        await self.refresh_now()

    async def action_goto(self, name: str) -> None:
        """Jump to a top-level screen by its name in the registry."""
        await self.goto(registry.BY_NAME[name].screen())

    async def on_deck_screen_open_requested(self, message: DeckScreen.OpenRequested) -> None:
        """A screen asks to open another above it."""
        message.stop()
        try:
            await self.drill(message.screen)
        finally:
            self.release_keys(message.hold)

    async def on_deck_screen_back_requested(self, message: DeckScreen.BackRequested) -> None:
        """Esc on a screen."""
        message.stop()
        try:
            await self.go_back()
        finally:
            self.release_keys(message.hold)

    async def on_deck_screen_reload_requested(self, message: DeckScreen.ReloadRequested) -> None:
        """A screen asks to be read again now."""
        message.stop()
        try:
            await self.refresh_now()
        finally:
            self.release_keys(message.hold)

    def on_deck_screen_changed(self, message: DeckScreen.Changed) -> None:
        """What the status bar shows of a screen changed."""
        message.stop()
        self.update_bar()

    async def go_back(self) -> None:
        """Close the top drill-down screen (the top-level screen stays)."""
        if len(self.screen_stack) > 2:
            await self.pop_screen()

    async def drill(self, screen: DeckScreen) -> None:
        """Open ``screen`` above the current one."""
        await self.push_screen(screen)
        await self.refresh_now()

    def _command_line(self) -> CommandLine | None:
        lines = self.screen.query(CommandLine)
        return lines.first() if lines else None

    def action_command_line(self) -> None:
        """``:`` opens the command line."""
        line = self._command_line()
        if line is not None:
            line.open("command")

    def action_filter(self) -> None:
        """``/`` opens the filter for the screen's table."""
        line, screen = self._command_line(), self.screen
        if line is not None and isinstance(screen, DeckScreen) and screen.table() is not None:
            table = screen.table()
            line.open("filter", table.filter_text if table else "")

    def action_help(self) -> None:
        """``?`` lists the keys that work on this screen: its own, its table's, then global ones."""
        screen = self.screen
        if not isinstance(screen, DeckScreen):
            return
        keys: list[tuple[str, str]] = []
        own = [b for b in screen.BINDINGS if isinstance(b, Binding) and b.key != "escape"]
        keys += [(_key_label(b), b.description) for b in own if screen.check_action(b.action, ())]
        if screen.table() is not None:
            keys += [
                ("j / k", "Down / up"),
                ("g / G", "Top / bottom"),
                ("s / S", "Sort by next column / reverse"),
            ]
            keys += [("Enter", "Open"), ("/", "Filter rows")]
        keys += [
            ("Esc", "Back"),
            (":", "Command line (Tab completes)"),
            ("p", "Pause / follow the view"),
        ]
        keys += [*registry.key_help(), ("t", "Next theme")]
        keys += [("ctrl+p", "Command palette"), ("?", "This help"), ("q", "Quit")]
        self.push_screen(HelpScreen(screen.crumb_text(), keys, registry.command_help()))

    async def on_command_line_typed(self, message: CommandLine.Typed) -> None:
        """Filter as the user types."""
        screen = self.screen
        if isinstance(screen, DeckScreen) and (table := screen.table()) is not None:
            table.set_filter(message.text)
            self.update_bar()

    async def on_command_line_run(self, message: CommandLine.Run) -> None:
        """Run a ``:`` command or set a ``/`` filter."""
        try:
            if message.mode == "filter":
                screen = self.screen
                if isinstance(screen, DeckScreen) and (table := screen.table()) is not None:
                    table.set_filter(message.text)
                    screen.set_focus(table)
                self.update_bar()
            elif message.mode == "command" and message.text:
                await self.run_command(message.text)
        finally:
            self.release_keys(message.hold)

    async def run_command(self, text: str) -> None:
        """Carry out a ``:`` command (``agents``, ``tasks failed cap=echo``, ``wf <id>``...):
        a screen's words (the registry), ``theme <name>``, ``help`` or ``quit``."""
        word, *args = text.split()
        word = word.lower()
        try:
            goto = registry.find(word, args)
            if goto is not None:
                await self.goto(goto.screen)
                if goto.target is not None:
                    await self._open_workflow(goto.target)
            elif word in registry.QUIT_WORDS:
                self.exit()
            elif word == "help":
                self.action_help()
            elif word == "reload":  # the operator action: the leader re-reads its limits
                self.request_action(Action.RELOAD, args[:1] or [LEADER], "node")
            elif word == "theme" and args:
                self.set_theme(args[0])
                await self.refresh_now()
            else:
                raise registry.unknown(text)
        except AgentdeckError as exc:
            self.notify(str(exc), severity="error")

    async def _open_workflow(self, target: str) -> None:
        if self.sources is None:
            return
        found = await self.sources.client.resolve(target)
        await self.drill(WorkflowScreen(getattr(found, "workflow_id", found.id)))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette: the screens (the registry's), the themes, pause, quit."""
        for entry in registry.palette():
            yield SystemCommand(
                entry.title, entry.help, functools.partial(self._run_soon, entry.command)
            )
        for name in self._themes:
            yield SystemCommand(
                f"Theme: {name}", f"Switch to the {name} theme", lambda n=name: self.set_theme(n)
            )
        yield SystemCommand(
            "Pause / follow", "Freeze or unfreeze the view", self.action_toggle_pause
        )
        if not self.read_only:
            yield SystemCommand(
                "Reload limits",
                ACTIONS[Action.RELOAD].help,
                functools.partial(self.request_action, Action.RELOAD, [LEADER], "node"),
            )
        yield SystemCommand("Quit", "Leave agentdeck", self.exit)

    def _run_soon(self, command: str) -> None:
        self.run_worker(self.run_command(command))

    # ------------------------------------------------------------------------- actions

    def on_deck_screen_action_requested(self, message: DeckScreen.ActionRequested) -> None:
        """A screen asks for an operator action: confirm, then queue it."""
        message.stop()
        try:
            self.request_action(message.action, message.targets, message.what, message.value)
        finally:
            self.release_keys(message.hold)

    def request_action(
        self, action: Action, targets: list[str], what: str, value: str | None = None
    ) -> None:
        """Ask to confirm ``action`` on ``targets`` naming them, then queue the command(s); an
        action that takes a value (``budget``: usd=N tokens=N) asks for it first."""
        if self.read_only:
            self.notify("read-only: actions are disabled", severity="warning")
            return
        if not targets:
            self.notify("nothing selected", severity="warning")
            return
        plural = f"{len(targets)} {what}s" if len(targets) > 1 else f"{what} {targets[0]}"
        spec = ACTIONS[action]
        if spec.value is not None and value is None:

            def given(text: str | None) -> None:
                if text:
                    self.request_action(action, targets, what, text)
                else:
                    self.notify(f"{action} not sent", timeout=2)

            self.push_screen(AskScreen(f"{spec.verb} {plural} to:", spec.value), given)
            return
        question = f"{spec.verb} {plural}" + (f" to {value}?" if value else "?")

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._send(action, targets, value), group="actions")
            else:
                self.notify(f"{action} not sent", timeout=2)

        self.push_screen(ConfirmScreen(question, targets), answered)

    async def _send(self, action: Action, targets: list[str], value: str | None = None) -> None:
        assert self.sources is not None
        if action in WAITED:
            await self._send_and_wait(action, targets[0])
            return
        sent = 0
        for target in targets:
            try:
                await self.sources.client.command(action, target, value, wait=None)
                sent += 1
            except AgentdeckError as exc:
                self.notify(str(exc), severity="error")
        if sent and self.sources.attached and self._leader_read and self.leader is None:
            self.notify(f"{action} queued for {sent} target(s); {NO_LEADER}", severity="warning")
        elif sent:
            self.notify(f"{action} queued for {sent} target(s); see the action log", timeout=3)
        screen = self.screen
        if isinstance(screen, DeckScreen) and (table := screen.table()) is not None:
            table.clear_tags()
        await self.refresh_now()

    async def _send_and_wait(self, action: Action, target: str) -> None:
        """Queue ``action`` and show its outcome when the leader has carried it out (what a
        reload changed, or the bad value), in a toast."""
        assert self.sources is not None
        try:
            done = await self.sources.client.command(action, target, wait=WAIT_SECONDS)
        except AgentdeckError as exc:  # (a CommandTimeout too: nobody leads)
            self.notify(str(exc), severity="error", timeout=10)
            return
        failed = done.status == CommandStatus.FAILED
        self.notify(
            done.result or f"{action} {done.status.value}",
            title=f"{action} {'failed' if failed else 'done'}",
            severity="error" if failed else "information",
            timeout=10,
        )


WAITED = frozenset({Action.RELOAD})
"""Actions whose outcome the operator waits for in a toast (what a reload changed, or why it
did not); the others are queued and read in the action log."""
WAIT_SECONDS = 10.0
"""How long the control centre waits for the leader to carry out a waited action."""


if TYPE_CHECKING:
    # The type checker's proof that the app offers the screens what they read of it.
    _deck: type[Deck] = AgentdeckApp
