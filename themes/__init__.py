"""Control-centre themes: the built-in palettes in this folder, and user themes from a file.

A theme is a TOML file of Textual theme fields (``primary``, ``background``, ...) with a
``[variables]`` table of extra CSS variables (``status-failed`` and friends colour task states).
This module reads them as plain data so nothing here loads Textual; ``tui/app.py`` turns them
into Textual themes. ``app.tcss`` beside them holds the layout every theme shares.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentdeck.core.errors import ConfigError

FOLDER = Path(__file__).resolve().parent
BUILTIN = ("dark", "light", "high-contrast")
"""The themes that ship with agentdeck, in the order the theme key cycles through them."""
APP_CSS = FOLDER / "app.tcss"
"""The layout stylesheet shared by every theme."""

#: Fields a theme file may set besides ``name`` and ``[variables]``.
FIELDS = (
    "dark",
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "success",
    "warning",
    "error",
)


#: What a colour may look like, for the error that refuses one.
COLOUR_FORMS = '"#rrggbb", "rgb(r,g,b)" (no spaces) or a colour name such as "red"'


def load_theme(name_or_path: str, is_colour: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """A theme's fields by built-in name (``dark``, ``light``, ``high-contrast``) or file path.

    ``is_colour`` judges each colour value (the TUI passes its colour parser, which this module
    does not load); without it colours are only checked to be strings. Raises ConfigError naming
    the theme and the allowed forms when it is neither, or naming the file, the field and the
    bad value when the file is not a valid theme.
    """
    path = FOLDER / f"{name_or_path}.toml" if name_or_path in BUILTIN else Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"theme {name_or_path!r} is not a built-in theme ({', '.join(BUILTIN)}) "
            "nor a readable theme file (a .toml path)"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"theme file {str(path)!r} cannot be read: {exc}") from None
    unknown = sorted(set(data) - {"name", "variables", *FIELDS})
    if unknown:
        raise ConfigError(
            f"theme file {str(path)!r} has unknown field(s) {', '.join(unknown)}; "
            f"allowed: name, variables, {', '.join(FIELDS)}"
        )
    if "primary" not in data:
        raise ConfigError(f"theme file {str(path)!r} must set at least 'primary'")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ConfigError(f"theme file {str(path)!r}: variables must be a table ([variables])")
    if not isinstance(data.get("dark", True), bool):
        raise ConfigError(
            f"theme file {str(path)!r}: dark = {data['dark']!r} is not allowed; use true or false"
        )
    colours = [(k, v) for k, v in data.items() if k in FIELDS and k != "dark"]
    colours += [(f"variables.{k}", v) for k, v in variables.items()]
    for key, value in colours:
        if not isinstance(value, str) or (is_colour is not None and not is_colour(value)):
            raise ConfigError(
                f"theme file {str(path)!r}: {key} = {value!r} is not a colour; use {COLOUR_FORMS}"
            )
    data.setdefault("name", path.stem)
    data["variables"] = dict(variables)
    return data
