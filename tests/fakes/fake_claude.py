#!/usr/bin/env python3
"""A stand-in for the Claude Code CLI in headless mode: prints the documented stream-json lines.

Run as ``fake_claude.py -p [<prompt>] --output-format stream-json --verbose [--model M]
[--max-turns N] [--system-prompt S] [--allowedTools T ...]``. It prints what ``claude`` prints
(the Agent SDK's message types, one JSON object a line): a ``system``/``init`` line,
``assistant`` turns (text and a tool call), a ``user`` tool result, and a final ``result``
with ``usage`` and ``total_cost_usd``. The prompt's text comes back in the result. Without a
prompt argument it reads the prompt from stdin, as ``claude -p`` does.

The behaviour is chosen by ``[fake:<mode>]`` in the prompt, else ``FAKE_CLAUDE_MODE``:
``success`` (default), ``is_error``, ``max_turns``, ``rate_limit`` (a rejected
``rate_limit_event`` resetting in ``FAKE_CLAUDE_RESET`` seconds, default 30, then an error
result with ``api_error_status`` 429, exit 1), ``malformed`` (a line that is not JSON),
``no_result`` (the stream ends early, exit 0), ``exit_nonzero`` (stderr and exit 2, no
result), ``slow`` (a turn every ``FAKE_CLAUDE_DELAY`` seconds, default 0.05, for
``FAKE_CLAUDE_TURNS`` turns, default 1000; it starts a child that sleeps too, and writes
both pids to ``FAKE_CLAUDE_PIDFILE``). ``FAKE_CLAUDE_ARGV``: a file to write the argv to.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid

SESSION = str(uuid.uuid4())
USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 2048,
    "cache_read_input_tokens": 15635,
    "output_tokens": 321,
    "server_tool_use": {"web_search_requests": 0},
    "service_tier": "standard",
}
COST = 0.0421


def out(message: dict[str, object]) -> None:
    print(json.dumps(message), flush=True)


def args(argv: list[str]) -> dict[str, object]:
    parsed: dict[str, object] = {"tools": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-p":
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                parsed["prompt"] = argv[i + 1]
                i += 2
            else:  # no prompt argument: claude -p reads it from stdin
                parsed["prompt"] = sys.stdin.read()
                i += 1
        elif arg in ("--output-format", "--model", "--max-turns", "--system-prompt"):
            parsed[arg.lstrip("-")] = argv[i + 1]
            i += 2
        elif arg == "--allowedTools":
            parsed["tools"] = argv[i + 1 :]
            i = len(argv)
        else:
            parsed.setdefault("other", []).append(arg)  # type: ignore[union-attr]
            i += 1
    return parsed


def assistant(model: str, content: list[dict[str, object]], **extra: object) -> None:
    out(
        {
            "type": "assistant",
            "message": {
                "id": f"msg_{uuid.uuid4().hex[:20]}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": None,
                "usage": {"input_tokens": 4, "output_tokens": 20},
            },
            "parent_tool_use_id": None,
            "session_id": SESSION,
            **extra,
        }
    )


def result(text: str, *, subtype: str = "success", is_error: bool = False, **extra: object) -> None:
    out(
        {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": 1234,
            "duration_api_ms": 1100,
            "num_turns": 2,
            "result": text,
            "stop_reason": "end_turn",
            "session_id": SESSION,
            "total_cost_usd": COST,
            "usage": USAGE,
            "permission_denials": [],
            "uuid": str(uuid.uuid4()),
            **extra,
        }
    )


def main() -> int:
    given = args(sys.argv[1:])
    if os.environ.get("FAKE_CLAUDE_ARGV"):
        with open(os.environ["FAKE_CLAUDE_ARGV"], "w") as f:
            json.dump({"argv": sys.argv[1:], "cwd": os.getcwd()}, f)
    if given.get("output-format") != "stream-json" or "--verbose" not in sys.argv:
        print(
            "Error: this stand-in only speaks --output-format stream-json --verbose",
            file=sys.stderr,
        )
        return 1
    prompt = str(given.get("prompt", ""))
    marker = re.search(r"\[fake:([a-z_]+)\]", prompt)
    mode = marker.group(1) if marker else os.environ.get("FAKE_CLAUDE_MODE", "success")
    model = str(given.get("model") or "claude-sonnet-4-5-20250929")
    out(
        {
            "type": "system",
            "subtype": "init",
            "cwd": os.getcwd(),
            "session_id": SESSION,
            "tools": given["tools"] or ["Bash", "Read", "Edit"],
            "mcp_servers": [],
            "model": model,
            "permissionMode": "default",
            "apiKeySource": "none",
            "uuid": str(uuid.uuid4()),
        }
    )
    if mode == "malformed":
        print("this is not json", flush=True)
    if mode == "exit_nonzero":
        print("fatal: the stand-in was told to fail", file=sys.stderr)
        return 2
    if mode == "rate_limit":
        reset = int(time.time() + float(os.environ.get("FAKE_CLAUDE_RESET", "30")))
        out(
            {
                "type": "rate_limit_event",
                "rate_limit_info": {
                    "status": "rejected",
                    "resetsAt": reset,
                    "rateLimitType": "five_hour",
                },
                "uuid": str(uuid.uuid4()),
                "session_id": SESSION,
            }
        )
        assistant(
            model, [{"type": "text", "text": "API Error: Rate limit reached"}], error="rate_limit"
        )
        result("Claude AI usage limit reached", is_error=True, api_error_status=429)
        return 1
    if mode == "slow":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        if os.environ.get("FAKE_CLAUDE_PIDFILE"):
            with open(os.environ["FAKE_CLAUDE_PIDFILE"], "w") as f:
                f.write(f"{os.getpid()} {child.pid}")
        for turn in range(int(os.environ.get("FAKE_CLAUDE_TURNS", "1000"))):
            assistant(model, [{"type": "text", "text": f"still thinking ({turn})"}])
            time.sleep(float(os.environ.get("FAKE_CLAUDE_DELAY", "0.05")))
    assistant(model, [{"type": "text", "text": "Let me look at the files."}])
    tool_id = f"toolu_{uuid.uuid4().hex[:20]}"
    assistant(
        model,
        [{"type": "tool_use", "id": tool_id, "name": "Read", "input": {"file_path": "README.md"}}],
    )
    out(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "..."}],
            },
            "parent_tool_use_id": None,
            "session_id": SESSION,
        }
    )
    if mode == "no_result":
        return 0
    if mode == "is_error":
        result("", subtype="error_during_execution", is_error=True, errors=["the tool crashed"])
        return 1
    if mode == "max_turns":
        result("", subtype="error_max_turns", is_error=True)
        return 1
    reply = f"done: {prompt}"
    assistant(model, [{"type": "text", "text": reply}])
    result(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
