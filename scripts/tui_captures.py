"""Text captures of every control-centre screen, taken from the real program, for docs/tui.md.

Runs ``agentdeck --demo`` in a private tmux server at 80x24 (own home, own SQLite store, no
config but an empty file), submits a workflow that fails for good beside the demo traffic, walks
through every screen with ``tmux send-keys`` and reads each with ``tmux capture-pane -p``
(trailing blanks dropped, runs of empty lines cut to one); then a second run with
``--read-only`` for its badge and footer.

    .venv/bin/python scripts/tui_captures.py             # print the captures
    .venv/bin/python scripts/tui_captures.py --write     # refresh them in docs/tui.md

With ``--write`` every block between ``<!-- capture: NAME -->`` and ``<!-- /capture -->`` in
docs/tui.md is replaced by the capture NAME (the script stops, writing nothing, if the doc names
a capture it did not take). Ids, ages and counts differ on each run: the demo is live.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENTDECK = ROOT / ".venv" / "bin" / "agentdeck"
DOC = ROOT / "docs" / "tui.md"
SOCKET = f"agentdeck-captures-{os.getpid()}"
"""A tmux server of our own: other sessions on the machine are never touched."""
INCIDENT = """\
name: incident
tasks:
  - {key: fetch, capability: echo, input: {url: "https://example.com/feed"}}
  - {key: parse, capability: chaos, needs: [fetch], input: {fail_first: 1, permanent: true}}
  - {key: store, capability: echo, needs: [parse]}
"""
TOAST = re.compile(r"▌ \w")
"""A line of a notification (they fade after a few seconds)."""
MARKER = re.compile(r"(<!-- capture: ([\w-]+) -->\n)(.*?)(<!-- /capture -->)", re.S)


def tmux(*args: str) -> str:
    """Run a command on our tmux server and return its output."""
    return subprocess.run(
        ["tmux", "-L", SOCKET, "-f", "/dev/null", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout


class Terminal:
    """One tmux session of ``width`` x ``height`` running a command."""

    def __init__(self, name: str) -> None:
        self.name = name

    def screen(self) -> str:
        """What the terminal shows, trailing blanks dropped and runs of empty lines cut to one
        (a table of three rows leaves most of a 24-line screen empty)."""
        shown = tmux("capture-pane", "-p", "-t", self.name)
        text = "\n".join(line.rstrip() for line in shown.split("\n")).strip("\n")
        return re.sub(r"\n{3,}", "\n\n", text)

    def keys(self, *keys: str, text: str = "") -> None:
        """Press tmux keys (``Enter``, ``Escape``...), or type ``text`` literally."""
        if keys:
            tmux("send-keys", "-t", self.name, *keys)
        if text:
            tmux("send-keys", "-t", self.name, "-l", text)
        time.sleep(0.3)

    def open(self, key: str, placeholder: str) -> None:
        """Open the command line with ``key`` and wait until it takes the typing."""
        self.keys(text=key)
        self.wait_for(placeholder)

    def wait_for(self, text: str, timeout: float = 60.0, *, toasts: bool = False) -> str:
        """The screen once ``text`` is on it and (unless ``toasts``) no notification covers it;
        SystemExit with the screen after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown and (toasts or not TOAST.search(shown)):
                time.sleep(0.6)  # let the rest of the screen draw (tables fill after the crumb)
                return self.screen()
            if time.monotonic() > deadline:
                raise SystemExit(f"{text!r} never appeared alone; the screen:\n{shown}")
            time.sleep(0.2)


@contextmanager
def running(home: Path, size: tuple[int, int], *flags: str) -> Iterator[Terminal]:
    """``agentdeck FLAGS`` in a fresh tmux session; quit with ``q`` and waited for afterwards
    (the next run opens the same store)."""
    name = "captures-" + "-".join(f.strip("-") for f in flags)
    env = " ".join(f"{k}={v}" for k, v in environment(home).items() if k.startswith("AGENTDECK"))
    command = f"cd {home} && env {env} {AGENTDECK} {' '.join(flags)}"
    tmux("new-session", "-d", "-s", name, "-x", str(size[0]), "-y", str(size[1]), command)
    tmux("set", "-s", "escape-time", "10")  # Esc is Esc, not the start of alt+key
    tmux("set", "-t", name, "remain-on-exit", "on")  # an early exit leaves its error on screen
    try:
        yield Terminal(name)
    finally:
        tmux("send-keys", "-t", name, "q")
        deadline = time.monotonic() + 30
        while tmux("display", "-p", "-t", name, "#{pane_dead}").strip() != "1":
            if time.monotonic() > deadline:
                raise SystemExit(f"agentdeck in {name} did not quit within 30 s")
            time.sleep(0.2)
        tmux("kill-session", "-t", name)


def environment(home: Path) -> dict[str, str]:
    """This process's environment minus any agentdeck setting, plus our home and empty config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDECK_")}
    return env | {"AGENTDECK_HOME": str(home), "AGENTDECK_CONFIG": str(home / "agentdeck.toml")}


def take(home: Path, size: tuple[int, int]) -> dict[str, str]:
    """Every capture, by name."""
    shots: dict[str, str] = {}
    with running(home, size, "--demo") as term:
        term.wait_for("Overview")
        spec = home / "incident.yaml"
        spec.write_text(INCIDENT)
        incident = subprocess.run(
            [str(AGENTDECK), "submit", str(spec)],
            capture_output=True,
            text=True,
            check=True,
            env=environment(home),
            cwd=home,
            timeout=60,
        ).stdout.strip()
        time.sleep(12)  # some demo traffic: throughput, agents' counts, a tripped breaker
        term.keys("1")
        shots["overview"] = term.wait_for("Throughput")
        term.keys("2")
        shots["workflows"] = term.wait_for(f"{incident}  incident")
        term.open("/", "filter rows")
        term.keys(text="incident")
        term.keys("Enter")
        shots["workflows-filter"] = term.wait_for("Workflows /incident")
        term.keys("Enter")
        shots["workflow"] = term.wait_for("failed 1")
        term.keys("n")
        term.keys(text="?")
        shots["help"] = term.wait_for(": keys")
        term.keys("Escape")
        term.keys("Enter")
        shots["task"] = term.wait_for("History")
        term.keys("Escape")
        term.keys("r")
        shots["confirm"] = term.wait_for(f"Retry task {incident}/parse?")
        term.keys("y")
        shots["retried"] = term.wait_for(f"retry {incident}/parse", toasts=True)
        term.keys("2")
        term.wait_for("fan-out-100")
        term.open("/", "filter rows")
        term.keys(text="fan-out-100")
        term.keys("Enter")
        term.keys("Enter")
        shots["workflow-large"] = term.wait_for("102 tasks")
        term.keys("3")
        shots["tasks"] = term.wait_for("Tasks")
        term.open(":", "command (Tab completes)")
        term.keys(text="tasks fa")
        shots["command-line"] = term.wait_for("tasks failed")
        term.keys("Escape")
        term.keys("4")
        shots["agents"] = term.wait_for("echo@")
        term.keys("p")
        shots["paused"] = term.wait_for("PAUSED")
        term.keys("p")
        term.keys("d")
        shots["confirm-drain"] = term.wait_for("Drain agent")
        term.keys("n")
        term.keys("5")
        shots["actions"] = term.wait_for("Action log")
        term.keys("6")
        shots["breakers"] = term.wait_for("Breakers")
        term.keys("7")
        shots["capabilities"] = term.wait_for("Capabilities")
        term.keys("8")
        shots["dead-letters"] = term.wait_for("Dead letters")
        term.keys("9")
        shots["logs"] = term.wait_for("Logs")
        term.keys("0")
        term.wait_for("Traces")
        shots["traces"] = term.wait_for("workflow")
        term.keys("Enter")
        shots["trace"] = term.wait_for("Trace ")
    with running(home, size, "--read-only") as term:
        term.wait_for("Overview")
        term.open(":", "command (Tab completes)")
        term.keys(text=f"wf {incident}")
        term.keys("Enter")
        shots["read-only"] = term.wait_for("READ-ONLY")
    return shots


def write(doc: Path, shots: dict[str, str]) -> None:
    """Replace every marked block in ``doc`` by its capture."""
    text = doc.read_text()
    wanted = [m.group(2) for m in MARKER.finditer(text)]
    missing = sorted(set(wanted) - set(shots))
    if missing:
        raise SystemExit(f"{doc} names captures this script does not take: {', '.join(missing)}")
    text = MARKER.sub(lambda m: f"{m[1]}```text\n{shots[m[2]]}\n```\n{m[4]}", text)
    doc.write_text(text)
    unused = sorted(set(shots) - set(wanted))
    print(f"{doc}: {len(wanted)} captures refreshed; not used: {', '.join(unused) or 'none'}")


def main() -> None:
    """Take the captures; print them or write them into the doc."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"refresh the captures in {DOC}")
    parser.add_argument("--size", default="80x24", help="terminal size (default 80x24)")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="agentdeck-captures-") as tmp:
        home = Path(tmp)
        (home / "agentdeck.toml").write_text("# empty: defaults only\n")
        try:
            shots = take(home, (width, height))
        finally:
            subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True, check=False)
    if args.write:
        write(DOC, shots)
    else:
        for name, shot in shots.items():
            print(f"--- {name}\n{shot}\n")


if __name__ == "__main__":
    sys.exit(main())
