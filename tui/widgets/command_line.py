"""The ``:`` command line and the ``/`` filter: one input docked at the bottom, hidden when idle."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Input


class CommandLine(Input):
    """An input that opens in ``command`` or ``filter`` mode and posts what was typed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", show=False),
        Binding("tab", "complete", "Complete", show=False),
    ]

    class Run(Message):
        """The user pressed Enter: ``mode`` is ``command`` or ``filter``."""

        def __init__(self, mode: str, text: str) -> None:
            super().__init__()
            self.mode, self.text = mode, text

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
        self.add_class("-open")
        self.can_focus = True
        self.focus()

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

    def action_complete(self) -> None:
        """Accept the suggestion shown (the same as → at the end of the line)."""
        if self._suggestion:
            self.value = self._suggestion
            self.cursor_position = len(self.value)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: hand the text to the app and hide the line."""
        event.stop()
        text = event.value
        # Enter takes the completion shown (":tasks fa" runs "tasks failed"), like Tab then Enter.
        if self.mode == "command" and self._suggestion.lower().startswith(text.lower()):
            text = self._suggestion or text
        self._hide()
        self.post_message(self.Run(self.mode, text.strip()))

    def on_input_changed(self, event: Input.Changed) -> None:
        """In filter mode, filter as the user types."""
        event.stop()
        if self.mode == "filter":
            self.post_message(self.Typed(event.value))
