"""The product uses Textual's public API only: no module imports a private Textual module
(``textual._*``, ``textual.widgets._*``) or a private name from a public one, so a Textual
release that moves its internals cannot break it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("core", "backends", "agents", "tui", "themes")


def private_textual_imports(source: str) -> list[str]:
    """Every private Textual module or name ``source`` imports, as written."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
            names = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] != "textual":
                continue
            if any(part.startswith("_") for part in parts):
                found.append(module)
            found += [f"{module}.{name}" for name in names if name.startswith("_")]
    return found


def test_no_product_module_imports_a_private_textual_module() -> None:
    """No module of core/, backends/, agents/, tui/ or themes/ imports ``textual._*``,
    ``textual.widgets._*`` or a ``_name`` from a Textual module."""
    files = [p for folder in PRODUCT for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 50  # (the folders were found)
    offenders = {
        str(p.relative_to(ROOT)): found
        for p in files
        if (found := private_textual_imports(p.read_text()))
    }
    assert offenders == {}


def test_the_check_finds_every_form_of_private_import() -> None:
    """Each way of reaching a private module or name is caught; public ones are not."""
    source = """
import textual._two_way_dict
from textual._types import SegmentLines
from textual.widgets._data_table import RowRenderables
from textual import _context
from textual.widget import _private_helper
import textual.widgets
from textual.widgets.data_table import RowKey
from textual.scroll_view import ScrollView
from ._local import x
"""
    assert private_textual_imports(source) == [
        "textual._two_way_dict",
        "textual._types",
        "textual.widgets._data_table",
        "textual._context",
        "textual.widget._private_helper",
    ]
