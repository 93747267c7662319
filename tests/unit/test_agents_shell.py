"""The shell agent: argv templates, no shell, captured output, and process groups ended."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from agentdeck.agents.builtin import shell
from agentdeck.agents.testing import make_context
from agentdeck.core.errors import ConfigError, TaskFailed

PY = sys.executable

# A leader that starts a grandchild which ignores SIGTERM, waits until it does, records
# both pids, then hangs. (No braces anywhere: argv items are templates.)
SPAWN_AND_HANG = """
import os, subprocess, sys, time
ready = sys.argv[1] + ".child"
child = subprocess.Popen([sys.executable, "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').close(); time.sleep(30)", ready])
while not os.path.exists(ready):
    time.sleep(0.005)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d %d" % (os.getpid(), child.pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(30)
"""

# A leader that leaves a background grandchild holding its stdout, then exits at once.
SPAWN_AND_EXIT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
open(sys.argv[1], "w").write(str(child.pid))
print("done")
"""


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


async def wait_for_file(path: Path, seconds: float = 10.0) -> str:
    """The file's text once it exists (real processes take real time to start)."""
    deadline = time.monotonic() + seconds
    while (text := _read(path)) is None:
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)
    return text


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


async def test_fills_argv_from_input_and_captures_output() -> None:
    """Each ``{name}`` comes from the input; exit code, stdout and stderr are returned."""
    handler = shell.make(
        {
            "argv": [
                PY,
                "-c",
                "import sys; print(sys.argv[1]); print('warn', file=sys.stderr)",
                "{word}",
            ]
        }
    )
    output = await handler(make_context({"word": "hello"}))
    assert output == {"exit_code": 0, "stdout": "hello\n", "stderr": "warn\n"}


async def test_input_values_never_reach_a_shell() -> None:
    """Shell syntax in a value is passed as one literal argument, not interpreted."""
    handler = shell.make({"argv": [PY, "-c", "import sys; print(sys.argv[1:])", "{arg}"]})
    output = await handler(make_context({"arg": "x; echo pwned $(id)"}))
    assert output["stdout"] == "['x; echo pwned $(id)']\n"


async def test_missing_input_key_fails_permanently_naming_it() -> None:
    """A template key the input lacks is a non-retryable failure naming the key."""
    handler = shell.make({"argv": ["wc", "-c", "{path}"]})
    with pytest.raises(TaskFailed, match=r"needs input key 'path'.*it has: 'file'") as caught:
        await handler(make_context({"file": "/etc/hosts"}))
    assert caught.value.non_retryable


async def test_nonzero_exit_is_retryable_with_output_in_the_message() -> None:
    """A failing command is a retryable failure whose message carries its output."""
    handler = shell.make({"argv": [PY, "-c", "import sys; print('boom'); sys.exit(3)"]})
    with pytest.raises(TaskFailed, match=r'exited with 3.*"stdout": "boom\\n"') as caught:
        await handler(make_context())
    assert not caught.value.non_retryable
    assert caught.value.kind == "nonzero_exit"


async def test_nonzero_exit_can_be_made_permanent() -> None:
    """With ``retry_on_nonzero: false`` a failing command is not retried."""
    handler = shell.make({"argv": [PY, "-c", "raise SystemExit(1)"], "retry_on_nonzero": False})
    with pytest.raises(TaskFailed) as caught:
        await handler(make_context())
    assert caught.value.non_retryable


async def test_output_is_capped_with_a_note() -> None:
    """Output beyond ``max_output`` bytes is dropped and the drop is said."""
    handler = shell.make({"argv": [PY, "-c", "print('x' * 1000, end='')"], "max_output": 100})
    output = await handler(make_context())
    assert output["stdout"] == "x" * 100 + "\n[truncated: 900 more bytes not kept]"


async def test_missing_program_fails_permanently() -> None:
    """A program that does not exist is a non-retryable failure naming it."""
    handler = shell.make({"argv": ["/no/such/program-xyz"]})
    with pytest.raises(TaskFailed, match="cannot run '/no/such/program-xyz'") as caught:
        await handler(make_context())
    assert caught.value.non_retryable


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"argv": "wc -c"}, "option 'argv' must be a non-empty list of strings"),
        ({"argv": []}, "option 'argv' must be a non-empty list of strings"),
        ({"argv": ["x"], "env": {"TOKEN": 5}}, "option 'env' must be a table .* got a dict"),
        ({"argv": ["x"], "kill_grace": -1}, "option 'kill_grace' must be a number >= 0"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], message: str) -> None:
    """Each bad option is a ConfigError naming it (env values, maybe secrets, not shown)."""
    with pytest.raises(ConfigError, match=message):
        shell.make(options)


async def test_cancel_ends_the_whole_process_group(tmp_path: Path) -> None:
    """On timeout or cancel the leader and its grandchildren all end, even one ignoring
    SIGTERM (it gets SIGKILL after the grace)."""
    pids_file = tmp_path / "pids"
    handler = shell.make({"argv": [PY, "-c", SPAWN_AND_HANG, "{pids}"], "kill_grace": 0.2})
    task = asyncio.ensure_future(handler(make_context({"pids": str(pids_file)})))
    leader, child = map(int, (await wait_for_file(pids_file)).split())
    assert not gone(leader)
    assert not gone(child)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(leader)
    assert gone(child)


async def test_stray_background_children_do_not_hold_a_finished_task(tmp_path: Path) -> None:
    """When the command exits, children it left behind are ended and the task finishes."""
    pid_file = tmp_path / "pid"
    handler = shell.make({"argv": [PY, "-c", SPAWN_AND_EXIT, "{pid}"], "kill_grace": 0.2})
    output = await asyncio.wait_for(handler(make_context({"pid": str(pid_file)})), 10)
    assert output == {"exit_code": 0, "stdout": "done\n", "stderr": ""}
    assert gone(int(pid_file.read_text()))


async def test_killed_by_signal_is_reported_by_name() -> None:
    """A command killed by a signal fails with the signal's name."""
    handler = shell.make({"argv": [PY, "-c", "import os, signal; os.kill(os.getpid(), 9)"]})
    with pytest.raises(TaskFailed, match="was killed by SIGKILL"):
        await handler(make_context())


async def test_end_group_of_a_finished_group_returns_at_once() -> None:
    """Ending a group with no process left does not wait out the grace."""
    proc = await asyncio.create_subprocess_exec(PY, "-c", "pass", start_new_session=True)
    await proc.wait()
    await asyncio.wait_for(shell.end_group(proc.pid, 30.0), 5)
