"""The command line as a user meets it: tables, --json, one-line errors and exit codes."""

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
    for var in ("AGENTDECK_BUS_URL", "AGENTDECK_STORE_URL", "AGENTDECK_REGISTRY_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_submit_prints_the_id_and_show_lists_every_task(home: Path) -> None:
    """Submitting prints the workflow id; show and tasks list its tasks and their states."""
    submitted = cli("submit", str(ROOT / "examples" / "diamond.yaml"))
    assert submitted.exit_code == 0, submitted.output
    wf = submitted.output.strip()
    shown = cli("show", wf)
    assert shown.exit_code == 0
    assert f"workflow {wf} diamond: running" in shown.output
    assert f"{wf}/start" in shown.output and "ready" in shown.output
    listed = json.loads(cli("tasks", "--workflow", wf, "--json").output)
    assert {t["key"]: t["status"] for t in listed} == {
        "start": "ready",
        "left": "blocked",
        "right": "blocked",
        "join": "blocked",
    }
    workflows = json.loads(cli("workflows", "--json").output)
    assert [(w["id"], w["tasks"], w["done"]) for w in workflows] == [(wf, 4, 0)]


def test_show_of_a_task_prints_its_history(home: Path) -> None:
    """`show WF/KEY` prints the task's fields and its event history."""
    wf = cli("submit", str(ROOT / "examples" / "a_to_b.yaml")).output.strip()
    shown = cli("show", f"{wf}/b")
    assert shown.exit_code == 0
    assert "blocked" in shown.output and "created" in shown.output


def test_invalid_spec_lists_every_problem_and_writes_nothing(home: Path) -> None:
    """A bad spec exits 1 with every problem on stderr, and no workflow is created."""
    bad = home / "bad.yaml"
    bad.write_text(
        "name: bad\ntasks:\n"
        "  - {key: a, capability: echo, needs: [b]}\n"
        "  - {key: b, capability: echo, needs: [a]}\n"
        "  - {key: c, capability: Not-Valid, needs: [zzz]}\n"
    )
    result = cli("submit", str(bad))
    assert result.exit_code == 1
    assert "cycle: a -> b -> a" in result.output
    assert "zzz" in result.output and "Not-Valid" in result.output
    assert json.loads(cli("workflows", "--json").output) == []


def test_unknown_target_is_one_clear_error(home: Path) -> None:
    """Showing or cancelling something that does not exist says so and exits 1."""
    result = cli("show", "nope")
    assert result.exit_code == 1
    assert "no workflow or task 'nope'" in result.output


def test_command_without_a_scheduler_says_it_is_queued(home: Path) -> None:
    """With no daemon running, cancel waits briefly, then says it is queued for the scheduler."""
    wf = cli("submit", str(ROOT / "examples" / "a_to_b.yaml")).output.strip()
    result = cli("cancel", wf, "--timeout", "0.2")
    assert result.exit_code == 1
    assert "no scheduler carried it out" in result.output
    queued = cli("pause", wf, "--no-wait")
    assert queued.exit_code == 0 and queued.output.startswith("queued pause")


def test_config_prints_effective_settings_without_passwords(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config` shows the URLs in force with any password replaced."""
    monkeypatch.setenv("AGENTDECK_STORE_URL", "postgresql://deck:s3cret@db.example:5432/deck")
    result = cli("config", "--json")
    assert result.exit_code == 0
    assert "s3cret" not in result.output
    assert json.loads(result.output)["store_url"].startswith("postgresql://deck:***@db.example")


def test_unknown_backend_scheme_names_the_field_and_known_schemes(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store URL with an unknown scheme fails with the field and the schemes it knows."""
    monkeypatch.setenv("AGENTDECK_STORE_URL", "mongodb://u:pw@h/db")
    result = cli("workflows")
    assert result.exit_code != 0
    assert "store_url" in result.output and "sqlite" in result.output
    assert "pw@" not in result.output


def test_malformed_config_file_names_the_file(home: Path) -> None:
    """A TOML file that does not parse is reported with its path, exit code 2."""
    bad = home / "bad.toml"
    bad.write_text("[scheduler\npoll_interval = 1\n")
    result = cli("--config", str(bad), "config")
    assert result.exit_code == 2
    assert "bad.toml" in result.output


def test_agent_on_the_in_process_bus_is_refused(home: Path) -> None:
    """An agent process needs a shared bus; with memory:// it says so and exits 2."""
    result = cli("agent", "--kind", "echo")
    assert result.exit_code == 2
    assert "shared bus" in result.output
    both = cli("agent")
    assert both.exit_code == 2 and "--kind" in both.output
