"""`agentdeck usage` and what `show` says of spending: sums the Store made of the attempts'
usage, by workflow, task, capability, model or label, in a table or JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agentdeck.backends.sqlite.store import SqliteStore
from agentdeck.core.clock import FakeClock
from agentdeck.core.models import Change, Task, Usage, Workflow
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus as W
from agentdeck.tui.cli import main
from agentdeck.tui.cli.usage import parse_since

NOW = 1_800_000_000.0
SONNET = Usage(1_000, 200, 50, 4_000, 0.0125, "claude-sonnet")
UNPRICED = Usage(10, 5, 0, 0, None, "mystery")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose Store holds workflow w1 (label team=search): task a spent SONNET twice
    (two attempts), task b spent UNPRICED once."""
    monkeypatch.setenv("AGENTDECK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for var in ("AGENTDECK_BUS_URL", "AGENTDECK_STORE_URL", "AGENTDECK_REGISTRY_URL"):
        monkeypatch.delenv(var, raising=False)

    async def fill() -> None:
        store = SqliteStore(tmp_path / "agentdeck.db", clock=FakeClock(NOW))
        await store.migrate()
        wf = Workflow("w1", "review", W.RUNNING, NOW, NOW, 2, labels={"team": "search"})
        tasks = [
            Task(f"w1/{k}", "w1", k, "llm", T.DISPATCHED, {}, (), 0, NOW, NOW, attempt=1)
            for k in ("a", "b")
        ]
        await store.create_workflow(wf, tasks)
        inflight = frozenset({T.DISPATCHED, T.RUNNING})
        await store.apply(
            [
                Change(
                    "w1/a", T.DISPATCHED, inflight, attempt=1, values={"attempt": 2}, usage=SONNET
                ),
                Change(
                    "w1/a", T.SUCCEEDED, inflight, attempt=2, values={"output": 1}, usage=SONNET
                ),
                Change(
                    "w1/b", T.SUCCEEDED, inflight, attempt=1, values={"output": 2}, usage=UNPRICED
                ),
            ],
            NOW,
        )
        await store.close()

    asyncio.run(fill())
    return tmp_path


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_usage_by_model_as_json_sums_every_attempt(home: Path) -> None:
    """Two attempts of one model are one row; an unpriced attempt is counted, not hidden."""
    rows = json.loads(cli("usage", "--by", "model", "--json").output)
    assert rows == [
        {
            "model": "claude-sonnet",
            "attempts": 2,
            "input_tokens": 2_000,
            "output_tokens": 400,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 8_000,
            "cost_usd": 0.025,
            "unpriced_attempts": 0,
        },
        {
            "model": "mystery",
            "attempts": 1,
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cost_usd": 0.0,
            "unpriced_attempts": 1,
        },
    ]


def test_usage_tables_by_task_and_label(home: Path) -> None:
    """The table has a row per group and a total; a cost some attempts lack is marked +?."""
    by_task = cli("usage", "--by", "task")
    assert by_task.exit_code == 0
    assert "w1/a" in by_task.output and "$0.0250" in by_task.output
    assert "(all)" in by_task.output and "$0.0250+?" in by_task.output
    by_label = cli("usage", "--by", "label")
    assert "team=search" in by_label.output and "(all)" not in by_label.output


def test_since_keeps_only_later_attempts_and_bad_since_is_one_error(home: Path) -> None:
    """--since in the future leaves nothing; a --since that is no time says the forms."""
    assert "no usage recorded since 2030-01-01" in cli("usage", "--since", "2030-01-01").output
    bad = cli("usage", "--since", "yesterday-ish")
    assert bad.exit_code != 0
    assert "'yesterday-ish' is not a duration ago (30m, 12h, 7d)" in bad.output


def test_show_tells_what_a_workflow_and_a_task_spent(home: Path) -> None:
    """`show WF` has a usage line; `show WF/KEY` the task's own usage."""
    wf = cli("show", "w1").output
    assert "usage: 3 attempt(s), 2,010 in / 405 out tokens" in wf
    assert "(+1 unpriced)" in wf
    task = cli("show", "w1/a").output
    assert "2 attempt(s), 2,000 in / 400 out tokens (cache 100 w / 8,000 r), $0.0250" in task


def test_parse_since_reads_durations_and_dates() -> None:
    """30m, 12h, 7d before now; a date or date-time in UTC."""
    assert parse_since("30m", 10_000.0) == 10_000.0 - 1_800
    assert parse_since("7d", 1e6) == 1e6 - 7 * 86_400
    assert parse_since("1970-01-02", 0) == 86_400
    with pytest.raises(ValueError, match="is not a duration ago"):
        parse_since("soon", 0)


def test_budget_takes_its_value_on_the_command_line(home: Path) -> None:
    """`budget WF usd=10` queues the action with its value; a bad value is refused at once."""
    queued = cli("budget", "w1", "usd=10", "--no-wait")
    assert queued.exit_code == 0, queued.output
    assert "queued budget w1" in queued.output
    bad = cli("budget", "w1", "dollars=ten", "--no-wait")
    assert bad.exit_code != 0
