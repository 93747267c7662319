"""Turning agentdeck's theme files into Textual themes: what a colour may be, and the
:class:`textual.theme.Theme` a loaded theme becomes.

Pure functions, kept apart from the app so the command line can check a theme file
(:func:`is_colour`) without building the control centre.
"""

from __future__ import annotations

from rich.errors import StyleSyntaxError
from rich.style import Style
from textual.color import Color, ColorParseError
from textual.theme import Theme

__all__ = ["PREFIX", "is_colour", "textual_theme"]

#: Textual's name of an agentdeck theme is this prefix and the theme's short name.
PREFIX = "agentdeck-"


def is_colour(value: str) -> bool:
    """Whether ``value`` is a colour both Textual's CSS and a Rich style string read (the state
    colours end up in both; ``rgb(1, 2, 3)`` with spaces, say, is CSS but breaks a style)."""
    try:
        Color.parse(value)
        Style.parse(value)
    except (ColorParseError, StyleSyntaxError):
        return False
    return True


def textual_theme(data: dict[str, object]) -> Theme:
    """The Textual theme of a theme loaded by :func:`themes.load_theme` (named
    ``agentdeck-<name>``; its ``variables`` become the theme's CSS variables)."""
    fields = {k: v for k, v in data.items() if k not in ("name", "variables")}
    return Theme(
        name=f"{PREFIX}{data['name']}",
        variables=dict(data.get("variables", {})),  # type: ignore[call-overload]
        **fields,  # type: ignore[arg-type]
    )
