"""Running a command as its own process group, and ending the whole group with it.

The ``shell`` and ``claude`` kinds start each command in a new session (``start_new_session``)
so that when the attempt ends (done, timed out or cancelled) every process it started can be
ended with it: SIGTERM, then SIGKILL after a grace. Stray background children cannot outlive
their task.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

_POLL = 0.02
"""How often (seconds) to look whether a signalled process group is gone."""
_KILL_WAIT = 1.0
"""How long (seconds) to wait for a SIGKILLed group to be gone."""
_CHUNK = 65536


async def end_group(pgid: int, grace: float) -> None:
    """End process group ``pgid``: SIGTERM now, SIGKILL to whatever is left after ``grace``.

    Returns once no process of the group runs (or, should one outlive SIGKILL, after
    ``_KILL_WAIT`` more seconds), and at once when the group is already gone. If this wait is
    itself cancelled, the group is killed outright before the cancellation goes on.
    """
    if not _signal(pgid, signal.SIGTERM):
        return
    try:
        if await _ended_within(pgid, grace):
            return
    finally:
        # Also on cancel. SIGKILL cannot be refused, but dying takes the kernel a moment.
        if _signal(pgid, signal.SIGKILL):
            await _ended_within(pgid, _KILL_WAIT)


async def _ended_within(pgid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for the group to end; True if it did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while _group_alive(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


def _signal(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when no process is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only when the pgid was recycled by another user's process: not ours to touch.
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """True while a process of the group still runs.

    Zombies count as gone: once killed, orphans wait for init to reap them, and an init that
    never reaps (a bare container) would otherwise make every group look alive for its whole
    grace. On systems without ``/proc`` any member, zombie or not, counts as alive.
    """
    if not _signal(pgid, 0):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the ")" closing the command name: state, ppid, pgrp, ...
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # it ended while we looked
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


async def exit_code(proc: asyncio.subprocess.Process) -> int:
    """The leader's exit status, as soon as it exits.

    Not ``proc.wait()``: before Python 3.12 that also waits for every pipe to close, which a
    stray background child can hold open for as long as it lives.
    """
    pause = 0.001
    while proc.returncode is None:
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)
    return proc.returncode


async def read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    """Read ``stream`` to its end, keeping the first ``limit`` bytes; also return the total."""
    kept = bytearray()
    total = 0
    while chunk := await stream.read(_CHUNK):
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept), total


def text_of(data: bytes, total: int) -> str:
    """``data`` as text, saying how many of ``total`` bytes were not kept."""
    text = data.decode("utf-8", errors="replace")
    if total > len(data):
        text += f"\n[truncated: {total - len(data)} more bytes not kept]"
    return text


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15 (``signal 99`` for a number with no name)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
