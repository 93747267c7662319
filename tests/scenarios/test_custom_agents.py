"""A user's own agent, written as a decorated Python function and declared in the config."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agentdeck.core.clock import SystemClock
from agentdeck.core.settings import Settings
from agentdeck.core.spec import SpecLimits, parse_spec
from agentdeck.core.states import WorkflowStatus
from agentdeck.tui.wiring import build_runtime

MODULE = """
from agentdeck.agents.decorator import agent

@agent("shout", concurrency=2)
def shout(ctx):
    return {"text": ctx.input["text"].upper()}

@agent("count")
async def count(ctx):
    return {"length": len(ctx.upstream["loud"]["text"])}
"""

SPEC = """
name: custom
tasks:
  - {key: loud, capability: shout, input: {text: "hello"}}
  - {key: size, capability: count, needs: [loud]}
"""


async def test_decorated_functions_run_as_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync and async @agent functions in a module named by agent_modules serve their
    capabilities, and one's output reaches the next."""
    (tmp_path / "deck_user_agents.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    settings = Settings.load(
        config_path=None,
        agent_modules=["deck_user_agents"],
        scheduler={"poll_interval": 0.05},
    )
    async with build_runtime(settings, clock=SystemClock()) as rt:
        names = {w.name.split("@")[0] for w in rt.services}  # type: ignore[attr-defined]
        assert {"shout", "count"} <= names
        wf = await rt.client.submit(parse_spec(SPEC, limits=SpecLimits()))
        done = await rt.client.wait(wf.id, 30)
        assert done.status == WorkflowStatus.SUCCEEDED
        size = await rt.store.get_task(f"{wf.id}/size")
        assert size.output == {"length": 5}
