"""A small ``systemctl`` for tests on a machine without systemd: it runs the units it is given.

Enough of systemctl for Ansible's ``systemd_service`` module: ``daemon-reload``, ``show``,
``is-enabled``, ``is-active``, ``enable``, ``disable``, ``start``, ``stop`` and ``restart``.
A unit is read from ``$FAKE_SYSTEMD_UNITS`` and run as systemd would run it: its ``ExecStart``
(split as a shell would), ``Environment=`` and ``EnvironmentFile=`` (double-quoted values,
``\\"`` and ``\\\\`` unescaped), ``WorkingDirectory``; stopped with its ``KillSignal`` and killed
after ``TimeoutStopSec``. ``User=`` is ignored (tests run as one user). State (pids, enabled
units, each unit's output, and a journal of starts and stops) lives in ``$FAKE_SYSTEMD_STATE``.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

UNITS = Path(os.environ.get("FAKE_SYSTEMD_UNITS", "/nonexistent"))
STATE = Path(os.environ.get("FAKE_SYSTEMD_STATE", "/tmp/fake-systemd"))


def service(unit: str) -> dict[str, list[str]]:
    """The [Service] keys of ``unit`` (each with every value it was given)."""
    keys: dict[str, list[str]] = {}
    section = ""
    for raw in (UNITS / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; a double-quoted value loses its quotes and its escapes."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key] = value
    return out


def pid_of(unit: str) -> int | None:
    """The pid of the unit's running process, if it runs."""
    try:
        pid = int((STATE / f"{unit}.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    return None if fields[0] == "Z" else pid


def journal(event: str, unit: str, pid: int | None) -> None:
    """Note a start or a stop (the tests read the order)."""
    with (STATE / "journal").open("a") as f:
        f.write(f"{time.time():.3f} {event} {unit} {pid}\n")


def start(unit: str) -> int:
    """Run the unit's ExecStart in the background, as its own session."""
    if pid_of(unit) is not None:
        return 0
    keys = service(unit)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for item in keys.get("Environment", []):
        for pair in shlex.split(item):
            key, value = pair.split("=", 1)
            env[key] = value
    for item in keys.get("EnvironmentFile", []):
        path = Path(item.lstrip("-"))
        if path.exists():
            env.update(env_file(path))
        elif not item.startswith("-"):
            print(f"{unit}: environment file {path} is missing", file=sys.stderr)
            return 1
    cwd = keys.get("WorkingDirectory", [None])[-1]
    argv = shlex.split(keys["ExecStart"][-1])
    with (STATE / f"{unit}.log").open("ab") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    (STATE / f"{unit}.pid").write_text(str(proc.pid))
    journal("start", unit, proc.pid)
    return 0


def stop(unit: str) -> int:
    """Send the unit's KillSignal; SIGKILL it after TimeoutStopSec."""
    pid = pid_of(unit)
    if pid is None:
        return 0
    keys = service(unit)
    sig = getattr(signal, keys.get("KillSignal", ["SIGTERM"])[-1])
    timeout = float(keys.get("TimeoutStopSec", ["90"])[-1])
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_of(unit) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_of(unit) is not None:
        os.killpg(pid, signal.SIGKILL)
    journal("stop", unit, pid)
    return 0


def main(argv: list[str]) -> int:
    """systemctl COMMAND [UNIT] (options such as -l are ignored)."""
    STATE.mkdir(parents=True, exist_ok=True)
    args = [a for a in argv if not a.startswith("-")]
    if not args:
        return 0
    command, units = args[0], args[1:]
    if command in ("daemon-reload", "daemon-reexec"):
        return 0
    unit = units[0] if units else ""
    known = (UNITS / unit).is_file()
    enabled = (STATE / f"{unit}.enabled").exists()
    if command == "show":
        active = "active" if known and pid_of(unit) is not None else "inactive"
        print(f"Id={unit}")
        print(f"LoadState={'loaded' if known else 'not-found'}")
        print(f"ActiveState={active}")
        print(f"UnitFileState={'enabled' if enabled else 'disabled'}")
        return 0
    if not known:
        print(f"Unit {unit} could not be found.", file=sys.stderr)
        return 4 if command == "is-active" else 1
    if command == "is-enabled":
        print("enabled" if enabled else "disabled")
        return 0 if enabled else 1
    if command == "is-active":
        running = pid_of(unit) is not None
        print("active" if running else "inactive")
        return 0 if running else 3
    if command == "enable":
        (STATE / f"{unit}.enabled").touch()
        return 0
    if command == "disable":
        (STATE / f"{unit}.enabled").unlink(missing_ok=True)
        return 0
    if command == "start":
        return start(unit)
    if command == "stop":
        return stop(unit)
    if command == "restart":
        stop(unit)
        return start(unit)
    print(f"fake systemctl: {command} is not supported", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
