"""AI agent fleets on the embedded default: the claude_review example end to end, with the
stand-in CLI as the ``claude`` kind's command (nothing reaches the internet)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentdeck.core.clock import SystemClock
from agentdeck.core.messages import Event, decode
from agentdeck.core.runtime import Runtime
from agentdeck.core.settings import Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import WorkflowStatus
from agentdeck.tui.wiring import build_runtime
from tests.fakes.anthropic_server import AnthropicServer

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = str(ROOT / "tests" / "fakes" / "fake_claude.py")


@pytest.fixture
async def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    """The embedded default with three ``claude`` agents running the stand-in CLI."""
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    settings = Settings.load(
        config_path=None,
        agents=[
            {
                "kind": "claude",
                "concurrency": 3,
                "options": {"command": [sys.executable, FAKE_CLAUDE], "kill_grace": 1.0},
            }
        ],
        scheduler={"poll_interval": 0.05},
    )
    async with build_runtime(settings, clock=SystemClock()) as rt:
        yield rt


async def test_the_claude_review_example_runs_end_to_end(runtime: Runtime) -> None:
    """triage → three reviewers in parallel → summary: each prompt is filled from the
    outputs it needs, and the agents' streamed text reaches the events stream."""
    events = runtime.bus.subscribe_events()
    text = (ROOT / "examples" / "claude_review.yaml").read_text()
    workflow = await runtime.client.submit(parse_spec(text, fmt="yaml", limits=SpecLimits()))
    done = await runtime.client.wait(workflow.id, 60)
    assert done.status == WorkflowStatus.SUCCEEDED
    tasks = {
        key: await runtime.store.get_task(f"{workflow.id}/{key}")
        for key in ("triage", "security", "tests", "design", "summary")
    }
    triage = tasks["triage"].output["result"]
    assert triage.startswith("done: You are triaging a change")
    for reviewer in ("security", "tests", "design"):
        assert tasks[reviewer].output["result"].endswith(f"The triage said: {triage}")
        assert tasks[reviewer].output["is_error"] is False
    summary = tasks["summary"].output["result"]
    for reviewer in ("security", "tests", "design"):
        assert tasks[reviewer].output["result"] in summary
    outputs = []
    while True:
        try:
            event = decode(await asyncio.wait_for(anext(events), 0.5), Event)
        except TimeoutError:
            break
        if event.topic == "output":
            outputs.append(event.data)
    assert {o["task_id"] for o in outputs} == {t.id for t in tasks.values()}


async def test_a_template_naming_a_missing_field_fails_the_task_once(runtime: Runtime) -> None:
    """A prompt naming a field the upstream output lacks: the task fails at once, not
    retried, with the field named; its dependents are skipped."""
    spec = """
name: bad-template
tasks:
  - {key: a, capability: claude, input: {prompt: "hello"}}
  - {key: b, capability: claude, needs: [a], input: {prompt: "use {a.verdict}"}}
"""
    workflow = await runtime.client.submit(parse_spec(spec, fmt="yaml", limits=SpecLimits()))
    done = await runtime.client.wait(workflow.id, 30)
    assert done.status == WorkflowStatus.FAILED
    b = await runtime.store.get_task(f"{workflow.id}/b")
    assert b.error is not None and b.error.kind == "bad_input"
    assert "{a.verdict}" in b.error.message and "has no field 'verdict'" in b.error.message
    assert b.attempt == 1


async def test_a_claude_task_hands_its_result_to_an_anthropic_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both kinds in one workflow on the embedded default: the Messages API stand-in answers
    the ``anthropic`` task, whose prompt quotes the ``claude`` task's result."""
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-scenario-secret")
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    spec = """
name: two-kinds
tasks:
  - {key: draft, capability: claude, input: {prompt: "draft a haiku"}}
  - key: polish
    capability: anthropic
    needs: [draft]
    input: {prompt: "Polish: {draft.result}", system: "You edit poems."}
"""
    with AnthropicServer() as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        settings = Settings.load(
            config_path=None,
            agents=[
                {"kind": "claude", "options": {"command": [sys.executable, FAKE_CLAUDE]}},
                {"kind": "anthropic", "options": {"model": "claude-haiku-4-5"}},
            ],
            scheduler={"poll_interval": 0.05},
        )
        async with build_runtime(settings, clock=SystemClock()) as rt:
            wf = await rt.client.submit(parse_spec(spec, fmt="yaml", limits=SpecLimits()))
            done = await rt.client.wait(wf.id, 60)
            polish = await rt.store.get_task(f"{wf.id}/polish")
    assert done.status == WorkflowStatus.SUCCEEDED
    assert polish.output["text"] == "echo: Polish: done: draft a haiku"
    assert api.requests[0]["body"]["system"] == "You edit poems."
