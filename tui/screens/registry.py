"""The one registry of top-level screens; everything that names a screen reads it.

Each :class:`ScreenSpec` row says a screen's name, its key, its title, the words ``:`` knows it
by, how its command reads, and what the palette says of it. From the rows come the app's
number-key bindings (:func:`bindings`), the ``:`` command line (:func:`find`, the completions
of :func:`completions`), the command palette (:func:`palette`) and the help text
(:func:`key_help`, :func:`command_usage`). A new screen is a new row here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from textual.binding import Binding

from agentdeck.core.errors import AgentdeckError
from agentdeck.core.states import TaskStatus
from agentdeck.tui.screens.actions import ActionsScreen
from agentdeck.tui.screens.agents import AgentsScreen
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.screens.breakers import BreakersScreen
from agentdeck.tui.screens.capabilities import CapabilitiesScreen
from agentdeck.tui.screens.dead_letters import DeadLettersScreen
from agentdeck.tui.screens.logs import LogsScreen
from agentdeck.tui.screens.overview import OverviewScreen
from agentdeck.tui.screens.tasks import TasksScreen
from agentdeck.tui.screens.traces import TracesScreen
from agentdeck.tui.screens.workflows import WorkflowsScreen


@dataclass(frozen=True, slots=True)
class Shortcut:
    """A palette entry that runs a ``:`` command."""

    title: str
    help: str
    command: str


@dataclass(frozen=True, slots=True)
class ScreenSpec:
    """One top-level screen.

    ``name``: how the app jumps to it (``goto('tasks')``). ``key``: the key that does. ``title``:
    how bindings, the palette and the help name it. ``help``: the palette's line under the
    title. ``screen``: the class; ``:`` builds it with ``from_args``. ``words``: what ``:`` knows
    it by, the first as help and completion show it. ``usage``: how the help spells its
    command(s) (default: the first word). ``completions``: what ``:`` completes for it (default:
    the first word). ``opens``: its first argument names a workflow or task to open in it
    (``:wf <id>``). ``shortcuts``: more palette entries.
    """

    name: str
    key: str
    title: str
    help: str
    screen: type[DeckScreen]
    words: tuple[str, ...]
    usage: tuple[str, ...] = ()
    completions: tuple[str, ...] = ()
    opens: bool = False
    shortcuts: tuple[Shortcut, ...] = field(default=())

    def usages(self) -> tuple[str, ...]:
        """How the help spells this screen's command(s)."""
        return self.usage or self.words[:1]

    def completion_words(self) -> tuple[str, ...]:
        """What ``:`` completes for this screen."""
        return self.completions or self.words[:1]


#: The task states ``:tasks`` completes, most wanted first (Tab takes the first match).
TASK_FILTERS = ("failed", "running", "ready", "retrying", "blocked", "succeeded", "cancelled")

SCREENS: tuple[ScreenSpec, ...] = (
    ScreenSpec(
        "overview",
        "1",
        "Overview",
        "The fleet at a glance",
        OverviewScreen,
        ("overview", "ov", "o"),
    ),
    ScreenSpec(
        "workflows",
        "2",
        "Workflows",
        "Every workflow",
        WorkflowsScreen,
        ("workflows", "workflow", "wf"),
        usage=("workflows", "wf <id>"),
        completions=("workflows", "wf"),
        opens=True,
    ),
    ScreenSpec(
        "tasks",
        "3",
        "Tasks",
        "Every task",
        TasksScreen,
        ("tasks", "task", "t"),
        usage=("tasks [status] [cap=x] [wf=id] [agent=id]",),
        completions=("tasks", *(f"tasks {s}" for s in (*TASK_FILTERS, TaskStatus.SKIPPED))),
        shortcuts=(Shortcut("Failed tasks", "Tasks that failed for good", "tasks failed"),),
    ),
    ScreenSpec("agents", "4", "Agents", "The live fleet", AgentsScreen, ("agents", "agent", "a")),
    ScreenSpec(
        "actions",
        "5",
        "Action log",
        "Operator commands and results",
        ActionsScreen,
        ("actions", "history"),
    ),
    ScreenSpec(
        "breakers",
        "6",
        "Breakers",
        "Circuit breakers; trip or reset one",
        BreakersScreen,
        ("breakers", "breaker", "br"),
    ),
    ScreenSpec(
        "capabilities",
        "7",
        "Capabilities",
        "Queues per capability; pause or resume one",
        CapabilitiesScreen,
        ("caps", "capabilities", "capability", "cap"),
    ),
    ScreenSpec(
        "dead",
        "8",
        "Dead letters",
        "Messages the bus gave up on; requeue them",
        DeadLettersScreen,
        ("dead", "dead-letters", "dlq"),
    ),
    ScreenSpec(
        "logs",
        "9",
        "Logs",
        "The events stream",
        LogsScreen,
        ("logs", "log"),
        usage=("logs [task=id] [wf=id] [agent=id] [level=x]",),
    ),
    ScreenSpec(
        "traces",
        "0",
        "Traces",
        "Recent traces and their spans",
        TracesScreen,
        ("traces", "trace", "tr"),
    ),
)

QUIT_WORDS = ("q", "quit", "exit")
"""What ``:`` takes for leaving."""
APP_WORDS = ("help", "theme", "reload", *QUIT_WORDS)
"""The ``:`` words the app keeps for itself (no screen may take one)."""
HOME = SCREENS[0]
"""The screen the app opens on (the first row)."""
BY_NAME = {spec.name: spec for spec in SCREENS}
"""The screens by name (``goto('dead')``)."""
BY_WORD = {word: spec for spec in SCREENS for word in spec.words}
"""The screens by every word ``:`` knows them by."""


def _check(specs: Sequence[ScreenSpec]) -> None:
    for attribute in ("name", "key"):
        values = [getattr(s, attribute) for s in specs]
        if len(set(values)) != len(values):  # pragma: no cover - caught at import
            raise AssertionError(f"two screens share a {attribute}: {values}")
    words = [w for s in specs for w in s.words] + list(APP_WORDS)
    if len(set(words)) != len(words):  # pragma: no cover - caught at import
        raise AssertionError(f"two screens (or a screen and the app) share a word: {words}")


_check(SCREENS)


@dataclass(frozen=True, slots=True)
class Goto:
    """Where a ``:`` command goes: ``screen`` at the top level, then ``target`` (a workflow or
    task id, or None) opened above it."""

    screen: DeckScreen
    target: str | None = None


def find(word: str, args: Sequence[str]) -> Goto | None:
    """The screen ``:word args`` goes to; None when ``word`` names no screen. AgentdeckError
    when the screen cannot read ``args``."""
    spec = BY_WORD.get(word.lower())
    if spec is None:
        return None
    if spec.opens:
        return Goto(spec.screen.from_args(()), args[0] if args else None)
    return Goto(spec.screen.from_args(args))


def bindings() -> list[Binding]:
    """A key per screen, jumping to it (hidden from the footer: ``?`` lists them)."""
    return [Binding(s.key, f"goto('{s.name}')", s.title, show=False) for s in SCREENS]


def completions(themes: Iterable[str]) -> list[str]:
    """What the ``:`` command line completes, in the order Tab tries them."""
    words = [w for s in SCREENS for w in s.completion_words()]
    return [*words, "help", *(f"theme {t}" for t in themes), "reload", "quit"]


def command_usage() -> list[str]:
    """Every ``:`` command as the help and the unknown-command error spell it."""
    return [u for s in SCREENS for u in s.usages()] + ["theme <name>", "reload", "help", "quit"]


def command_help(width: int = 58) -> list[str]:
    """:func:`command_usage` as lines of at most ``width`` characters (a command and its
    ``<argument>`` stay on one line)."""
    text = ", ".join(u.replace(" <", "\u00a0<") for u in command_usage())
    return [line.replace("\u00a0", " ") for line in textwrap.wrap(text, width)]


def keys_label(keys: Sequence[str]) -> str:
    """``1-6`` for three or more consecutive digits, else the keys spaced (``7 8 9 0``)."""
    digits = [int(k) for k in keys] if all(k.isdigit() for k in keys) else []
    if len(keys) > 2 and digits and digits == list(range(digits[0], digits[0] + len(keys))):
        return f"{keys[0]}-{keys[-1]}"
    return " ".join(keys)


def key_help(width: int = 60) -> list[tuple[str, str]]:
    """The screen keys for the help: runs of screens whose titles fit in ``width`` characters
    (``("1-6", "Overview, workflows, ...")``)."""
    runs: list[list[ScreenSpec]] = []
    for spec in SCREENS:
        if runs and len(_titles([*runs[-1], spec])) <= width:
            runs[-1].append(spec)
        else:
            runs.append([spec])
    return [(keys_label([s.key for s in run]), _titles(run)) for run in runs]


def _titles(specs: Sequence[ScreenSpec]) -> str:
    """``Overview, workflows, tasks``: the titles as one phrase."""
    first, *rest = specs
    return ", ".join([first.title, *(s.title[:1].lower() + s.title[1:] for s in rest)])


def palette() -> list[Shortcut]:
    """The palette's screen entries: each screen, then its shortcuts."""
    entries: list[Shortcut] = []
    for spec in SCREENS:
        entries.append(Shortcut(spec.title, spec.help, spec.words[0]))
        entries += spec.shortcuts
    return entries


def unknown(text: str) -> AgentdeckError:
    """The error for a ``:`` command nothing knows."""
    return AgentdeckError(f"unknown command {text!r}; known: {', '.join(command_usage())}")
