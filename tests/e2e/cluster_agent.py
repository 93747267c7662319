"""The ``effect`` agent of the cross-host fault suite: it works a while, then leaves a mark.

``agentdeck agent --module tests.e2e.cluster_agent`` serves capability ``effect``. Each run of a
handler sleeps ``input["seconds"]``, fails its first ``input["fail_first"]`` attempts (to walk
the retry path), and otherwise appends one JSON line to the task's own effect log,
``$AGENTDECK_EFFECTS_DIR/<workflow>~<key>.log``: which attempt, which agent on which host, when it
started and ended. The suite reads those logs to count the effects each task had; the Store's
history says which of them the scheduler applied.

Once the suite has injected every fault it writes :data:`FAST_FILE` into the effects folder:
runs that start after that sleep at most :data:`FAST_SECONDS`, so the rest of the work (no
fault left to measure) takes seconds instead of minutes.

One ``write`` of one short line to a file opened for appending: lines written by agents on
several hosts (one file system here) never interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from agentdeck.agents import agent
from agentdeck.agents.context import TaskContext
from agentdeck.core.errors import TaskFailed
from agentdeck.core.models import JSON

EFFECTS_ENV = "AGENTDECK_EFFECTS_DIR"
"""The folder of the effect logs (one file per task)."""
HOST_ENV = "AGENTDECK_EFFECTS_HOST"
"""The test host (h1, h2, h3) this agent process runs on."""
FAST_FILE = "FAST"
"""Present in the effects folder: every fault is behind, runs may be short."""
FAST_SECONDS = 0.3


def effect_log(folder: Path, task_id: str) -> Path:
    """The effect log of one task (a task id is ``workflow/key``: one file, no sub-folder)."""
    return folder / f"{task_id.replace('/', '~')}.log"


@agent("effect", concurrency=20)
async def effect(ctx: TaskContext) -> JSON:
    """Sleep, maybe fail on purpose, then record the effect of this run."""
    started = time.time()
    spec = ctx.input if isinstance(ctx.input, dict) else {}
    seconds = float(spec.get("seconds", 1.0))
    folder = Path(os.environ[EFFECTS_ENV])
    if (folder / FAST_FILE).exists():
        seconds = min(seconds, FAST_SECONDS)
    await asyncio.sleep(seconds)
    if ctx.attempt <= int(spec.get("fail_first", 0)):
        raise TaskFailed(f"effect: attempt {ctx.attempt} fails on purpose")
    line = json.dumps(
        {
            "task": ctx.task_id,
            "attempt": ctx.attempt,
            "agent": ctx.agent_id,
            "host": os.environ.get(HOST_ENV, "?"),
            "start": started,
            "end": time.time(),
        }
    )
    fd = os.open(
        effect_log(folder, ctx.task_id),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        0o644,
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    return {"slept": seconds}
