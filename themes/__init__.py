"""Control-centre themes: the built-in palettes in this folder, and user themes from a file.

A theme is a TOML file of Textual theme fields (``primary``, ``background``, ...) with a
``[variables]`` table of extra CSS variables (``status-failed`` and friends colour task states).
This module reads them as plain data so nothing here loads Textual; ``tui/app.py`` turns them
into Textual themes. ``app.tcss`` beside them holds the layout every theme shares.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from core.errors import ConfigError

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


def load_theme(name_or_path: str) -> dict[str, Any]:
    """A theme's fields by built-in name (``dark``, ``light``, ``high-contrast``) or file path.

    Raises ConfigError naming the theme and the allowed forms when it is neither, or when the
    file is not a valid theme.
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
    data.setdefault("name", path.stem)
    data["variables"] = {str(k): str(v) for k, v in dict(data.get("variables", {})).items()}
    return data
