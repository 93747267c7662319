"""The one way the ``shell`` and ``claude`` kinds run a command: its own process group, its
input written while its output is read, the whole group ended on the way out."""

from __future__ import annotations

import asyncio
import sys

import pytest

from agentdeck.agents.builtin._process import group_run, text_of
from agentdeck.core.errors import TaskFailed

PY = sys.executable


async def test_input_is_written_while_the_output_is_read() -> None:
    """Input larger than a pipe's buffer goes in while the command echoes it back."""
    data = b"x" * 1_000_000
    echo = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
    async with group_run("test", [PY, "-c", echo], kill_grace=1, stdin=data) as run:
        out = run.collect(run.stdout, 10)
        assert await run.finish() == 0
        kept, total = await out
    assert (kept, total) == (b"x" * 10, 1_000_000)
    assert text_of(kept, total).endswith("[truncated: 999990 more bytes not kept]")


async def test_a_command_that_cannot_start_is_not_runnable_for_good() -> None:
    """Not found: a non-retryable failure naming the kind and the command."""
    with pytest.raises(TaskFailed, match="mykind: cannot run '/no/such/command'") as caught:
        async with group_run("mykind", ["/no/such/command"], kill_grace=1):
            pass
    assert caught.value.non_retryable and caught.value.kind == "not_runnable"


async def test_an_error_in_the_block_ends_the_group_and_drains_the_pipes() -> None:
    """A reader's error (a bad line, say) ends the running command at once, within the
    grace, and the error goes on."""
    hang = "import time; print('line', flush=True); time.sleep(60)"
    runs = []

    async def read_a_bad_line() -> None:
        async with group_run("test", [PY, "-c", hang], kill_grace=0.2, drain=1) as run:
            runs.append(run)
            assert await run.stdout.readline() == b"line\n"
            raise ValueError("bad line")

    with pytest.raises(ValueError, match="bad line"):
        await asyncio.wait_for(read_a_bad_line(), 10)
    code = runs[0].proc.returncode
    assert code is not None and code < 0
