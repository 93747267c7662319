"""``shell``: runs one command per task, its arguments filled in from the task's input.

The command is an argv list, never a shell line: ``["wc", "-c", "{path}"]`` with input
``{"path": "/etc/hosts"}`` runs ``wc -c /etc/hosts``, and a value holding ``; rm -rf /`` is
just an odd file name. Each command runs in its own session, so when the attempt ends (done,
timed out or cancelled) its whole process group is ended with it: SIGTERM, then SIGKILL after
``kill_grace`` seconds. Stray background children cannot outlive their task.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.core.errors import TaskFailed
from agentdeck.core.models import JSON

_POLL = 0.02
"""How often (seconds) to look whether a signalled process group is gone."""
_KILL_WAIT = 1.0
"""How long (seconds) to wait for a SIGKILLed group to be gone."""
_CHUNK = 65536


def make(options: Mapping[str, JSON] | None = None) -> Handler:
    """A shell handler. Options: ``argv`` (required list of templates), ``cwd``, ``env`` (added
    to this process's environment), ``max_output`` (bytes kept per stream, default 65536),
    ``retry_on_nonzero`` (default true), ``kill_grace`` (seconds, default 2)."""
    opts = Options("shell", options)
    argv = opts.string_list("argv")
    cwd = opts.optional_string("cwd")
    extra_env = opts.string_map("env", secret=True)
    max_output = opts.integer("max_output", 65536, minimum=1)
    retry_on_nonzero = opts.boolean("retry_on_nonzero", True)
    kill_grace = opts.number("kill_grace", 2.0)
    opts.done()
    env = {**os.environ, **extra_env} if extra_env else None

    async def shell(ctx: TaskContext) -> JSON:
        args = fill(argv, ctx.input)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,  # its own process group, ended as one
            )
        except OSError as exc:  # not found, not executable, bad cwd: the same next time
            raise TaskFailed(
                f"shell: cannot run {args[0]!r}: {exc.strerror or exc}",
                non_retryable=True,
                kind="not_runnable",
            ) from None
        assert proc.stdout is not None
        assert proc.stderr is not None
        readers = [
            asyncio.ensure_future(_read_capped(proc.stdout, max_output)),
            asyncio.ensure_future(_read_capped(proc.stderr, max_output)),
        ]
        try:
            code = await _exit_code(proc)
            # The command is done; anything it left running in its group goes too. Those
            # strays may also hold our pipes open, so the readers finish only after this.
            await end_group(proc.pid, kill_grace)
            # (A grandchild that left the group with setsid and kept our pipes would hold
            # this open; the task's timeout still bounds it.)
            (out, out_total), (err, err_total) = await asyncio.gather(*readers)
        except BaseException:
            # Timed out, cancelled or broken: end the whole group before passing it on.
            await end_group(proc.pid, kill_grace)
            for reader in readers:
                reader.cancel()
            # Reap the (now killed) leader so its transport closes here, not in a finaliser.
            await _exit_code(proc)
            raise
        output: dict[str, JSON] = {
            "exit_code": code,
            "stdout": _text(out, out_total),
            "stderr": _text(err, err_total),
        }
        if code != 0:
            how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with {code}"
            raise TaskFailed(
                f"shell: {args[0]} {how}; output: {json.dumps(output)}",
                non_retryable=not retry_on_nonzero,
                kind="nonzero_exit",
            )
        return output

    return shell


def fill(argv: list[str], values: JSON) -> list[str]:
    """``argv`` with each ``{name}`` replaced from ``values`` (the task's input).

    Raises a non-retryable TaskFailed naming a missing key or a malformed template: the same
    input would fail the same way on every attempt.
    """
    mapping = values if isinstance(values, Mapping) else {}
    filled = []
    for template in argv:
        try:
            filled.append(template.format_map(mapping))
        except KeyError as exc:
            raise TaskFailed(
                f"shell: argument {template!r} needs input key {exc.args[0]!r}, which the "
                f"task input does not have (it has: {', '.join(map(repr, mapping)) or 'none'})",
                non_retryable=True,
                kind="bad_input",
            ) from None
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise TaskFailed(
                f"shell: cannot fill argument {template!r} from the input: {exc}",
                non_retryable=True,
                kind="bad_input",
            ) from None
    return filled


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


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    """The leader's exit status, as soon as it exits.

    Not ``proc.wait()``: before Python 3.12 that also waits for every pipe to close, which a
    stray background child can hold open for as long as it lives.
    """
    pause = 0.001
    while proc.returncode is None:
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)
    return proc.returncode


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    """Read ``stream`` to its end, keeping the first ``limit`` bytes; also return the total."""
    kept = bytearray()
    total = 0
    while chunk := await stream.read(_CHUNK):
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept), total


def _text(data: bytes, total: int) -> str:
    text = data.decode("utf-8", errors="replace")
    if total > len(data):
        text += f"\n[truncated: {total - len(data)} more bytes not kept]"
    return text


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
