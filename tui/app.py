"""The control centre: a Textual app over the Store, the Registry and the events stream.

``agentdeck`` (no subcommand) calls :func:`run_app`. With nothing configured it builds the
embedded runtime (scheduler, agents, SQLite) and runs it inside the app: started in a worker on
mount, shut down when the app closes. With backend URLs configured it *attaches*: it opens the
Store, the Registry and the Bus only, runs no scheduler (it never takes the lease) and shows who
leads. Screens read the Store through a :class:`core.client.Client` and change nothing
themselves: actions queue commands that the scheduler leader carries out, and those land in the
action log.

Refreshing is batched: events only mark the view dirty; a timer reloads the *visible* screen at
most ``refresh_interval`` apart (and every few seconds anyway, for ages and heartbeats), and never
while the view is paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from typing import ClassVar

from rich.errors import StyleSyntaxError
from rich.segment import Segments
from rich.style import Style
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.color import Color, ColorParseError
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.theme import Theme

from agentdeck.core.errors import AgentdeckError, ConfigError
from agentdeck.core.logs import configure_logging, get_logger
from agentdeck.core.messages import Event, decode
from agentdeck.core.scheduler import LEASE_NAME
from agentdeck.core.settings import Settings
from agentdeck.core.states import TaskStatus
from agentdeck.themes import APP_CSS, BUILTIN, load_theme
from agentdeck.tui.screens.actions import ActionsScreen
from agentdeck.tui.screens.agents import AgentsScreen
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.screens.breakers import BreakersScreen
from agentdeck.tui.screens.capabilities import CapabilitiesScreen
from agentdeck.tui.screens.dead_letters import DeadLettersScreen
from agentdeck.tui.screens.logs import LEVELS, LOG_CAP, LogLine, LogsScreen, log_line
from agentdeck.tui.screens.modals import ConfirmScreen, HelpScreen
from agentdeck.tui.screens.overview import OverviewScreen
from agentdeck.tui.screens.tasks import TasksScreen
from agentdeck.tui.screens.traces import TracesScreen
from agentdeck.tui.screens.workflows import WorkflowScreen, WorkflowsScreen
from agentdeck.tui.sources import Connect, Sources
from agentdeck.tui.terminal import end_stuck_exit, hangup_safe
from agentdeck.tui.widgets.command_line import CommandLine

#: How an action reads in a confirmation: "Retry task wf/a?".
VERBS = {
    "retry": "Retry",
    "cancel": "Cancel",
    "pause": "Pause",
    "resume": "Resume",
    "trip": "Trip open",
    "reset": "Reset closed",
    "drain": "Drain",
    "undrain": "Undrain",
    "pause-capability": "Pause",
    "resume-capability": "Resume",
    "requeue": "Requeue",
}
#: Seconds between reloads when nothing happened (ages and heartbeats still move).
IDLE_RELOAD = 2.0
RATE_WINDOW = 60
log = get_logger(__name__)
#: Seconds after SIGHUP/SIGTERM before the process ends itself if a clean exit is stuck
#: (longer than the runtime's drain grace, so a clean shutdown always gets its chance).
EXIT_WATCHDOG = 20.0
#: What an attached control centre says when no scheduler holds the lease.
NO_LEADER = "no leader — start `agentdeck --daemon`"


def _key_label(binding: Binding) -> str:
    return binding.key_display or binding.key.split(",")[0]


def is_colour(value: str) -> bool:
    """Whether ``value`` is a colour both Textual's CSS and a Rich style string read (the state
    colours end up in both; ``rgb(1, 2, 3)`` with spaces, say, is CSS but breaks a style)."""
    try:
        Color.parse(value)
        Style.parse(value)
    except (ColorParseError, StyleSyntaxError):
        return False
    return True


def _textual_theme(data: dict[str, object]) -> Theme:
    fields = {k: v for k, v in data.items() if k not in ("name", "variables")}
    return Theme(
        name=f"agentdeck-{data['name']}",
        variables=dict(data.get("variables", {})),  # type: ignore[call-overload]
        **fields,  # type: ignore[arg-type]
    )


class AgentdeckApp(App[None]):
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
        Binding("1", "goto('overview')", "Overview", show=False),
        Binding("2", "goto('workflows')", "Workflows", show=False),
        Binding("3", "goto('tasks')", "Tasks", show=False),
        Binding("4", "goto('agents')", "Agents", show=False),
        Binding("5", "goto('actions')", "Action log", show=False),
        Binding("6", "goto('breakers')", "Breakers", show=False),
        Binding("7", "goto('capabilities')", "Capabilities", show=False),
        Binding("8", "goto('dead')", "Dead letters", show=False),
        Binding("9", "goto('logs')", "Logs", show=False),
        Binding("0", "goto('traces')", "Traces", show=False),
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
        self.connected = asyncio.Event()
        self.paused = False
        self._stack = AsyncExitStack()
        self._dirty = True
        self._last_reload = 0.0
        self._reloading = False
        self._themes: list[str] = []
        self._theme_setting = theme
        self._done: deque[int] = deque([0] * RATE_WINDOW, maxlen=RATE_WINDOW)
        self._failed: deque[int] = deque([0] * RATE_WINDOW, maxlen=RATE_WINDOW)
        self._rate_second: int | None = None
        self.logbook: deque[LogLine] = deque(maxlen=LOG_CAP)
        """The newest events as log lines, for the logs screen (capped)."""
        self._log_seq = 0
        self.leader: str | None = None
        """Attached: the node holding the scheduler lease at the last reload (None: nobody)."""
        self._leader_read = False

    # ------------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        """Register the themes, show the overview, connect in the background."""
        for name in BUILTIN:
            self.add_theme(load_theme(name, is_colour))
        self.set_theme(self._theme_setting)
        self.push_screen(OverviewScreen())
        self.run_worker(self._connect(), name="connect", group="connect")

    async def _connect(self) -> None:
        try:
            self.sources = await self._stack.enter_async_context(self._connect_sources())
        except AgentdeckError as exc:
            self.exit(return_code=1, message=f"error: {exc}")
            return
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
        """Shut down what :func:`run_app` started (the runtime), after the screens are gone."""
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
        self.register_theme(_textual_theme(data))
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
        self.theme = f"agentdeck-{name}"
        for screen in self.screen_stack:
            for table in screen.query("LiveTable"):
                table.restyle()  # type: ignore[attr-defined]

    @property
    def theme_name(self) -> str:
        """The short name of the current theme (``dark``, ``light``, ...)."""
        return self.theme.removeprefix("agentdeck-")

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

    def _count(self, event: Event) -> None:
        second = int(event.at)
        if self._rate_second is None:
            self._rate_second = second
        while self._rate_second < second:
            self._rate_second += 1
            self._done.append(0)
            self._failed.append(0)
        kind = event.data.get("kind")
        if kind == "succeeded":
            self._done[-1] += 1
        elif kind in ("failed", "retrying"):
            self._failed[-1] += 1

    def rates(self) -> tuple[list[int], list[int]]:
        """Tasks that succeeded and that failed, per second, over the last minute."""
        return list(self._done), list(self._failed)

    async def _follow_events(self, events: Callable[[], AsyncIterator[bytes]]) -> None:
        async for body in events():
            try:
                event = decode(body, Event)
            except AgentdeckError:
                continue
            self.record(event)
            if event.topic == "task":
                self._count(event)
            elif event.topic == "command":
                d = event.data
                failed = d.get("status") != "done"
                self.notify(
                    f"{d.get('action')} {d.get('target')}: {d.get('result')}",
                    severity="error" if failed else "information",
                )

    def record(self, event: Event) -> None:
        """Keep ``event`` in the (capped) log and mark the view dirty."""
        self._log_seq += 1
        self.logbook.append(log_line(self._log_seq, event))
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
        if self.sources is None:
            badges.append(("connecting…", "dim"))
        elif self.sources.attached and self._leader_read:
            warn = f"bold reverse {self.status_style('failed')}".strip()
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
        """Jump to a top-level screen by name."""
        screens: dict[str, Callable[[], DeckScreen]] = {
            "overview": OverviewScreen,
            "workflows": WorkflowsScreen,
            "tasks": TasksScreen,
            "agents": AgentsScreen,
            "actions": ActionsScreen,
            "breakers": BreakersScreen,
            "capabilities": CapabilitiesScreen,
            "dead": DeadLettersScreen,
            "logs": LogsScreen,
            "traces": TracesScreen,
        }
        await self.goto(screens[name]())

    def go_back(self) -> None:
        """Close the top drill-down screen (the top-level screen stays)."""
        if len(self.screen_stack) > 2:
            self.pop_screen()

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
        keys += [
            ("1-6", "Overview, workflows, tasks, agents, action log, breakers"),
            ("7 8 9 0", "Capabilities, dead letters, logs, traces"),
            ("t", "Next theme"),
        ]
        keys += [("ctrl+p", "Command palette"), ("?", "This help"), ("q", "Quit")]
        self.push_screen(HelpScreen(screen.crumb_text(), keys))

    async def on_command_line_typed(self, message: CommandLine.Typed) -> None:
        """Filter as the user types."""
        screen = self.screen
        if isinstance(screen, DeckScreen) and (table := screen.table()) is not None:
            table.set_filter(message.text)
            self.update_bar()

    async def on_command_line_run(self, message: CommandLine.Run) -> None:
        """Run a ``:`` command or set a ``/`` filter."""
        if message.mode == "filter":
            screen = self.screen
            if isinstance(screen, DeckScreen) and (table := screen.table()) is not None:
                table.set_filter(message.text)
                table.focus()
            self.update_bar()
        elif message.mode == "command" and message.text:
            await self.run_command(message.text)

    async def run_command(self, text: str) -> None:
        """Carry out a ``:`` command (``agents``, ``tasks failed cap=echo``, ``wf <id>``...)."""
        word, *args = text.split()
        word = word.lower()
        if word in ("q", "quit", "exit"):
            self.exit()
        elif word in ("o", "ov", "overview"):
            await self.goto(OverviewScreen())
        elif word in ("wf", "workflow", "workflows"):
            await self.goto(WorkflowsScreen())
            if args:
                await self._open_workflow(args[0])
        elif word in ("t", "task", "tasks"):
            screen = self._tasks_screen(args)
            if screen is not None:
                await self.goto(screen)
        elif word in ("a", "agent", "agents"):
            await self.goto(AgentsScreen())
        elif word in ("actions", "history"):
            await self.goto(ActionsScreen())
        elif word in ("breakers", "breaker", "br"):
            await self.goto(BreakersScreen())
        elif word in ("caps", "capabilities", "capability", "cap"):
            await self.goto(CapabilitiesScreen())
        elif word in ("dead", "dead-letters", "dlq"):
            await self.goto(DeadLettersScreen())
        elif word in ("traces", "trace", "tr"):
            await self.goto(TracesScreen())
        elif word in ("logs", "log"):
            logs = self._logs_screen(args)
            if logs is not None:
                await self.goto(logs)
        elif word == "help":
            self.action_help()
        elif word == "theme" and args:
            try:
                self.set_theme(args[0])
            except ConfigError as exc:
                self.notify(str(exc), severity="error")
            await self.refresh_now()
        else:
            self.notify(
                f"unknown command {text!r}; known: overview, workflows, wf <id>, "
                "tasks [status] [cap=x] [wf=id] [agent=id], agents, actions, breakers, caps, "
                "dead, logs [task=id] [wf=id] [agent=id] [level=x], traces, theme <name>, help, "
                "quit",
                severity="error",
            )

    def _tasks_screen(self, args: Iterable[str]) -> TasksScreen | None:
        statuses: list[TaskStatus] = []
        capability = workflow = agent = None
        for arg in args:
            key, eq, value = arg.partition("=")
            if eq and key in ("cap", "capability"):
                capability = value
            elif eq and key in ("wf", "workflow"):
                workflow = value
            elif eq and key == "agent":
                agent = value
            elif arg in TaskStatus.__members__.values():
                statuses.append(TaskStatus(arg))
            else:
                self.notify(
                    f"tasks: {arg!r} is not a filter; use a status "
                    f"({', '.join(TaskStatus)}), cap=<capability>, wf=<workflow id> or agent=<id>",
                    severity="error",
                )
                return None
        return TasksScreen(statuses, capability, workflow, agent)

    def _logs_screen(self, args: Iterable[str]) -> LogsScreen | None:
        filters: dict[str, str] = {}
        names = {"task": "task", "wf": "workflow", "workflow": "workflow", "agent": "agent"}
        for arg in args:
            key, eq, value = arg.partition("=")
            if eq and key in names and value:
                filters[names[key]] = value
            elif eq and key == "level" and value in LEVELS:
                filters["level"] = value
            else:
                self.notify(
                    f"logs: {arg!r} is not a filter; use task=<id>, wf=<id>, agent=<id> or "
                    f"level=<{'|'.join(LEVELS)}>",
                    severity="error",
                )
                return None
        return LogsScreen(**filters)

    async def _open_workflow(self, target: str) -> None:
        if self.sources is None:
            return
        try:
            found = await self.sources.client.resolve(target)
        except AgentdeckError as exc:
            self.notify(str(exc), severity="error")
            return
        await self.drill(WorkflowScreen(getattr(found, "workflow_id", found.id)))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette: the screens, the themes, pause, quit."""
        yield SystemCommand(
            "Overview",
            "The fleet at a glance",
            lambda: self.run_worker(self.action_goto("overview")),
        )
        yield SystemCommand(
            "Workflows", "Every workflow", lambda: self.run_worker(self.action_goto("workflows"))
        )
        yield SystemCommand(
            "Tasks", "Every task", lambda: self.run_worker(self.action_goto("tasks"))
        )
        yield SystemCommand(
            "Failed tasks",
            "Tasks that failed for good",
            lambda: self.run_worker(self.run_command("tasks failed")),
        )
        yield SystemCommand(
            "Agents", "The live fleet", lambda: self.run_worker(self.action_goto("agents"))
        )
        yield SystemCommand(
            "Capabilities",
            "Queues per capability; pause or resume one",
            lambda: self.run_worker(self.action_goto("capabilities")),
        )
        yield SystemCommand(
            "Dead letters",
            "Messages the bus gave up on; requeue them",
            lambda: self.run_worker(self.action_goto("dead")),
        )
        yield SystemCommand(
            "Logs", "The events stream", lambda: self.run_worker(self.action_goto("logs"))
        )
        yield SystemCommand(
            "Traces",
            "Recent traces and their spans",
            lambda: self.run_worker(self.action_goto("traces")),
        )
        yield SystemCommand(
            "Action log",
            "Operator commands and results",
            lambda: self.run_worker(self.action_goto("actions")),
        )
        for name in self._themes:
            yield SystemCommand(
                f"Theme: {name}", f"Switch to the {name} theme", lambda n=name: self.set_theme(n)
            )
        yield SystemCommand(
            "Pause / follow", "Freeze or unfreeze the view", self.action_toggle_pause
        )
        yield SystemCommand("Quit", "Leave agentdeck", self.exit)

    # ------------------------------------------------------------------------- actions

    def request_action(self, action: str, targets: list[str], what: str) -> None:
        """Ask to confirm ``action`` on ``targets`` naming them, then queue the command(s)."""
        if self.read_only:
            self.notify("read-only: actions are disabled", severity="warning")
            return
        if not targets:
            self.notify("nothing selected", severity="warning")
            return
        plural = f"{len(targets)} {what}s" if len(targets) > 1 else f"{what} {targets[0]}"
        question = f"{VERBS[action]} {plural}?"

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._send(action, targets), group="actions")
            else:
                self.notify(f"{action} not sent", timeout=2)

        self.push_screen(ConfirmScreen(question, targets), answered)

    async def _send(self, action: str, targets: list[str]) -> None:
        assert self.sources is not None
        sent = 0
        for target in targets:
            try:
                await self.sources.client.command(action, target, wait=None)
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


# ----------------------------------------------------------------------------- running


def run_app(settings: Settings, connect: Connect, *, read_only: bool) -> None:
    """Run the control centre on the sources ``connect`` opens (``compose.control_centre``)
    until quit, SIGHUP/SIGTERM, or the terminal going away."""
    try:
        # A bad theme is a config error before the screen changes.
        load_theme(settings.theme, is_colour)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    # Logs would scribble over the screen: they go to a file while the TUI runs.
    log_file = (home / "agentdeck-tui.log").open("a")
    configure_logging(settings.log_level, "json", node=settings.node, stream=log_file)
    app = AgentdeckApp(
        connect,
        read_only=read_only,
        theme=settings.theme,
        freeze_heap=True,
    )

    # Textual's terminal threads must not keep the process alive after a hang-up (tui/terminal.py).
    app.driver_class = hangup_safe(app.driver_class)
    hung_up = threading.Event()
    signals: list[int] = []

    def hang_up(loop: asyncio.AbstractEventLoop, signum: int, frame: object) -> None:
        # The terminal is gone (SIGHUP) or we are told to stop (SIGTERM): leave cleanly, which
        # stops the runtime. A plain signal handler, not loop.add_signal_handler: it runs even
        # while the event loop is blocked, as Textual blocks it when the terminal stops reading
        # without hanging up (a frozen SSH link) and its output queue is full. Only for that
        # (or a blocked exit not yet understood) a watchdog ends the process, logging
        # `exit_watchdog` and every thread's stack, if leaving takes longer than the drain grace.
        if hung_up.is_set():
            return
        hung_up.set()
        signals.append(signum)  # (logged on the way out: a handler must not write the log)
        watchdog = threading.Timer(EXIT_WATCHDOG, end_stuck_exit, args=(128 + signum, log_file))
        watchdog.daemon = True
        watchdog.start()
        with contextlib.suppress(RuntimeError):  # the loop is closed: the app has left already
            loop.call_soon_threadsafe(app.request_exit)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, functools.partial(hang_up, loop))
        await app.run_async()

    try:
        asyncio.run(go())
    finally:
        how = signal.Signals(signals[0]).name if signals else "error" if app.return_code else "quit"
        log.info("tui_exited", how=how, return_code=app.return_code or 0)
        log_file.close()
    if app.return_code:
        raise SystemExit(app.return_code)
