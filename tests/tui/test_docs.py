"""docs/tui.md lists every key of the control centre exactly as the program binds it.

The tables under "Every key, screen by screen" are marked ``<!-- keys: ClassName -->``; each
must hold every key the class binds (its own ``BINDINGS``) with the binding's name, and nothing
else, and every class with bindings must have one. A key added, renamed or removed in the code
fails here until the doc says so.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest
from textual.binding import Binding

from agentdeck.tui import screens, widgets
from agentdeck.tui.app import AgentdeckApp

pytestmark = pytest.mark.tui
DOC = Path(__file__).resolve().parents[2] / "docs" / "tui.md"
#: How a Textual key name is written in the doc (as the footer and `?` write it).
LABELS = {
    "colon": ":",
    "slash": "/",
    "question_mark": "?",
    "escape": "Esc",
    "tab": "Tab",
    "enter": "Enter",
}
TABLE = re.compile(r"<!-- keys: (\w+) -->\n((?:\|.*\n)+)")


def bound_classes() -> dict[str, type]:
    """The app, and every screen and widget class that declares key bindings of its own."""
    found: dict[str, type] = {"AgentdeckApp": AgentdeckApp}
    for package in (screens, widgets):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and "BINDINGS" in cls.__dict__:
                    found[name] = cls
    return found


def bindings(cls: type) -> set[tuple[str, str]]:
    """(key as the doc writes it, binding name) for each key ``cls`` binds itself."""
    pairs = set()
    for binding in cls.__dict__["BINDINGS"]:
        assert isinstance(binding, Binding), f"{cls.__name__} binds {binding!r}: use Binding"
        for key in binding.key.split(","):
            pairs.add((LABELS.get(key, key), binding.description))
    return pairs


def documented() -> dict[str, set[tuple[str, str]]]:
    """(key, name) for each row of each marked table in the doc, by class name."""
    tables: dict[str, set[tuple[str, str]]] = {}
    for match in TABLE.finditer(DOC.read_text()):
        rows = set()
        for line in match.group(2).splitlines()[2:]:  # after the header and the |---| line
            keys, name = (cell.strip() for cell in line.strip("|").split("|")[:2])
            rows |= {(key, name) for key in re.findall(r"`([^`]+)`", keys)}
        assert match.group(1) not in tables, f"two key tables for {match.group(1)}"
        tables[match.group(1)] = rows
    return tables


def test_the_doc_finds_the_bindings_it_checks() -> None:
    """The scan sees the screens and widgets we know have keys (so the test below can fail)."""
    assert {"AgentdeckApp", "WorkflowScreen", "LiveTable", "CommandLine", "ConfirmScreen"} <= set(
        bound_classes()
    )
    assert ("r", "Retry failed") in bindings(bound_classes()["WorkflowsScreen"])


@pytest.mark.parametrize("name", sorted(bound_classes()))
def test_every_key_of_every_screen_is_in_the_doc_and_nothing_else(name: str) -> None:
    """The doc's table for ``name`` is exactly its bindings: key and name."""
    tables = documented()
    assert name in tables, f"docs/tui.md has no '<!-- keys: {name} -->' table"
    expected = bindings(bound_classes()[name])
    assert sorted(expected - tables[name]) == [], f"keys of {name} missing from docs/tui.md"
    assert sorted(tables[name] - expected) == [], f"docs/tui.md lists keys {name} does not bind"


def test_the_doc_has_no_key_table_for_a_class_without_keys() -> None:
    """A table naming a class that binds nothing (renamed, removed) is stale."""
    assert sorted(set(documented()) - set(bound_classes())) == []


def captures_module() -> ModuleType:
    """scripts/tui_captures.py, imported from its path (scripts/ is not a package)."""
    path = DOC.parents[1] / "scripts" / "tui_captures.py"
    spec = importlib.util.spec_from_file_location("tui_captures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_capture_in_the_doc_is_one_the_capture_script_takes() -> None:
    """The doc's ``<!-- capture: NAME -->`` blocks all name captures the script takes, so
    ``scripts/tui_captures.py --write`` can refresh every one of them."""
    captures = captures_module()
    script = Path(captures.__file__).read_text()
    taken = set(re.findall(r'shots\["([\w-]+)"\]', script))
    wanted = [m.group(2) for m in captures.MARKER.finditer(DOC.read_text())]
    assert len(wanted) >= 20, "docs/tui.md lost its capture markers"
    assert sorted(set(wanted) - taken) == []


def test_the_capture_script_replaces_marked_blocks_and_refuses_unknown_names(
    tmp_path: Path,
) -> None:
    """--write puts each capture between its markers, leaves the prose, and writes nothing when
    the doc names a capture it does not have."""
    captures = captures_module()
    doc = tmp_path / "tui.md"
    doc.write_text("prose\n<!-- capture: a -->\n```text\nold\n```\n<!-- /capture -->\nmore\n")
    captures.write(doc, {"a": " agentdeck: A\nrow", "b": "unused"})
    assert doc.read_text() == (
        "prose\n<!-- capture: a -->\n```text\n agentdeck: A\nrow\n```\n<!-- /capture -->\nmore\n"
    )
    before = doc.read_text()
    with pytest.raises(SystemExit, match="does not take: a"):
        captures.write(doc, {"b": "x"})
    assert doc.read_text() == before
