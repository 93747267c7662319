"""The ``:`` command line and the ``/`` filter: one input docked at the bottom, hidden when idle.

Typed ahead, it loses nothing: it takes the focus at once when it opens (the app forwards the
next key only then, ``agentdeck.tui.keys``), completes from what is typed when Enter comes (not
from a suggestion still being worked out), and keeps the keys typed after Enter waiting until
the app has run the command.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Input

from agentdeck.tui.keys import Hold, KeyHolder


class CommandLine(Input):
    """An input that opens in ``command`` or ``filter`` mode and posts what was typed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", show=False),
        Binding("tab", "complete", "Complete", show=False),
    ]

    class Run(Message):
        """The user pressed Enter: ``mode`` is ``command`` or ``filter`` (``close``: Esc);
        ``hold`` keeps the keys typed after it waiting until the app has run it."""

        def __init__(self, mode: str, text: str, hold: Hold | None = None) -> None:
            super().__init__()
            self.mode, self.text, self.hold = mode, text, hold

    class Typed(Message):
        """The filter text changed (filters apply as you type)."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, commands: Sequence[str] = ()) -> None:
        super().__init__(id="command-line", compact=True)
        self.commands = list(commands)
        """What ``:`` completes, in the order Tab tries them (the screen registry's)."""
        self.mode = "command"
        self._extra: list[str] = []
        # Hidden, it must not take the keys: focusable only while open.
        self.can_focus = False

    def open(self, mode: str, text: str = "") -> None:
        """Show the line in ``mode`` with ``text`` typed, and focus it."""
        self.mode = mode
        self.suggester = (
            SuggestFromList([*self.commands, *self._extra], case_sensitive=False)
            if mode == "command"
            else None
        )
        self.placeholder = ": command (Tab completes)" if mode == "command" else "/ filter rows"
        self.value = text
        self.cursor_position = len(text)
        self.add_class("-open")
        self.can_focus = True
        # At once, not after a refresh: the next key typed is the first one of the command.
        self.screen.set_focus(self)

    def add_completions(self, words: Iterable[str]) -> None:
        """Extra completions (``wf <id>`` for the workflows on screen)."""
        self._extra = list(dict.fromkeys(words))[:500]

    def action_close(self) -> None:
        """Hide the line; a filter typed so far is kept."""
        self._hide()
        self.post_message(self.Run("close", ""))

    def _hide(self) -> None:
        self.remove_class("-open")
        self.can_focus = False
        self.screen.focus_next()

    def completion(self, text: str) -> str | None:
        """What ``text`` completes to in command mode (the first command, then the first extra
        word, that starts with it, whatever the case; the suggestion shown is the same), or
        None."""
        if self.mode != "command" or not text:
            return None
        folded = text.lower()
        return next(
            (w for w in [*self.commands, *self._extra] if w.lower().startswith(folded)), None
        )

    def action_complete(self) -> None:
        """Accept the completion shown (the same as → at the end of the line)."""
        if (done := self.completion(self.value)) is not None:
            self.value = done
            self.cursor_position = len(self.value)

    async def action_submit(self) -> None:
        """Enter: hand the text to the app and hide the line. It takes the completion
        (":tasks fa" runs "tasks failed"), like Tab then Enter."""
        text = self.completion(self.value) or self.value
        app = self.app
        hold = app.hold_keys(f"run {self.mode}") if isinstance(app, KeyHolder) else None
        self._hide()
        self.post_message(self.Run(self.mode, text.strip(), hold))

    def on_input_changed(self, event: Input.Changed) -> None:
        """In filter mode, filter as the user types."""
        event.stop()
        if self.mode == "filter":
            self.post_message(self.Typed(event.value))
