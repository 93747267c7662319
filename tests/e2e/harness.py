"""Process harness for the e2e tests: start ``agentdeck`` processes, run the CLI, wait.

Real processes mean real time: everything here is bounded by a timeout, and every process a
test starts is killed (by its own pid) when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENTDECK = [sys.executable, "-m", "agentdeck.tui.cli"]


class Procs:
    """``agentdeck`` processes sharing one environment; logs go to ``home``."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        self.home = home
        self.env = {**os.environ, "AGENTDECK_HOME": str(home), "PYTHONUNBUFFERED": "1", **env}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``agentdeck *args`` in the background as ``name`` (its log: ``name.log``)."""
        with (self.home / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [*AGENTDECK, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        """What process ``name`` has written so far."""
        return (self.home / f"{name}.log").read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``agentdeck *args`` to completion."""
        return subprocess.run(
            [*AGENTDECK, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop_all(self) -> None:
        """SIGTERM every process still running, then SIGKILL what is left after a moment."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll an async predicate until it is true; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)
