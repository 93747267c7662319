"""Running a command as its own process group, and ending the whole group with it.

The ``shell`` and ``claude`` kinds run each attempt's command through :func:`group_run`: it
starts the command in a new session (``start_new_session``), with its output piped and its
input from a given text or nothing, so that when the attempt ends (done, timed out or
cancelled) every process it started can be ended with it: SIGTERM, then SIGKILL after a grace.
Stray background children cannot outlive their task. A command that cannot be started is a
non-retryable ``not_runnable`` failure (it would fail the same way next time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from agentdeck.core.errors import TaskFailed

_POLL = 0.02
"""How often (seconds) to look whether a signalled process group is gone."""
_KILL_WAIT = 1.0
"""How long (seconds) to wait for a SIGKILLed group to be gone."""
_CHUNK = 65536
_LINE_LIMIT = 2**16
"""asyncio's own default for the longest line a pipe's ``readline`` takes."""


class GroupRun:
    """One command running in its own process group, as :func:`group_run` gives it.

    ``collect`` reads a pipe to its end in the background; ``finish`` waits for the command's
    exit and ends what it left running in its group. Whatever goes wrong inside the
    ``group_run`` block (a timeout, a cancel, a bad line) ends the group before it goes on.
    """

    def __init__(self, proc: asyncio.subprocess.Process, kill_grace: float, drain: float) -> None:
        assert proc.stdout is not None
        assert proc.stderr is not None
        self.proc = proc
        self.stdout: asyncio.StreamReader = proc.stdout
        self.stderr: asyncio.StreamReader = proc.stderr
        self.kill_grace, self.drain = kill_grace, drain
        self._readers: dict[asyncio.StreamReader, asyncio.Future[tuple[bytes, int]]] = {}
        self._feeder: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<GroupRun pid={self.proc.pid} returncode={self.proc.returncode}>"

    def collect(
        self, stream: asyncio.StreamReader, limit: int
    ) -> asyncio.Future[tuple[bytes, int]]:
        """Read ``stream`` (``stdout`` or ``stderr``) to its end in the background, keeping
        its first ``limit`` bytes: ``(kept, total bytes)`` once the pipe closes."""
        reader = self._readers[stream] = asyncio.ensure_future(read_capped(stream, limit))
        return reader

    async def finish(self) -> int:
        """The command's exit status, once it exits; then its group is ended (anything it left
        running goes too: such strays may hold the pipes open, so read them after this)."""
        code = await exit_code(self.proc)
        await end_group(self.proc.pid, self.kill_grace)
        if self._feeder is not None:
            await self._feeder
        return code

    def _feed(self, data: bytes) -> None:
        # Written while the output is read: input larger than the pipe's buffer would
        # otherwise wait on a command that waits on us.
        self._feeder = asyncio.ensure_future(_send(self.proc.stdin, data))

    async def _abort(self) -> None:
        """End the whole group, reap its leader (so its transport closes here, not in a
        finaliser), give the pipes ``drain`` seconds to be read to their end, and let go of
        what is left."""
        await end_group(self.proc.pid, self.kill_grace)
        await exit_code(self.proc)
        if self.drain > 0:
            # (Bounded: a grandchild that left the group with setsid may hold them open.)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._read_the_rest(), self.drain)
        for reader in self._readers.values():
            reader.cancel()
        if self._feeder is not None:
            self._feeder.cancel()
            await asyncio.wait([self._feeder])

    async def _read_the_rest(self) -> None:
        for stream in (self.stdout, self.stderr):
            if stream not in self._readers:
                while await stream.read(_CHUNK):
                    pass
        for reader in self._readers.values():
            await reader


@contextlib.asynccontextmanager
async def group_run(
    kind: str,
    argv: Sequence[str],
    *,
    kill_grace: float,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    line_limit: int = _LINE_LIMIT,
    drain: float = 0.0,
) -> AsyncIterator[GroupRun]:
    """Run ``argv`` (an argv list, never a shell line) in its own session for the block.

    Its stdout and stderr are pipes (``line_limit``: the longest line ``readline`` takes);
    its stdin is ``stdin`` written and closed, or nothing. Raises a non-retryable TaskFailed
    ``not_runnable`` (``<kind>: cannot run 'x': ...``) when it cannot be started (not found,
    not executable, a bad ``cwd``). If the block raises (or is cancelled), the group is ended
    (SIGTERM, SIGKILL after ``kill_grace``) and the pipes are read for up to ``drain`` seconds
    before the error goes on.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            limit=line_limit,
            start_new_session=True,  # its own process group, ended as one
        )
    except OSError as exc:  # not found, not executable, bad cwd: the same next time
        raise TaskFailed(
            f"{kind}: cannot run {argv[0]!r}: {exc.strerror or exc}",
            non_retryable=True,
            kind="not_runnable",
        ) from None
    run = GroupRun(proc, kill_grace, drain)
    if stdin is not None:
        run._feed(stdin)
    try:
        yield run
    except BaseException:
        # Timed out, cancelled or broken: end the whole group before passing it on.
        await run._abort()
        raise


async def _send(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    """Write ``data`` to the command's stdin and close it. A command that exits without
    reading it all is not this function's failure: its exit and its output say what happened."""
    if stdin is None:
        return
    with contextlib.suppress(ConnectionError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()
    with contextlib.suppress(ConnectionError):
        await stdin.wait_closed()


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
