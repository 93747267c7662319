"""The resilience commands as an operator meets them: breaker list|trip|reset, snapshot
create|list|restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agentdeck.tui.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no ./agentdeck.toml from the repo
    for var in (
        "AGENTDECK_BUS_URL",
        "AGENTDECK_STORE_URL",
        "AGENTDECK_REGISTRY_URL",
        "AGENTDECK_BLOB_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_breaker_trip_is_queued_for_the_leader(home: Path) -> None:
    """Without a daemon, trip queues a command on the full breaker name; list shows none yet."""
    queued = cli("breaker", "trip", "echo", "--no-wait")
    assert queued.exit_code == 0, queued.output
    assert queued.output.startswith("queued trip capability:echo")
    assert json.loads(cli("breaker", "list", "--json").output) == []
    assert "breaker list" not in cli("breaker", "list").output


def test_breaker_with_a_bad_name_is_refused(home: Path) -> None:
    """A name that is not capability:X, agent:ID or a capability exits 1 saying what is allowed."""
    result = cli("breaker", "reset", "queue:x", "--no-wait")
    assert result.exit_code == 1
    assert "is not capability:<name>, agent:<id>" in result.output


def test_snapshot_create_list_restore(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot of one store restores into an empty one; a second restore is refused."""
    wf = cli("submit", str(ROOT / "examples" / "diamond.yaml")).output.strip()
    created = cli("snapshot", "create", "--json")
    assert created.exit_code == 0, created.output
    info = json.loads(created.output)
    assert info["counts"]["tasks"] == 4
    listed = cli("snapshot", "list")
    assert info["id"] in listed.output
    monkeypatch.setenv("AGENTDECK_STORE_URL", f"sqlite:///{home}/restored.db")
    restored = cli("snapshot", "restore", info["id"])
    assert restored.exit_code == 0, restored.output
    assert f"restored snapshot {info['id']}" in restored.output
    assert [w["id"] for w in json.loads(cli("workflows", "--json").output)] == [wf]
    again = cli("snapshot", "restore", info["id"])
    assert again.exit_code == 1 and "not empty" in again.output


def test_every_scheduler_setting_reaches_the_scheduler() -> None:
    """A `[scheduler]` value set in config is the one the daemon's scheduler runs with, for
    every setting the scheduler has (none silently left at the scheduler's own default)."""
    import dataclasses

    from agentdeck.core.scheduler import SchedulerConfig
    from agentdeck.core.settings import SchedulerSettings, Settings
    from agentdeck.tui.wiring import scheduler_config

    shared = [
        f.name
        for f in dataclasses.fields(SchedulerConfig)
        if f.name in SchedulerSettings.model_fields
    ]
    assert "repair_interval" in shared
    defaults = SchedulerSettings()
    changed = {name: getattr(defaults, name) * 2 for name in shared}
    config = scheduler_config(Settings(scheduler=SchedulerSettings(**changed)))
    assert {name: getattr(config, name) for name in shared} == changed
