"""`agentdeck holds` and `agentdeck show` of a held task: the one table of holds, as the
control centre shows it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agentdeck.core.clock import SystemClock
from agentdeck.core.holds import CapabilityHolds
from agentdeck.core.ports import BreakerRecord
from agentdeck.core.settings import Settings
from agentdeck.tui.cli import main
from agentdeck.tui.wiring import registry_only

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for var in ("AGENTDECK_BUS_URL", "AGENTDECK_STORE_URL", "AGENTDECK_REGISTRY_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _hold(paused: str, limited: str, seconds: float) -> None:
    async def go() -> None:
        clock = SystemClock()
        async with registry_only(Settings.load(config_path=None), clock) as registry:
            holds = CapabilityHolds(registry, clock, refresh=0)
            await holds.set(paused, paused=True, actor="ann@ops")
            await holds.rate_limit(limited, clock.now() + seconds, "429 from the provider")

    asyncio.run(go())


def test_holds_lists_kind_reason_and_time_left(home: Path) -> None:
    """Nothing held: (none); then the pause and the rate limit, as a table and as JSON."""
    assert cli("holds").output.strip() == "(none)"
    _hold("echo", "llm", 600)
    shown = cli("holds").output.splitlines()
    assert shown[0].split() == ["CAPABILITY", "KIND", "REASON", "SINCE", "UNTIL", "LEFT"]
    assert shown[1].startswith("echo") and "paused by ann@ops" in shown[1]
    assert shown[1].endswith("until resumed")
    assert shown[2].startswith("llm") and "429 from the provider" in shown[2]
    assert shown[2].endswith(("10m00s", "9m59s", "9m58s"))
    data = json.loads(cli("holds", "--json").output)
    assert [(h["capability"], h["kind"]) for h in data] == [
        ("echo", "paused"),
        ("llm", "rate_limited"),
    ]
    assert data[0]["left_seconds"] is None
    assert 590 < data[1]["left_seconds"] <= 600
    assert data[1]["until"] > time.time()


def test_show_of_a_held_task_names_its_hold(home: Path) -> None:
    """A ready task whose capability is held says why it waits; JSON carries the same."""
    wf = cli("submit", str(ROOT / "examples" / "a_to_b.yaml")).output.strip()
    before = cli("show", f"{wf}/a").output
    assert "held" not in before
    _hold("echo", "other", 60)
    shown = cli("show", f"{wf}/a").output
    assert "      held  echo paused: paused by ann@ops (until resumed)" in shown
    assert "held" not in cli("show", f"{wf}/b").output  # blocked: not yet startable
    data = json.loads(cli("show", f"{wf}/a", "--json").output)
    assert [h["reason"] for h in data["holds"]] == ["paused by ann@ops"]


def _open_breaker(capability: str, opened_ago: float) -> float:
    """Write an open capability breaker, as the scheduler does after 5 failures; when it
    opened."""

    async def go() -> float:
        clock = SystemClock()
        opened = clock.now() - opened_ago
        data = {"opened_at": opened, "reason": "5 failures in a row (threshold 5)"}
        async with registry_only(Settings.load(config_path=None), clock) as registry:
            record = BreakerRecord(f"capability:{capability}", "open", data, 1)
            await registry.put_breaker(record, None)
        return opened

    return asyncio.run(go())


def test_an_open_breaker_is_a_hold_until_it_half_opens(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`holds` and `show` list an open breaker's hold: the failures it counted, and the end of
    the capability's cool-down (its own policy); turned off, breakers hold nothing."""
    (home / "agentdeck.toml").write_text("[breakers.capabilities.echo]\ncool_down = 120\n")
    wf = cli("submit", str(ROOT / "examples" / "a_to_b.yaml")).output.strip()
    opened = _open_breaker("echo", 20)
    shown = cli("holds").output.splitlines()
    assert shown[1].split()[:2] == ["echo", "breaker"]
    assert "5 failures in a row (threshold 5)" in shown[1]
    assert shown[1].endswith(("1m40s", "1m39s", "1m38s"))
    data = json.loads(cli("holds", "--json").output)
    assert data[0]["until"] == opened + 120 and data[0]["since"] == opened
    assert "held  echo breaker: 5 failures in a row" in cli("show", f"{wf}/a").output
    monkeypatch.setenv("AGENTDECK_BREAKERS__ENABLED", "false")
    assert cli("holds").output.strip() == "(none)"
