"""What every control-centre screen shares: where data comes from, the frame, the read-only rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer

from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.tui.sources import Sources
from agentdeck.tui.widgets.command_line import CommandLine
from agentdeck.tui.widgets.live_table import LiveTable
from agentdeck.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from agentdeck.tui.app import AgentdeckApp

#: Screen actions that change something; ``--read-only`` disables (and hides) all of them.
MUTATING = frozenset(
    {
        "retry",
        "cancel",
        "pause_resume",
        "tag",
        "clear_tags",
        "trip",
        "reset",
        "drain",
        "undrain",
        "pause_capability",
        "resume_capability",
        "requeue",
    }
)


class DeckScreen(Screen[None]):
    """A live screen: a status bar, a body, the command line and a footer of bindings.

    Subclasses set ``crumb``, compose ``body()`` and implement :meth:`reload`, which the app calls
    a few times a second while the screen is visible and the view is not paused.
    """

    crumb: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", show=False),
    ]

    @property
    def deck(self) -> AgentdeckApp:
        """The app, typed."""
        return self.app  # type: ignore[return-value]

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
            yield CommandLine()
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

    def selected_keys(self) -> list[str]:
        """What an action applies to: the tagged rows, else the row under the cursor."""
        table = self.query_one(LiveTable)
        return table.tagged_keys() or ([table.cursor_key] if table.cursor_key else [])

    def action_tag(self) -> None:
        """Tag or untag the row under the cursor for a bulk action."""
        self.query_one(LiveTable).toggle_tag()
        self.deck.update_bar()

    def action_clear_tags(self) -> None:
        """Untag every row."""
        self.query_one(LiveTable).clear_tags()
        self.deck.update_bar()

    def on_live_table_reload(self, message: LiveTable.Reload) -> None:
        """A table that holds only a window needs other rows: read again now."""
        message.stop()
        self.call_later(self.deck.refresh_now)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """In read-only mode actions that change something do not exist."""
        return not (action in MUTATING and self.deck.read_only)

    def on_screen_resume(self) -> None:
        """Shown again (opened, or back from a screen above): show it fresh."""
        self.call_later(self.deck.refresh_now)

    def action_back(self) -> None:
        """Esc: back up one level (the top-level screen stays)."""
        self.deck.go_back()

    def status_text(self, status: TaskStatus | WorkflowStatus | str) -> Text:
        """A status word in its theme colour."""
        return Text(str(status), style=self.deck.status_style(str(status)))

    def add_completions(self, words: Iterable[str]) -> None:
        """Offer ``words`` in this screen's command-line completion."""
        self.query_one(CommandLine).add_completions(words)
