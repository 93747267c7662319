"""Dialogs: the confirmation every action asks for, the value some actions take, and the help
for the current screen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class ConfirmScreen(ModalScreen[bool]):
    """Asks "retry task wf/a?" and answers True (y) or False (n, Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, targets: Sequence[str] = ()) -> None:
        super().__init__()
        self.question, self.targets = question, list(targets)

    def compose(self) -> ComposeResult:
        """The question, the targets (the first few), the keys."""
        with Vertical():
            # (as text: targets are ids and names, which may hold "[")
            yield Static(self.question, id="question", markup=False)
            if len(self.targets) > 1:
                shown = "\n".join(f"  {t}" for t in self.targets[:8])
                more = f"\n  … and {len(self.targets) - 8} more" if len(self.targets) > 8 else ""
                yield Static(shown + more, markup=False)
            yield Static("y: yes    n / Esc: no", id="keys")

    def action_answer(self, yes: bool) -> None:
        """Close with the answer."""
        self.dismiss(yes)


class AskScreen(ModalScreen[str | None]):
    """Asks for the value an action takes ("Set the budget of workflow w1 to:"), answers the
    text typed (Enter) or None (Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, placeholder: str = "") -> None:
        super().__init__()
        self.question, self.placeholder = question, placeholder

    def compose(self) -> ComposeResult:
        """The question, an input line, the keys."""
        with Vertical():
            yield Static(self.question, id="question", markup=False)
            yield Input(placeholder=self.placeholder, id="answer")
            yield Static("Enter: send    Esc: cancel", id="keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter: answer with the text (nothing typed: cancel)."""
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Esc: no answer."""
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The keys of the screen it was opened on (only those that work there), and the ``:``
    commands (lines of text)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close"),
    ]

    def __init__(
        self, title: str, keys: Sequence[tuple[str, str]], commands: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.title_text, self.keys, self.commands = title, list(keys), list(commands)

    def compose(self) -> ComposeResult:
        """A table of key and what it does."""
        text = Text(f"{self.title_text}: keys\n\n", style="bold")
        for key, description in self.keys:
            text.append(f"{key:>10}  ", style="bold")
            text.append(f"{description}\n")
        for n, line in enumerate(self.commands):
            text.append(("\n: commands  " if n == 0 else " " * 11) + line + "\n")
        text.append("Esc closes", style="dim")
        with VerticalScroll():
            yield Static(text)

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
