"""The wheel installs one name, `agentdeck`, and nothing else."""

from __future__ import annotations

import configparser
import zipfile
from pathlib import Path

from tests.conftest import ROOT

FOLDERS = ("core", "backends", "agents", "tui", "themes")


def test_the_wheel_installs_only_agentdeck_and_its_dist_info(wheel: Path) -> None:
    """Every file of the wheel lies under agentdeck/ or its own dist-info folder."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and next(iter(dist_info)).startswith("agentdeck-")
    assert tops - dist_info == {"agentdeck"}


def test_the_wheel_holds_every_module_and_data_file_of_the_folders(wheel: Path) -> None:
    """Each .py, theme and py.typed file below the product folders is in the wheel, moved under
    agentdeck/ (a new sub-package needs no packaging edit)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"agentdeck/{path.relative_to(ROOT).as_posix()}"
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".tcss", ".toml", ".typed"}
        and "__pycache__" not in path.parts
    }
    assert expected - names == set()


def test_the_console_script_runs_the_agentdeck_cli(wheel: Path) -> None:
    """`agentdeck` on the PATH is agentdeck.tui.cli:main."""
    with zipfile.ZipFile(wheel) as zf:
        (entry,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        parser.read_string(zf.read(entry).decode())
    assert dict(parser["console_scripts"]) == {"agentdeck": "agentdeck.tui.cli:main"}
