"""``claude``: runs Claude Code headless, one process per attempt, and reads its JSON stream.

Each attempt runs ``<command> -p <prompt> --output-format stream-json --verbose`` plus the
options below, as an argv (never a shell line) in its own process group: when the attempt
ends, is cancelled or times out, the whole group is ended (:mod:`agents.builtin._process`).
A prompt over ``ARGV_PROMPT_LIMIT`` bytes, or one starting with ``-``, is written to the CLI's
stdin instead (``claude -p`` reads its prompt from there when none is given).

The task's input is ``{"prompt": "..."}``: a template over the outputs of the tasks it needs
(``{triage.result}``, :mod:`agents.builtin._template`). Claude Code prints one JSON object a
line (the Agent SDK's message types): ``system`` (``init`` names the model and the session),
``assistant`` (the model's turns: its text is streamed with ``ctx.emit``, each tool it calls
is a ``ctx.progress`` message), ``user`` (tool results, not shown), ``rate_limit_event`` and,
last, ``result``: the output (``result``, ``session_id``, ``num_turns``, ``subtype``, ...) and
the usage (``usage`` tokens with the cache tokens, ``total_cost_usd``), which goes to
``ctx.usage`` whether the run succeeded or not.

Failures, each one kind: ``rate_limited`` (a ``rate_limit_event`` with status ``rejected``,
an assistant message with error ``rate_limit``, or a result with ``api_error_status`` 429 or
529, on a run that did not succeed: retry after ``resetsAt``), ``claude_error`` (a result with
``is_error``; not retried for ``error_max_turns``/``error_max_budget_usd``, which would
recur), ``bad_stream`` (a line that is not a JSON object, or one too long), ``no_result`` (the
stream ended without a result line), ``nonzero_exit`` (the CLI failed without a result),
``not_runnable`` (the command cannot be started).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from agentdeck.agents.builtin._options import Options
from agentdeck.agents.builtin._process import group_run, text_of
from agentdeck.agents.builtin._ratelimit import RATE_LIMIT_STATUSES
from agentdeck.agents.builtin._template import render, template_values
from agentdeck.agents.context import Handler, TaskContext
from agentdeck.core.errors import RateLimited, TaskFailed
from agentdeck.core.models import JSON

STREAM_ARGS = ("--output-format", "stream-json", "--verbose")
"""What makes Claude Code print its JSON stream (``--verbose`` is required with ``-p``)."""
STOPPED_FOR_GOOD = frozenset({"error_max_turns", "error_max_budget_usd"})
"""Result subtypes that the same task would hit again: not retried."""
ARGV_PROMPT_LIMIT = 100_000
"""Bytes of prompt passed as an argument; a longer one goes on stdin (Linux refuses an
argument over 128 KiB)."""
_STDERR_KEPT = 16 * 1024
_DRAIN_WAIT = 2.0
"""Seconds to read the pipes of an ended run to their end."""


def make(options: Mapping[str, JSON] | None = None) -> Handler:
    """A claude handler. Options: ``command`` (argv prefix, default ``["claude"]``),
    ``model``, ``allowed_tools`` (list, e.g. ``["Read", "Bash(git diff:*)"]``), ``cwd`` (the
    working directory), ``max_turns``, ``system_prompt``, ``extra_args`` (appended as given),
    ``env`` (added to this process's environment), ``kill_grace`` (seconds, default 5),
    ``max_line`` (bytes one JSON line may take, default 16 MiB)."""
    opts = Options("claude", options)
    command = opts.string_list("command", ["claude"])
    model = opts.optional_string("model")
    allowed_tools = opts.optional_string_list("allowed_tools")
    cwd = opts.optional_string("cwd")
    max_turns = opts.integer("max_turns", 0, minimum=0)
    system_prompt = opts.optional_string("system_prompt")
    extra_args = opts.optional_string_list("extra_args") or []
    extra_env = opts.string_map("env", secret=True)
    kill_grace = opts.number("kill_grace", 5.0)
    max_line = opts.integer("max_line", 16 * 1024 * 1024, minimum=1024)
    opts.done()
    options_args: list[str] = []
    if model:
        options_args += ["--model", model]
    if max_turns:
        options_args += ["--max-turns", str(max_turns)]
    if system_prompt:
        options_args += ["--system-prompt", system_prompt]
    options_args += extra_args
    if allowed_tools:
        # Last: the flag takes every argument after it.
        options_args += ["--allowedTools", *allowed_tools]
    env = {**os.environ, **extra_env} if extra_env else None

    async def claude(ctx: TaskContext) -> JSON:
        prompt = prompt_of(ctx)
        # A long prompt (an argument may hold at most 128 KiB on Linux) or one that would
        # read as an option goes on stdin, which ``claude -p`` reads when given no prompt.
        piped = len(prompt.encode()) > ARGV_PROMPT_LIMIT or prompt.startswith("-")
        argv = [*command, "-p", *([] if piped else [prompt]), *STREAM_ARGS, *options_args]
        stream = Stream(ctx)
        async with group_run(
            "claude",
            argv,
            kill_grace=kill_grace,
            cwd=cwd,
            env=env,
            stdin=prompt.encode() if piped else None,
            line_limit=max_line,
            drain=_DRAIN_WAIT,
        ) as run:
            stderr = run.collect(run.stderr, _STDERR_KEPT)
            await stream.read(run.stdout, max_line)  # (a bad line ends the group)
            code = await run.finish()
            err, err_total = await stderr
        return stream.outcome(code, text_of(err, err_total), time.time())

    return claude


def prompt_of(ctx: TaskContext) -> str:
    """The task's prompt, its template filled from the upstream outputs and the input."""
    data = ctx.input
    if not isinstance(data, Mapping) or not isinstance(data.get("prompt"), str):
        raise TaskFailed(
            'claude: the task input must be an object with a "prompt" string, '
            f"got {json.dumps(data)[:200]}",
            non_retryable=True,
            kind="bad_input",
        )
    values = template_values(ctx.upstream, {k: v for k, v in data.items() if k != "prompt"})
    return render(data["prompt"], values, kind="claude", what="prompt")


class Stream:
    """What one run's stream-json lines said so far, and what the attempt's outcome is."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.model: str | None = None
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.rate_limited = False
        self.resets_at: float | None = None
        self.turns: set[str] = set()
        self._texts = 0

    def __repr__(self) -> str:
        return (
            f"<Stream session={self.session_id} turns={len(self.turns)} done={bool(self.result)}>"
        )

    async def read(self, stdout: asyncio.StreamReader, max_line: int) -> None:
        """Take every line until the stream ends; TaskFailed ``bad_stream`` for a bad one."""
        number = 0
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # asyncio's LimitOverrunError, as readline() raises it
                raise _bad_stream(f"line {number + 1} is longer than {max_line} bytes") from None
            if not line:
                return
            number += 1
            if line.strip():
                self.take(line, number)

    def take(self, line: bytes, number: int = 0) -> None:
        """Act on one line of the stream."""
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise _bad_stream(f"line {number} is not JSON: {line[:200]!r}") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise _bad_stream(f"line {number} is not a message with a type: {line[:200]!r}")
        kind = message["type"]
        if kind == "system" and message.get("subtype") == "init":
            self.model = _str(message.get("model")) or self.model
            self.session_id = _str(message.get("session_id"))
            self.ctx.progress(message=f"session started ({self.model or 'default model'})")
        elif kind == "assistant":
            self._assistant(message)
        elif kind == "rate_limit_event":
            info = message.get("rate_limit_info")
            if isinstance(info, dict) and info.get("status") == "rejected":
                self.rate_limited = True
                self.resets_at = _number(info.get("resetsAt")) or self.resets_at
        elif kind == "result":
            self.result = message
        # user (tool results), stream_event and other system lines: nothing to do.

    def _assistant(self, message: dict[str, Any]) -> None:
        if message.get("error") == "rate_limit":
            self.rate_limited = True
        body = message.get("message")
        if not isinstance(body, dict):
            return
        self.model = _str(body.get("model")) or self.model
        if isinstance(body.get("id"), str):
            self.turns.add(body["id"])
        for block in body.get("content") or ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                self.ctx.emit(("\n\n" if self._texts else "") + block["text"])
                self._texts += 1
            elif block.get("type") == "tool_use":
                self.ctx.progress(message=f"turn {len(self.turns)}: {block.get('name', 'tool')}")

    def outcome(self, code: int, stderr: str, now: float) -> JSON:
        """The output, or the one error that says why not (after counting the usage)."""
        result = self.result
        if result is not None:
            self._count_usage(result)
        failed = result is None or result.get("is_error") is not False or code != 0
        if result is not None and result.get("api_error_status") in RATE_LIMIT_STATUSES:
            self.rate_limited = True
        if failed and self.rate_limited:
            wait = max(0.0, self.resets_at - now) if self.resets_at is not None else None
            said = _str(result.get("result")) if result else None
            raise RateLimited(
                f"claude: rate limited{f' ({said})' if said else ''}"
                + (f"; resets in {wait:.0f}s" if wait is not None else ""),
                retry_after=wait,
            )
        if result is None:
            if code != 0:
                raise TaskFailed(
                    f"claude: exited with {code} before a result line; stderr: {stderr[-2000:]}",
                    kind="nonzero_exit",
                )
            raise TaskFailed("claude: the stream ended without a result line", kind="no_result")
        subtype = _str(result.get("subtype")) or "error"
        if result.get("is_error") is not False:
            detail = _str(result.get("result")) or json.dumps(result.get("errors"))[:2000]
            raise TaskFailed(
                f"claude: the run ended with an error ({subtype}): {detail}",
                non_retryable=subtype in STOPPED_FOR_GOOD,
                kind="claude_error",
            )
        if code != 0:
            raise TaskFailed(
                f"claude: exited with {code} after a successful result; stderr: {stderr[-2000:]}",
                kind="nonzero_exit",
            )
        return {
            "result": result.get("result"),
            "session_id": result.get("session_id", self.session_id),
            "num_turns": result.get("num_turns"),
            "subtype": subtype,
            "is_error": False,
            "duration_ms": result.get("duration_ms"),
            "model": self.model,
        }

    def _count_usage(self, result: dict[str, Any]) -> None:
        usage = result.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        self.ctx.usage(
            input_tokens=_count(usage.get("input_tokens")),
            output_tokens=_count(usage.get("output_tokens")),
            cache_creation_input_tokens=_count(usage.get("cache_creation_input_tokens")),
            cache_read_input_tokens=_count(usage.get("cache_read_input_tokens")),
            cost_usd=_number(result.get("total_cost_usd")),
            model=self.model,
        )


def _bad_stream(what: str) -> TaskFailed:
    return TaskFailed(f"claude: unreadable stream-json output: {what}", kind="bad_stream")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int:
    """A token count as the stream gives it; anything but a whole number >= 0 counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)
