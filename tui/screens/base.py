"""What every control-centre screen shares: the frame, the messages it sends the app, what it
may read of the app, and the read-only rule.

Screens stand on public ground: they read the app through :class:`Deck` (the data sources,
the theme's colours, the event feed) and ask it for everything else by message. The app
handles :class:`DeckScreen.ActionRequested` (confirm, then queue an operator action),
:class:`DeckScreen.OpenRequested` (open a screen above this one: the one way screens
navigate), :class:`DeckScreen.BackRequested`, :class:`DeckScreen.ReloadRequested` and
:class:`DeckScreen.Changed` (redraw the status bar).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar, Protocol, Self, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from agentdeck.core.actions import ACTIONS, Action
from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.tui.feed import EventFeed
from agentdeck.tui.keys import Hold, KeyHolder
from agentdeck.tui.sources import Health, Sources
from agentdeck.tui.widgets.command_line import CommandLine
from agentdeck.tui.widgets.live_table import LiveTable
from agentdeck.tui.widgets.status_bar import StatusBar

__all__ = ["MUTATING", "Deck", "DeckScreen", "Sources", "screen_action"]


def screen_action(action: Action) -> str:
    """The name of the screen action (``action_<name>``, bound to a key) that asks for
    ``action``: ``pause-capability`` is ``pause_capability``."""
    return action.value.replace("-", "_")


#: Screen actions that change something; ``--read-only`` disables (and hides) all of them:
#: one per mutating operator action, plus pause-or-resume and the tags of bulk actions.
MUTATING = frozenset(
    {screen_action(a) for a, spec in ACTIONS.items() if spec.mutating}
    | {"pause_resume", "tag", "clear_tags"}
)


class Deck(KeyHolder, Protocol):
    """What a screen may read of the app it runs in (read-only: it asks for changes by message),
    and the key gate it holds while a handover it asked for is under way."""

    @property
    def sources(self) -> Sources | None:
        """The data sources (None until connected)."""

    @property
    def health(self) -> Health | None:
        """Whether the Store and the Registry answer, and how old their last data is."""

    @property
    def read_only(self) -> bool:
        """``--read-only``: no action changes anything."""

    @property
    def leader(self) -> str | None:
        """Attached: the node holding the scheduler lease at the last reload."""

    @property
    def feed(self) -> EventFeed:
        """The recent events as log lines, and the task rates."""

    @property
    def completions(self) -> Sequence[str]:
        """What the ``:`` command line completes."""

    def status_style(self, status: str) -> str:
        """The colour of a state in the current theme (empty if none)."""


class DeckScreen(Screen[None]):
    """A live screen: a status bar, a body, the command line and a footer of bindings.

    Subclasses set ``crumb``, compose ``body()`` and implement :meth:`reload`, which the app calls
    a few times a second while the screen is visible and the view is not paused.
    """

    class Handover(Message):
        """A request that moves the keyboard (a dialog, another screen, other rows): ``hold``
        keeps the typed-ahead keys waiting until the app has carried it out
        (``agentdeck.tui.keys``)."""

        def __init__(self, hold: Hold | None = None) -> None:
            super().__init__()
            self.hold = hold

    class ActionRequested(Handover):
        """Ask the operator to confirm ``action`` on ``targets`` (``what`` names one of them
        in the question: "Retry task wf/a?"), then queue it."""

        def __init__(
            self,
            action: Action,
            targets: Sequence[str],
            what: str,
            value: str | None = None,
            hold: Hold | None = None,
        ) -> None:
            super().__init__(hold)
            self.action, self.targets, self.what = action, list(targets), what
            self.value = value

    class OpenRequested(Handover):
        """Open ``screen`` above the current one (Enter on a row, ``l`` for logs, ...)."""

        def __init__(self, screen: DeckScreen, hold: Hold | None = None) -> None:
            super().__init__(hold)
            self.screen = screen

    class BackRequested(Handover):
        """Close this screen if it was opened above another (Esc)."""

    class ReloadRequested(Handover):
        """Read the visible screen again now (its filters changed, or it needs other rows)."""

    class Changed(Message):
        """What the status bar shows of this screen changed (tags, follow mode)."""

    crumb: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", show=False),
    ]

    @classmethod
    def from_args(cls, args: Sequence[str]) -> Self:
        """The screen ``:<name> args`` opens (arguments are ignored unless a screen reads
        them; one it cannot read raises AgentdeckError saying what it takes)."""
        return cls()

    @property
    def deck(self) -> Deck:
        """The app, as much of it as a screen reads."""
        return cast(Deck, self.app)

    @property
    def sources(self) -> Sources:
        """The app's data sources (set once connected)."""
        assert self.deck.sources is not None
        return self.deck.sources

    def crumb_text(self) -> str:
        """This screen's breadcrumb."""
        return self.crumb

    def compose(self) -> ComposeResult:
        """The frame around the body."""
        yield StatusBar()
        yield from self.body()
        with Vertical(id="bottom"):
            yield CommandLine(self.deck.completions)
            yield Footer(compact=True, show_command_palette=False)

    def body(self) -> ComposeResult:
        """The screen's own widgets."""
        yield from ()

    def table(self) -> LiveTable | None:
        """The screen's main table, which ``/`` filters (None when it has none)."""
        tables = self.query(LiveTable)
        return tables.first() if tables else None

    async def reload(self) -> None:
        """Read the current state and show it."""

    def request(self, action: Action, targets: Iterable[str], what: str) -> None:
        """Ask the app to confirm and queue ``action`` on ``targets`` (an action that takes a
        value, such as ``budget``, asks for it first; the keys typed after wait for the
        confirmation)."""
        hold = self.deck.hold_keys(f"confirm {action}")
        self.post_message(self.ActionRequested(action, list(targets), what, hold=hold))

    def open(self, screen: DeckScreen) -> None:
        """Ask the app to open ``screen`` above this one (the keys typed after wait for it)."""
        self.post_message(self.OpenRequested(screen, self.deck.hold_keys("open")))

    def changed(self) -> None:
        """Ask the app to redraw the status bar."""
        self.post_message(self.Changed())

    def reload_soon(self) -> None:
        """Ask the app to read this screen again now (the keys typed after wait for the rows)."""
        self.post_message(self.ReloadRequested(self.deck.hold_keys("reload")))

    def selected_keys(self) -> list[str]:
        """What an action applies to: the tagged rows, else the row under the cursor."""
        table = self.query_one(LiveTable)
        return table.tagged_keys() or ([table.cursor_key] if table.cursor_key else [])

    def cursor_keys(self) -> list[str]:
        """The row under the cursor, as a list (empty when the table is)."""
        key = self.query_one(LiveTable).cursor_key
        return [key] if key else []

    def action_tag(self) -> None:
        """Tag or untag the row under the cursor for a bulk action."""
        self.query_one(LiveTable).toggle_tag()
        self.changed()

    def action_clear_tags(self) -> None:
        """Untag every row."""
        self.query_one(LiveTable).clear_tags()
        self.changed()

    def on_live_table_reload(self, message: LiveTable.Reload) -> None:
        """A table that holds only a window needs other rows: read again now."""
        message.stop()
        self.reload_soon()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """In read-only mode actions that change something do not exist."""
        return not (action in MUTATING and self.deck.read_only)

    def on_screen_resume(self) -> None:
        """Shown again (opened, or back from a screen above): show it fresh."""
        self.reload_soon()

    def action_back(self) -> None:
        """Esc: back up one level (the top-level screen stays)."""
        self.post_message(self.BackRequested(self.deck.hold_keys("back")))

    def status_text(self, status: TaskStatus | WorkflowStatus | str) -> Text:
        """A status word in its theme colour."""
        return Text(str(status), style=self.deck.status_style(str(status)))

    def add_completions(self, words: Iterable[str]) -> None:
        """Offer ``words`` in this screen's command-line completion."""
        self.query_one(CommandLine).add_completions(words)
