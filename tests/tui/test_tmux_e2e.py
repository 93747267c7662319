"""The real ``agentdeck`` in a real terminal (tmux): an incident handled from the keyboard, then
the terminal dropped (SIGHUP) and no process left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tui, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
AGENTDECK = Path(sys.executable).parent / "agentdeck"

INCIDENT = """
name: incident
tasks:
  - {key: fetch, capability: echo}
  - {key: parse, capability: chaos, needs: [fetch], input: {fail_first: 1, permanent: true}}
  - {key: store, capability: echo, needs: [parse]}
"""
CONFIG = """
[[agents]]
kind = "echo"
[[agents]]
kind = "chaos"
"""


def tmux(*args: str) -> str:
    """Run a tmux command and return its output."""
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


class Terminal:
    """One tmux session running a command at 80x24."""

    def __init__(self, name: str) -> None:
        self.name = name

    def screen(self) -> str:
        """What the terminal shows now."""
        return tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str, literal: bool = False) -> None:
        """Type keys (tmux key names, or text with ``literal``)."""
        tmux("send-keys", "-t", self.name, *(["-l"] if literal else []), *keys)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        """Until ``text`` is on the screen (fails with the screen after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} never appeared; the screen:\n{shown}")
            time.sleep(0.2)


def pids_using(marker: str) -> list[str]:
    """Processes whose command line or environment mentions ``marker`` (our private home)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in blob and b"agentdeck" in (proc / "cmdline").read_bytes():
            found.append(proc.name)
    return found


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[tuple[Terminal, Path]]:
    """``agentdeck`` (echo and chaos agents, no demo) running in a fresh tmux session."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("tmux is not installed (apt-get install tmux)")
        pytest.skip("tmux is not installed")
    (tmp_path / "agentdeck.toml").write_text(CONFIG)
    name = f"agentdeck-e2e-{uuid.uuid4().hex[:8]}"
    env = f"AGENTDECK_HOME={tmp_path} AGENTDECK_CONFIG={tmp_path / 'agentdeck.toml'}"
    tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "24", f"cd {ROOT} && {env} {AGENTDECK}")
    try:
        yield Terminal(name), tmp_path
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


def test_drill_to_the_failing_task_retry_it_then_drop_the_terminal(
    terminal: tuple[Terminal, Path],
) -> None:
    """Failed workflow → failing task → retry → it succeeds; SIGHUP leaves no process behind."""
    term, home = terminal
    term.wait_for("Overview")
    spec = home / "incident.yaml"
    spec.write_text(INCIDENT)
    env = {
        **os.environ,
        "AGENTDECK_HOME": str(home),
        "AGENTDECK_CONFIG": str(home / "agentdeck.toml"),
    }
    workflow_id = subprocess.run(
        [str(AGENTDECK), "submit", str(spec)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    ).stdout.strip()
    term.keys("2")
    term.wait_for(f"{workflow_id}  incident  failed")
    term.keys("Enter")
    term.wait_for("failed 1")
    term.keys("n", "r")
    term.wait_for(f"Retry task {workflow_id}/parse?")
    term.keys("y")
    term.wait_for("3 tasks  succeeded 3")  # parse ran again and store after it
    term.keys("5")
    shown = term.wait_for("agentdeck \u203a Action log")
    assert re.search(rf"retry\s+{workflow_id}/parse\s+done", shown), shown
    assert pids_using(str(home)), "agentdeck should be running before the terminal drops"
    tmux("kill-session", "-t", term.name)  # the terminal goes away: SIGHUP
    deadline = time.monotonic() + 40  # a clean exit, or the 20 s watchdog in run_app
    while pids_using(str(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids_using(str(home)) == []
