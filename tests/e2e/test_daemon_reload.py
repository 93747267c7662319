"""SIGHUP to a running daemon, or the ``reload`` operator action (``agentdeck reload``), reloads
its capability limits and label budgets, and nothing else: it keeps running; a bad file is one
error line (and the action's error) and the old values stay."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_embedded_daemon import (  # noqa: F401 - the fixture
    AGENTDECK,
    CONFIG,
    ROOT,
    Node,
    node,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def logged(log: Path, event: str, timeout: float = 30) -> dict[str, object]:
    """The first JSON log line of ``event`` in ``log``, waiting for it (a real process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == event:
                found: dict[str, object] = json.loads(line)
                return found
        time.sleep(0.05)
    raise AssertionError(f"no {event} in {log}:\n{log.read_text()[-2000:]}")


def test_sighup_reloads_limits_and_a_bad_file_keeps_them(node: Node) -> None:  # noqa: F811
    """Taking the lease re-reads the file (nothing changed since the start); the file's new
    limit and budget are logged as changed; a bad value is named once; the daemon runs on,
    and ends cleanly on SIGTERM."""
    daemon = node.start_daemon()
    log = node.home / "daemon-0.log"
    logged(log, "leader_elected")
    assert logged(log, "config_reread_on_lead")["changes"] == []  # its file, read at the lease
    node.config.write_text(
        CONFIG + '[capability_limits.echo]\nmax_concurrency = 2\n[budgets."team=a"]\nusd = 5\n'
    )
    daemon.send_signal(signal.SIGHUP)
    assert logged(log, "limits_reloaded")["changes"] == [
        "capability_limits.echo: - -> max_concurrency=2",
        'budgets."team=a": - -> usd=5.0',
    ]
    node.config.write_text(CONFIG + "[capability_limits.echo]\nrequests_per_minute = -1\n")
    daemon.send_signal(signal.SIGHUP)
    error = str(logged(log, "config_reload_failed")["error"])
    assert "capability_limits.echo.requests_per_minute" in error and "(got -1)" in error
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_the_reload_action_reloads_the_daemons_file_and_reports_a_bad_one(
    node: Node,  # noqa: F811
) -> None:
    """`agentdeck reload`, run with a config file of its own (an operator's), makes the
    daemon's leader re-read the daemon's file: the CLI prints what changed; a bad value is the
    CLI's error (exit 1) naming it, the daemon keeps its limits and runs on."""
    daemon = node.start_daemon()
    log = node.home / "daemon-0.log"
    logged(log, "leader_elected")
    operator = node.home / "operator.toml"  # the same Store (AGENTDECK_HOME), not the same file
    operator.write_text('log_format = "json"\n')

    def reload() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AGENTDECK, "--config", str(operator), "reload", "--timeout", "30"],
            cwd=ROOT,
            env=node.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    node.config.write_text(CONFIG + "[capability_limits.echo]\nmax_concurrency = 2\n")
    done = reload()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("reloaded the limits on ")
    assert done.stdout.endswith(": capability_limits.echo: - -> max_concurrency=2\n")
    node.config.write_text(CONFIG + "[capability_limits.echo]\nrequests_per_minute = -1\n")
    failed = reload()
    assert failed.returncode == 1
    assert "capability_limits.echo.requests_per_minute" in failed.stderr
    assert "(got -1)" in failed.stderr and "are kept" in failed.stderr
    assert "config_reload_failed" in log.read_text()
    node.config.write_text(CONFIG + "[capability_limits.echo]\nmax_concurrency = 2\n")
    assert reload().stdout.endswith(": nothing changed\n")  # the bad file changed nothing
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_a_standby_that_takes_over_runs_on_the_file_the_operator_changed(
    node: Node,  # noqa: F811
) -> None:
    """Two daemons on one Store and one file; the file changes and no process is signalled:
    the leader is SIGKILLed, and the standby, taking the lease, logs the new limit as changed."""
    fast = CONFIG.replace(
        "poll_interval = 0.05", "poll_interval = 0.05\nlease_ttl = 1.5\nheartbeat_interval = 0.5"
    )
    node.config.write_text(fast)
    started = []
    for name, event in (("node-a", "leader_elected"), ("node-b", "agent_started")):
        node.env = {**node.env, "AGENTDECK_NODE": name}  # (the lease's holder: one each)
        started.append(node.start_daemon())
        logged(node.home / f"daemon-{len(started) - 1}.log", event)  # leading / standing by
    leader, standby = started
    node.config.write_text(fast + "[capability_limits.echo]\nmax_concurrency = 2\n")
    leader.kill()
    leader.wait(10)
    log = node.home / "daemon-1.log"
    logged(log, "leader_elected")
    assert logged(log, "config_reread_on_lead")["changes"] == [
        "capability_limits.echo: - -> max_concurrency=2"
    ]
    assert standby.poll() is None
    standby.send_signal(signal.SIGTERM)
    assert standby.wait(30) == 0
