"""The composition root decides once what this process runs, and the event feed it fills."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agentdeck.core.messages import Event
from agentdeck.core.settings import Settings
from agentdeck.tui.compose import Mode, mode, node
from agentdeck.tui.demo import DemoFeeder
from agentdeck.tui.feed import LOG_CAP, RATE_WINDOW, EventFeed


def test_the_mode_is_decided_by_settings_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing configured is a node; a configured cluster is attached unless --scheduler or
    --demo asks for a node in this process too."""
    assert mode(Settings.load(config_path=None, home=tmp_path)) is Mode.NODE
    monkeypatch.setenv("AGENTDECK_REGISTRY_URL", f"sqlite:///{tmp_path}/registry.db")
    cluster = Settings.load(config_path=None, home=tmp_path)
    assert mode(cluster) is Mode.ATTACHED
    assert mode(cluster, scheduler=True) is Mode.NODE
    assert mode(cluster, demo=True) is Mode.NODE


def _task(at: float, kind: str) -> Event:
    return Event(topic="task", at=at, data={"kind": kind, "task_id": "w/a", "workflow_id": "w"})


def test_the_feed_counts_per_second_and_keeps_a_capped_log() -> None:
    """Successes and failures land in the second they happened, the window slides, and the
    log keeps only the newest LOG_CAP lines."""
    feed = EventFeed()
    feed.record(_task(100.2, "succeeded"))
    feed.record(_task(100.9, "succeeded"))
    feed.record(_task(102.0, "failed"))
    feed.record(_task(102.5, "retrying"))
    done, failed = feed.rates()
    assert len(done) == len(failed) == RATE_WINDOW
    assert done[-3:] == [2, 0, 0] and failed[-3:] == [0, 0, 2]
    for n in range(LOG_CAP + 5):
        feed.record(Event(topic="workflow", at=103.0, data={"workflow_id": f"w{n}", "name": "x"}))
    assert len(feed.logbook) == LOG_CAP
    assert feed.logbook[-1].workflow == f"w{LOG_CAP + 4}"


async def test_the_demo_feeds_only_examples_its_fleet_can_run(tmp_path: Path) -> None:
    """The demo node's feeder submits the examples its agents serve: the built-in fleet's and,
    with its simulated AI agent serving ``claude``, the Claude example too."""
    settings = Settings.load(config_path=None, home=tmp_path)
    async with node(settings, demo=True) as (runtime, _):
        (feeder,) = [s for s in runtime.services if isinstance(s, DemoFeeder)]
        assert feeder.capabilities == {"echo", "sleep", "chaos", "claude"}
        (agent,) = [s for s in runtime.services if getattr(s, "name", "").startswith("claude")]
        assert agent.name.startswith("claude-simulated@")
        await runtime.store.migrate()
        feeder.interval = 0
        with capture_logs() as logs:
            task = asyncio.create_task(feeder.run())
            while feeder.submitted < 8:
                await asyncio.sleep(0.01)
            await feeder.stop(0)
            await task
        assert not [e for e in logs if e["event"] == "demo_example_skipped"]
        names = {w.name for w in await runtime.store.list_workflows(limit=100)}
        assert "claude-review" in names and len(names) >= 5


async def test_a_configured_claude_agent_replaces_the_simulated_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real fleet serving ``claude`` gets no simulated agent beside it (made-up spending
    never mixes with real), and the log says so."""
    (tmp_path / "agentdeck.toml").write_text(
        '[[agents]]\nkind = "echo"\nname = "my-llm"\ncapabilities = ["claude"]\n'
    )
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(config_path=None, home=tmp_path)
    with capture_logs() as logs:
        async with node(settings, demo=True) as (runtime, _):
            names = [getattr(s, "name", "") for s in runtime.services]
    assert not [n for n in names if n.startswith("claude-simulated")]
    assert [e["capability"] for e in logs if e["event"] == "demo_simulated_agent_skipped"] == [
        "claude"
    ]
