"""The ``claude`` kind against the stand-in CLI (tests/fakes/fake_claude.py): the argv it
runs, the stream-json it reads, the output, usage, progress and each way a run can fail."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from agentdeck.agents.builtin import BUILTINS, build, claude
from agentdeck.agents.context import TaskContext
from agentdeck.agents.testing import RecordingFeed, make_context
from agentdeck.core.errors import ConfigError, RateLimited, TaskFailed
from agentdeck.core.models import Usage

FAKE = str(Path(__file__).resolve().parents[1] / "fakes" / "fake_claude.py")
COMMAND = [sys.executable, FAKE]


def context(prompt: str, upstream: dict[str, Any] | None = None, **input: Any) -> TaskContext:
    """A context whose input is ``{"prompt": prompt, **input}``."""
    return make_context({"prompt": prompt, **input}, upstream=upstream)


def recorded(ctx: TaskContext) -> RecordingFeed:
    assert isinstance(ctx.feed, RecordingFeed)
    return ctx.feed


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def test_claude_is_a_built_in_kind() -> None:
    """``claude`` builds like any other kind."""
    assert BUILTINS["claude"] is claude.make
    assert callable(build("claude", {"command": COMMAND}))


async def test_a_successful_run_gives_the_result_usage_and_progress() -> None:
    """The result line is the output, its usage and cost go to ctx.usage, assistant text is
    streamed and each tool call is a progress message."""
    ctx = context("Say hi")
    output = await claude.make({"command": COMMAND})(ctx)
    assert output["result"] == "done: Say hi"
    assert output["is_error"] is False
    assert output["subtype"] == "success"
    assert output["num_turns"] == 2
    assert output["model"] == "claude-sonnet-4-5-20250929"
    assert isinstance(output["session_id"], str) and len(output["session_id"]) == 36
    assert ctx.feed.usage == Usage(
        input_tokens=12,
        output_tokens=321,
        cache_creation_input_tokens=2048,
        cache_read_input_tokens=15635,
        cost_usd=0.0421,
        model="claude-sonnet-4-5-20250929",
    )
    feed = recorded(ctx)
    assert feed.text == "Let me look at the files.\n\ndone: Say hi"
    assert [m for _, m in feed.progressed] == [
        "session started (claude-sonnet-4-5-20250929)",
        "turn 2: Read",
    ]


async def test_options_become_the_documented_arguments(tmp_path: Path) -> None:
    """model, max_turns, system_prompt, extra_args and allowed_tools go on the argv after
    ``-p <prompt> --output-format stream-json --verbose``; cwd is the working directory."""
    argv_file = tmp_path / "argv.json"
    handler = claude.make(
        {
            "command": COMMAND,
            "model": "claude-haiku-4-5",
            "max_turns": 3,
            "system_prompt": "Be terse.",
            "extra_args": ["--permission-mode", "plan"],
            "allowed_tools": ["Read", "Bash(git diff:*)"],
            "cwd": str(tmp_path),
            "env": {"FAKE_CLAUDE_ARGV": str(argv_file)},
        }
    )
    output = await handler(context("Look"))
    seen = json.loads(argv_file.read_text())
    assert seen["argv"] == [
        "-p",
        "Look",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "claude-haiku-4-5",
        "--max-turns",
        "3",
        "--system-prompt",
        "Be terse.",
        "--permission-mode",
        "plan",
        "--allowedTools",
        "Read",
        "Bash(git diff:*)",
    ]
    assert seen["cwd"] == str(tmp_path)
    assert output["model"] == "claude-haiku-4-5"


async def test_the_prompt_is_templated_from_upstream_outputs() -> None:
    """``{triage.result}`` takes the field of the upstream output; other input keys work too."""
    ctx = context(
        "Review {files[1]} after {triage.result}",
        upstream={"triage": {"result": "a quick look"}},
        files=["a.py", "b.py"],
    )
    output = await claude.make({"command": COMMAND})(ctx)
    assert output["result"] == "done: Review b.py after a quick look"


async def test_a_template_naming_a_missing_upstream_field_is_one_clear_error() -> None:
    """A field the upstream output lacks: bad_input, not retried, naming what there is."""
    ctx = context("Review {triage.summary}", upstream={"triage": {"result": "x"}})
    with pytest.raises(TaskFailed) as caught:
        await claude.make({"command": COMMAND})(ctx)
    assert caught.value.kind == "bad_input" and caught.value.non_retryable
    assert str(caught.value) == (
        "claude: the prompt names {triage.summary}, but triage has no field 'summary' "
        "(it has: 'result')"
    )


@pytest.mark.parametrize(
    "prompt", ["x" * 300_000, "-rf looks like an option"], ids=["long", "dash"]
)
async def test_a_long_prompt_or_one_like_an_option_goes_on_stdin(
    tmp_path: Path, prompt: str
) -> None:
    """Past ARGV_PROMPT_LIMIT (Linux refuses an argument over 128 KiB) or starting with ``-``,
    the prompt is written to stdin and ``-p`` has no argument; the CLI gets it whole."""
    argv_file = tmp_path / "argv.json"
    handler = claude.make({"command": COMMAND, "env": {"FAKE_CLAUDE_ARGV": str(argv_file)}})
    output = await handler(context(prompt))
    assert output["result"] == f"done: {prompt}"
    assert json.loads(argv_file.read_text())["argv"][:2] == ["-p", "--output-format"]


async def test_an_input_without_a_prompt_is_refused() -> None:
    """The input must carry a prompt string."""
    with pytest.raises(TaskFailed, match='"prompt" string') as caught:
        await claude.make({"command": COMMAND})(make_context({"text": "hi"}))
    assert caught.value.kind == "bad_input"


async def test_an_error_result_fails_with_its_usage_counted() -> None:
    """``is_error`` is ``claude_error`` (retryable for an execution error); the usage of
    the failed run is still counted."""
    ctx = context("go [fake:is_error]")
    with pytest.raises(TaskFailed) as caught:
        await claude.make({"command": COMMAND})(ctx)
    assert caught.value.kind == "claude_error" and not caught.value.non_retryable
    assert "error_during_execution" in str(caught.value)
    assert "the tool crashed" in str(caught.value)
    assert ctx.feed.usage is not None and ctx.feed.usage.cost_usd == 0.0421


async def test_running_out_of_turns_is_not_retried() -> None:
    """error_max_turns would recur: the failure is permanent."""
    with pytest.raises(TaskFailed) as caught:
        await claude.make({"command": COMMAND})(context("go [fake:max_turns]"))
    assert caught.value.kind == "claude_error" and caught.value.non_retryable


async def test_a_rate_limit_result_is_rate_limited_until_the_reset() -> None:
    """A rejected rate_limit_event and a 429 result: ``rate_limited``, retry after resetsAt."""
    ctx = context("go [fake:rate_limit]")
    with pytest.raises(RateLimited) as caught:
        await claude.make({"command": COMMAND, "env": {"FAKE_CLAUDE_RESET": "120"}})(ctx)
    assert caught.value.kind == "rate_limited" and not caught.value.non_retryable
    assert caught.value.retry_after is not None and 110 <= caught.value.retry_after <= 121
    assert "usage limit reached" in str(caught.value)


async def test_a_malformed_line_fails_at_once_as_bad_stream() -> None:
    """A line that is not JSON ends the run: ``bad_stream``, naming the line."""
    with pytest.raises(TaskFailed) as caught:
        await claude.make({"command": COMMAND})(context("go [fake:malformed]"))
    assert caught.value.kind == "bad_stream"
    assert "line 2 is not JSON: b'this is not json" in str(caught.value)


async def test_a_stream_without_a_result_line_is_no_result() -> None:
    """Exit 0 with no result line: ``no_result``."""
    with pytest.raises(TaskFailed) as caught:
        await claude.make({"command": COMMAND})(context("go [fake:no_result]"))
    assert caught.value.kind == "no_result"


async def test_a_nonzero_exit_without_a_result_shows_stderr() -> None:
    """The CLI failing before any result: ``nonzero_exit`` with the exit code and stderr."""
    with pytest.raises(TaskFailed) as caught:
        await claude.make({"command": COMMAND})(context("go [fake:exit_nonzero]"))
    assert caught.value.kind == "nonzero_exit"
    assert "exited with 2" in str(caught.value)
    assert "told to fail" in str(caught.value)


async def test_a_line_over_the_limit_is_bad_stream() -> None:
    """A JSON line longer than max_line is refused rather than buffered without bound."""
    handler = claude.make({"command": COMMAND, "max_line": 1024})
    with pytest.raises(TaskFailed) as caught:
        await handler(context("x" * 2000))
    assert caught.value.kind == "bad_stream"
    assert "longer than 1024 bytes" in str(caught.value)


async def test_a_missing_command_is_not_runnable() -> None:
    """A command that does not exist fails permanently, naming it."""
    with pytest.raises(TaskFailed, match="cannot run '/no/such/claude'") as caught:
        await claude.make({"command": ["/no/such/claude"]})(context("hi"))
    assert caught.value.kind == "not_runnable" and caught.value.non_retryable


async def test_cancel_ends_the_cli_and_its_children(tmp_path: Path) -> None:
    """Cancelling a slow run (a timeout does the same) ends the CLI's whole process group."""
    pids = tmp_path / "pids"
    ctx = context("go [fake:slow]")
    handler = claude.make(
        {"command": COMMAND, "kill_grace": 0.5, "env": {"FAKE_CLAUDE_PIDFILE": str(pids)}}
    )
    task = asyncio.ensure_future(handler(ctx))
    for _ in range(500):
        if pids.exists() and pids.read_text() and recorded(ctx).emitted:
            break
        await asyncio.sleep(0.01)
    leader, child = map(int, pids.read_text().split())
    assert not gone(leader) and not gone(child)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(leader) and gone(child)
    assert recorded(ctx).emitted[0] == "still thinking (0)"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"modle": "x"}, r"unknown option\(s\) 'modle'"),
        ({"command": []}, "'command' must be a non-empty list of strings"),
        ({"max_turns": -1}, "'max_turns' must be a whole number >= 0"),
        ({"allowed_tools": "Read"}, "'allowed_tools' must be a non-empty list of strings"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], message: str) -> None:
    """Each bad option is one ConfigError at agent start, naming it and what is allowed."""
    with pytest.raises(ConfigError, match=message):
        claude.make(options)


def test_the_stand_in_is_executable() -> None:
    """The fake CLI can be named as a command on its own (a shebang line, executable)."""
    assert os.access(FAKE, os.X_OK)
