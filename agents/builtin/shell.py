"""``shell``: runs one command per task, its arguments filled in from the task's input.

The command is an argv list, never a shell line: ``["wc", "-c", "{path}"]`` with input
``{"path": "/etc/hosts"}`` runs ``wc -c /etc/hosts``, and a value holding ``; rm -rf /`` is
just an odd file name. Each command runs in its own session, so when the attempt ends (done,
timed out or cancelled) its whole process group is ended with it: SIGTERM, then SIGKILL after
``kill_grace`` seconds. Stray background children cannot outlive their task.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.builtin._process import end_group, group_run, signal_name, text_of
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.core.errors import TaskFailed
from agentdeck.core.models import JSON


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
        async with group_run("shell", args, kill_grace=kill_grace, cwd=cwd, env=env) as run:
            stdout = run.collect(run.stdout, max_output)
            stderr = run.collect(run.stderr, max_output)
            code = await run.finish()  # (and whatever it left running in its group ended)
            # (A grandchild that left the group with setsid and kept our pipes would hold
            # these open; the task's timeout still bounds it.)
            out, out_total = await stdout
            err, err_total = await stderr
        output: dict[str, JSON] = {
            "exit_code": code,
            "stdout": text_of(out, out_total),
            "stderr": text_of(err, err_total),
        }
        if code != 0:
            how = f"was killed by {signal_name(-code)}" if code < 0 else f"exited with {code}"
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


__all__ = ["end_group", "fill", "make"]
