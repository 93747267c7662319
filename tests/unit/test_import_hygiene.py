"""The layering rules: core knows no engine or screen, and the daemon path never loads Textual."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_CORE = {
    "textual",
    "tui",
    "backends",
    "agents",
    "aio_pika",
    "asyncpg",
    "redis",
    "boto3",
}


def _root(name: str) -> str:
    """`agentdeck.core.models` -> `core`; `textual.widgets` -> `textual`."""
    parts = name.split(".")
    return parts[1] if parts[0] == "agentdeck" and len(parts) > 1 else parts[0]


def imported_roots(path: Path) -> set[str]:
    """Top-level module names a Python file imports (inside agentdeck: its sub-package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {_root(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(_root(node.module))
    return roots


def test_core_imports_no_engine_screen_or_outer_package() -> None:
    """No module in core/ imports textual, an engine driver, backends, agents or tui."""
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_roots(p) & FORBIDDEN_IN_CORE)
        for p in (ROOT / "core").rglob("*.py")
        if imported_roots(p) & FORBIDDEN_IN_CORE
    }
    assert offenders == {}


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(out.stdout.split())


def test_import_core_loads_no_textual() -> None:
    """Importing every core module (sub-packages too) in a fresh interpreter leaves textual
    unloaded."""
    mods = " ".join(
        "agentdeck." + ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "core").rglob("*.py")
        if p.stem != "__init__"
    )
    loaded = _modules_after(
        f"import importlib\nfor m in '{mods}'.split(): importlib.import_module(m)"
    )
    assert "textual" not in loaded


def test_daemon_path_loads_no_textual() -> None:
    """Every CLI module, the composition root, the wiring and a composed daemon node never
    import textual."""
    cli = " ".join(
        f"agentdeck.tui.cli.{p.stem}"
        for p in (ROOT / "tui" / "cli").glob("*.py")
        if p.stem not in ("__init__", "__main__")
    )
    code = (
        "import asyncio, importlib, os, tempfile\n"
        "os.environ['AGENTDECK_HOME'] = tempfile.mkdtemp()\n"
        "import agentdeck.tui.cli, agentdeck.tui.demo\n"
        f"for m in '{cli}'.split(): importlib.import_module(m)\n"
        "from agentdeck.tui import compose, wiring\n"
        "from agentdeck.core.settings import Settings\n"
        "settings = Settings.load(metrics_port=0)\n"
        "compose.control_centre(settings)\n"
        "async def build():\n"
        "    async with compose.node(settings, demo=True, live_log=True) as (rt, _):\n"
        "        assert rt.services\n"
        "asyncio.run(build())\n"
    )
    loaded = _modules_after(code)
    assert {"agentdeck.tui.wiring", "agentdeck.tui.compose", "agentdeck.tui.cli.actions"} <= loaded
    assert not {m for m in loaded if m == "textual" or m.startswith("textual.")}


def test_every_import_of_the_product_goes_through_agentdeck() -> None:
    """No file of the repository imports `core`, `tui`, ... by their folder names: installed,
    they exist only as agentdeck.core, agentdeck.tui, ..."""
    folders = {"core", "backends", "agents", "tui", "themes"}
    offenders = {}
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        bare = {
            name
            for node in ast.walk(tree)
            for name in (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if name.split(".")[0] in folders
        }
        if bare:
            offenders[str(path.relative_to(ROOT))] = sorted(bare)
    assert offenders == {}


#: Third-party modules that tie a package to an engine, a screen or a paid service.
GUARDED = {"aio_pika", "aiormq", "asyncpg", "redis", "boto3", "botocore", "textual", "anthropic"}
LAYERS = re.compile(r"<!-- layers:.*?-->\n\|.*\n\|[-| ]+\n((?:\|.*\n)+)")


def documented_layers() -> dict[str, set[str]]:
    """docs/architecture.md's table: package -> what it may import (agentdeck packages by
    their short name, and guarded third-party modules)."""
    match = LAYERS.search((ROOT / "docs" / "architecture.md").read_text())
    assert match, "docs/architecture.md has no layers table"
    layers: dict[str, set[str]] = {}
    for row in match.group(1).splitlines():
        package, ours, theirs = (cell.strip(" `") for cell in row.strip("|").split("|")[:3])
        allowed = {n.strip() for n in f"{ours},{theirs}".split(",")} - {"—", ""}
        layers[package.removeprefix("agentdeck.")] = {n.split(" ")[0] for n in allowed}
    return layers


def test_every_package_imports_only_what_docs_architecture_allows() -> None:
    """The layers table in docs/architecture.md names every package, and no module imports an
    agentdeck package or an engine/screen module its row does not allow."""
    layers = documented_layers()
    assert set(layers) == {"core", "backends", "agents", "themes", "tui"}
    offenders: dict[str, list[str]] = {}
    for package, allowed in layers.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = {
                root
                for root in imported_roots(path)
                if (root in layers and root != package and root not in allowed)
                or (root in GUARDED and root not in allowed)
            }
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
