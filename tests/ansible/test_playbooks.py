"""The Ansible playbooks install, configure, deploy and roll back agentdeck for real.

They run against this machine (``ansible_connection=local``) into a temporary root: releases
are real virtualenvs with the package built from this checkout, the configuration is checked
by the installed program, and ``current`` / ``previous`` are switched as on a server. What
needs an init system (starting units) is switched off (``agentdeck_manage_service=false``):
the units are written and checked with ``systemd-analyze verify`` instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
SECRET = "s3cret-pw"

#: Seconds one playbook run may take: a bound for a hang, not a speed check. A rolling deploy
#: installs a release on each of two nodes and waits for each daemon; on the shared 2-core
#: machine at load 7 it overran the former bound of 240 s.
PLAY_LIMIT = 600

pytestmark = pytest.mark.timeout(3 * PLAY_LIMIT)


class Site:
    """A temporary root the playbooks deploy into, and how to run them on it."""

    def __init__(self, base: Path, wheel: Path, wheelhouse: Path) -> None:
        self.base = base
        self.root = base / "opt/agentdeck"
        self.etc = base / "etc/agentdeck"
        self.home = base / "var/lib/agentdeck"
        self.units = base / "etc/systemd/system"
        self.inventory = base / "inventory.ini"
        python = sys.executable
        self.inventory.write_text(
            "[agentdeck_nodes]\n"
            f"localhost ansible_connection=local ansible_python_interpreter={python}\n"
            "[monitoring]\n"
            f"localhost ansible_connection=local ansible_python_interpreter={python}\n"
        )
        self.vars: dict[str, Any] = {
            "ansible_become": False,
            "agentdeck_package": str(wheel),
            # The dependencies from the session's wheelhouse (the way docs/deploy.md offers for
            # hosts without an index): each release is still a fresh virtualenv that pip
            # installs the package into, without resolving against an index every time.
            # --no-compile: pip does not byte-compile every module of ~60 packages (about 4 s
            # of CPU an install); the program compiles what it imports when it first runs.
            "agentdeck_pip_args": f"--no-index --find-links {wheelhouse} --no-compile",
            "agentdeck_release": "r1",
            "agentdeck_python": python,
            "agentdeck_root": str(self.root),
            "agentdeck_etc": str(self.etc),
            "agentdeck_home": str(self.home),
            "agentdeck_systemd_dir": str(self.units),
            "agentdeck_manage_user": False,
            "agentdeck_user": "root",
            "agentdeck_group": "root",
            "agentdeck_manage_service": False,
            "agentdeck_settings": {
                "node": "node-1",
                "scheduler": {"lease_ttl": 6.0},
                "agents": [{"kind": "echo", "concurrency": 2}],
                "retry": {"http": {"max_attempts": 5}},
            },
            "agentdeck_secrets": {
                "AGENTDECK_STORE_URL": f"postgresql://deck:{SECRET}@db.internal/agentdeck"
            },
            "agentdeck_agent_processes": [
                {
                    "name": "du",
                    "kind": "shell",
                    "concurrency": 2,
                    "metrics_port": 9465,
                    "options": {"argv": ["du", "-sh", "{path}"], "cwd": "/srv"},
                }
            ],
            "observability_prometheus_dir": str(base / "etc/prometheus"),
            "observability_grafana_provisioning_dir": str(base / "etc/grafana/provisioning"),
            "observability_grafana_dashboards_dir": str(base / "var/lib/grafana/agentdeck"),
            "observability_promtail_config": str(base / "etc/promtail/config.yml"),
            "observability_manage_services": False,
        }

    def play(
        self, playbook: str, *, limit: str | None = None, **overrides: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``playbook`` with the site's variables (and ``overrides``), on ``limit``'s
        hosts only if given."""
        extra = self.base / "vars.json"
        extra.write_text(json.dumps({**self.vars, **overrides}))
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.base / ".ansible"),
            "ANSIBLE_LOCAL_TEMP": str(self.base / ".ansible/tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "1",
            # The host's facts are gathered by the first play on this root and kept for the
            # later plays and runs (no role reads a fact that changes between runs; each
            # gathering costs seconds on a busy machine).
            "ANSIBLE_GATHERING": "smart",
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.base / ".ansible/facts"),
        }
        return subprocess.run(
            [
                str(PLAYBOOK),
                *(["--limit", limit] if limit else []),
                *("-i", str(self.inventory), "-e", f"@{extra}", playbook),
            ],
            cwd=ANSIBLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=PLAY_LIMIT,
        )

    def link(self, name: str) -> str:
        """Which release ``current`` or ``previous`` points to."""
        return os.readlink(self.root / name).rsplit("/", 1)[-1]

    def program(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed program, run as its unit runs it (config and secrets from the files)."""
        env = {"PATH": os.environ["PATH"], "HOME": str(self.base)}
        for line in (self.etc / "agentdeck.env").read_text().splitlines():
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                env[key] = json.loads(value)
        env["AGENTDECK_CONFIG"] = str(self.etc / "agentdeck.toml")
        return subprocess.run(
            [str(self.root / "current/bin/agentdeck"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )


def need(tool: str, package: str) -> str:
    """The path of ``tool``; skip without it (fail in CI, where scripts/tools.sh installs it)."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{tool} is not installed (Debian: apt-get install {package})")
        pytest.skip(f"{tool} is not installed (Debian: apt-get install {package})")
    return path


def ok(run: subprocess.CompletedProcess[str]) -> str:
    """The run's output, after checking it succeeded and printed no secret."""
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert SECRET not in run.stdout + run.stderr
    return run.stdout


def changed(output: str) -> int:
    """The ``changed=`` count of the play recap."""
    recap = output[output.rindex("PLAY RECAP") :]
    return sum(int(part.split("=")[1]) for part in recap.split() if part.startswith("changed="))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, wheel: Path, wheelhouse: Path) -> Site:
    """site.yml run once on a fresh root (release r1)."""
    base = tmp_path_factory.mktemp("ansible")
    s = Site(base, wheel, wheelhouse)
    ok(s.play("site.yml"))
    return s


def test_every_playbook_parses() -> None:
    """site.yml, deploy.yml, rollback.yml and access.yml pass ``--syntax-check`` with the
    example inventory."""
    for playbook in ("site.yml", "deploy.yml", "rollback.yml", "access.yml"):
        run = subprocess.run(
            [str(PLAYBOOK), "--syntax-check", "-i", "inventory.example.ini", playbook],
            cwd=ANSIBLE,
            env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_site_installs_a_release_the_program_runs_with_its_configuration(site: Site) -> None:
    """A release in its own virtualenv, `current` on it, agentdeck.toml that the installed
    program reads (the settings given, the secrets from agentdeck.env, redacted when shown)."""
    assert site.link("current") == "r1"
    assert not (site.root / "previous").exists()
    assert (site.root / "releases/r1/.complete").exists()
    shown = site.program("config")
    assert shown.returncode == 0, shown.stderr
    assert 'node = "node-1"' in shown.stdout
    assert '"lease_ttl": 6.0' in shown.stdout
    assert '"kind": "echo"' in shown.stdout and '"concurrency": 2' in shown.stdout
    assert '"max_attempts": 5' in shown.stdout
    assert "metrics_port = 9464" in shown.stdout
    assert "postgresql://deck:***@db.internal/agentdeck" in shown.stdout
    assert SECRET not in shown.stdout


def test_secrets_are_kept_apart_and_readable_by_root_only(site: Site) -> None:
    """The password is in agentdeck.env (0600), not in agentdeck.toml (0640)."""
    env, toml = site.etc / "agentdeck.env", site.etc / "agentdeck.toml"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert stat.S_IMODE(toml.stat().st_mode) == 0o640
    assert SECRET in env.read_text()
    assert SECRET not in toml.read_text()


def test_units_run_the_current_release_and_pass_systemd_analyze(site: Site) -> None:
    """The daemon's unit and one per agent process; systemd's own checker accepts them."""
    daemon = (site.units / "agentdeck.service").read_text()
    agent = (site.units / "agentdeck-agent-du.service").read_text()
    assert f"ExecStart={site.root}/current/bin/agentdeck --daemon" in daemon
    assert f"EnvironmentFile=-{site.etc}/agentdeck.env" in daemon
    assert "KillSignal=SIGTERM" in daemon
    assert (
        "agent --kind shell --name du --concurrency 2 --grace 30.0 --metrics-port 9465"
        """ --option 'argv=["du", "-sh", "{path}"]' --option cwd=/srv"""
    ) in agent
    analyze = need("systemd-analyze", "systemd")
    for unit in ("agentdeck.service", "agentdeck-agent-du.service"):
        run = subprocess.run(
            [analyze, "verify", str(site.units / unit)], capture_output=True, text=True
        )
        problems = [
            line
            for line in (run.stdout + run.stderr).splitlines()
            # (no systemd runs here: it cannot look up the units this one is ordered after)
            if line.strip() and "network-online.target" not in line
        ]
        assert problems == [], problems


def test_prometheus_targets_and_grafana_dashboards_come_from_the_inventory(site: Site) -> None:
    """One daemon target and one agent target per node; the dashboards provisioned from the
    folder they were copied to."""
    targets = yaml.safe_load((site.base / "etc/prometheus/agentdeck-targets.yml").read_text())
    assert targets == [
        {"targets": ["localhost:9464"], "labels": {"role": "daemon"}},
        {"targets": ["localhost:9465"], "labels": {"role": "agent"}},
    ]
    # Prometheus's own checker reads the scrape job and, through it, the targets file.
    promtool = need("promtool", "prometheus")
    scrape = (site.base / "etc/prometheus/agentdeck-scrape.yml").read_text()
    config = site.base / "prometheus.yml"
    config.write_text(
        scrape.replace(
            "/etc/prometheus/agentdeck-targets.yml",
            str(site.base / "etc/prometheus/agentdeck-targets.yml"),
        )
    )
    run = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    dashboards = site.base / "var/lib/grafana/agentdeck"
    assert len(list(dashboards.glob("agentdeck-*.json"))) == 4
    provisioning = yaml.safe_load(
        (site.base / "etc/grafana/provisioning/agentdeck.yml").read_text()
    )
    assert provisioning["providers"][0]["options"]["path"] == str(dashboards)
    assert "journal" in (site.base / "etc/promtail/config.yml").read_text()


def test_running_site_again_changes_nothing(site: Site) -> None:
    """Idempotent: a second run of site.yml reports no change."""
    assert changed(ok(site.play("site.yml"))) == 0


def test_deploy_switches_to_a_new_release_and_rollback_goes_back(site: Site) -> None:
    """deploy.yml installs r2 (with other settings) beside r1 and switches to it, r1 becoming
    `previous`; rollback.yml goes back to r1 and its settings, and run again, forward."""
    settings = {**site.vars["agentdeck_settings"], "node": "node-1b"}
    ok(site.play("deploy.yml", agentdeck_release="r2", agentdeck_settings=settings))
    assert (site.link("current"), site.link("previous")) == ("r2", "r1")
    assert 'node = "node-1b"' in site.program("config").stdout
    for current, previous, node in (("r1", "r2", "node-1"), ("r2", "r1", "node-1b")):
        ok(site.play("rollback.yml"))
        assert (site.link("current"), site.link("previous")) == (current, previous)
        assert f'node = "{node}"' in site.program("config").stdout
    ok(site.play("rollback.yml"))
    assert (site.link("current"), site.link("previous")) == ("r1", "r2")


def test_a_bad_setting_stops_the_deploy_with_the_programs_error_and_changes_nothing(
    site: Site,
) -> None:
    """The installed program checks agentdeck.toml before it replaces the old one: a bad value
    fails the run naming it, and the configuration and `current` are as they were."""
    before = (site.etc / "agentdeck.toml").read_text()
    links = (site.link("current"), site.link("previous"))
    bad = {**site.vars["agentdeck_settings"], "metrics_port": -3}
    run = site.play("deploy.yml", agentdeck_release="r3", agentdeck_settings=bad)
    assert run.returncode != 0
    assert "metrics_port: Input should be greater than or equal to 0 (got -3)" in run.stdout
    assert SECRET not in run.stdout + run.stderr
    assert (site.etc / "agentdeck.toml").read_text() == before
    assert (site.link("current"), site.link("previous")) == links


def test_bad_inventory_values_are_refused_by_name_before_anything_is_done(site: Site) -> None:
    """A secret that is not an environment variable name, or a release name that is not a
    folder name: one clear error naming it (never a secret's value), nothing changed."""
    links = (site.link("current"), site.link("previous"))
    run = site.play("site.yml", agentdeck_secrets={"store-url": f"x://u:{SECRET}@h"})
    assert run.returncode != 0
    assert 'agentdeck_secrets key "store-url"' in run.stdout
    assert SECRET not in run.stdout + run.stderr
    run = site.play("deploy.yml", agentdeck_release="../etc")
    assert run.returncode != 0
    assert 'agentdeck_release "../etc" is not allowed' in run.stdout
    assert (site.link("current"), site.link("previous")) == links
    assert not (site.root / "etc").exists()


def test_an_agent_process_taken_out_of_the_inventory_loses_its_unit(site: Site) -> None:
    """Units of agent processes no longer listed are removed (and, with an init system,
    stopped and disabled first); the daemon's stays."""
    assert (site.units / "agentdeck-agent-du.service").exists()
    ok(site.play("site.yml", agentdeck_agent_processes=[]))
    assert not (site.units / "agentdeck-agent-du.service").exists()
    assert (site.units / "agentdeck.service").exists()
    targets = yaml.safe_load((site.base / "etc/prometheus/agentdeck-targets.yml").read_text())
    assert targets == [{"targets": ["localhost:9464"], "labels": {"role": "daemon"}}]


# ----------------------------------------------------------------- with running services

FAKE_SYSTEMCTL = Path(__file__).with_name("fake_systemctl.py")


def free_port() -> int:
    """A TCP port nothing listens on now (on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet(Site):
    """Two nodes (two roots on this machine) whose units really run, under a small systemctl
    (tests/ansible/fake_systemctl.py) that each node's Python finds first on its PATH."""

    def __init__(self, base: Path, wheel: Path, wheelhouse: Path) -> None:
        super().__init__(base, wheel, wheelhouse)
        self.nodes = ("node-a", "node-b")
        self.ports = {node: free_port() for node in self.nodes}
        lines = ["[agentdeck_nodes]"]
        shims = base / "bin"
        shims.mkdir()
        (shims / "systemctl").write_text(
            f'#!/bin/sh\nexec {sys.executable} {FAKE_SYSTEMCTL} "$@"\n'
        )
        (shims / "systemctl").chmod(0o755)
        for node in self.nodes:
            top = base / node
            python = base / f"python-{node}"
            # (each node's modules, and the systemctl they run, see that node's units)
            python.write_text(
                "#!/bin/sh\n"
                f"export FAKE_SYSTEMD_UNITS={top}/etc/systemd/system\n"
                f"export FAKE_SYSTEMD_STATE={top}/run\n"
                f'export PATH={shims}:"$PATH"\n'
                f'exec {sys.executable} "$@"\n'
            )
            python.chmod(0o755)
            lines.append(
                f"{node} ansible_connection=local ansible_python_interpreter={python}"
                f" agentdeck_root={top}/opt/agentdeck agentdeck_etc={top}/etc/agentdeck"
                f" agentdeck_home={top}/var/lib/agentdeck"
                f" agentdeck_systemd_dir={top}/etc/systemd/system"
                f" agentdeck_metrics_port={self.ports[node]}"
            )
        self.inventory.write_text("\n".join(lines) + "\n")
        for key in ("agentdeck_root", "agentdeck_etc", "agentdeck_home", "agentdeck_systemd_dir"):
            del self.vars[key]  # (per node, in the inventory)
        self.vars.update(
            agentdeck_manage_service=True,
            agentdeck_agent_processes=[],
            agentdeck_metrics_address="127.0.0.1",
            agentdeck_health_timeout=60,
            agentdeck_secrets={},
        )
        self.vars["agentdeck_settings"] = {"agents": [{"kind": "echo"}]}

    def events(self, node: str) -> list[tuple[float, str, int]]:
        """The node's unit starts and stops: (time, "start"/"stop", pid)."""
        path = self.base / node / "run/journal"
        rows = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
        return [(float(t), event, int(pid)) for t, event, _unit, pid in rows]

    def link_on(self, node: str, name: str) -> str:
        """Which release ``current`` or ``previous`` points to on ``node``."""
        return os.readlink(self.base / node / "opt/agentdeck" / name).rsplit("/", 1)[-1]

    def pid(self, node: str) -> int:
        """The daemon's pid on ``node``."""
        return int((self.base / node / "run/agentdeck.service.pid").read_text())

    def release_of(self, node: str) -> str:
        """Which release the node's running daemon runs (its interpreter's folder)."""
        cmdline = Path(f"/proc/{self.pid(node)}/cmdline").read_bytes().split(b"\0")
        return Path(cmdline[0].decode()).parents[1].name

    def serving_after(self, node: str, started: float) -> float:
        """When the node's daemon started at ``started`` said it serves /metrics (its log)."""
        log = (self.base / node / "run/agentdeck.service.log").read_text().splitlines()
        for line in log:
            if '"metrics_serving"' in line:
                at = datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
                if at >= started:
                    return at
        raise AssertionError(f"{node}: no /metrics after {started}:\n" + "\n".join(log[-20:]))

    def stop_all(self) -> None:
        """Stop every unit that runs (the fixture's teardown)."""
        for node in self.nodes:
            env = {
                **os.environ,
                "FAKE_SYSTEMD_UNITS": str(self.base / node / "etc/systemd/system"),
                "FAKE_SYSTEMD_STATE": str(self.base / node / "run"),
            }
            subprocess.run(
                [sys.executable, str(FAKE_SYSTEMCTL), "stop", "agentdeck.service"],
                env=env,
                timeout=120,
                check=False,
            )


def metrics(port: int) -> str:
    """What the daemon's /metrics says."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, wheel: Path, wheelhouse: Path
) -> Iterator[Fleet]:
    """Two nodes running release r1 (site.yml with the units managed)."""
    base = tmp_path_factory.mktemp("fleet")
    f = Fleet(base, wheel, wheelhouse)
    try:
        ok(f.play("site.yml"))
        yield f
    finally:
        f.stop_all()


def test_site_starts_the_daemon_on_every_node(fleet: Fleet) -> None:
    """Each node runs release r1's daemon, enabled, answering on its /metrics."""
    for node in fleet.nodes:
        assert fleet.release_of(node) == "r1"
        assert (fleet.base / node / "run/agentdeck.service.enabled").exists()
        assert "agentdeck_" in metrics(fleet.ports[node])


def test_a_rolling_deploy_restarts_one_node_at_a_time_and_waits_for_it(fleet: Fleet) -> None:
    """deploy.yml: node-a is stopped, started on r2 and serving /metrics before node-b is
    stopped; then node-b. rollback.yml goes back the same way."""
    for release, playbook, overrides in (
        ("r2", "deploy.yml", {"agentdeck_release": "r2"}),
        ("r1", "rollback.yml", {}),
    ):
        since = time.time()
        ok(fleet.play(playbook, **overrides))
        a = [e for e in fleet.events("node-a") if e[0] >= since]
        b = [e for e in fleet.events("node-b") if e[0] >= since]
        assert [e[1] for e in a] == ["stop", "start"], a
        assert [e[1] for e in b] == ["stop", "start"], b
        a_serving = fleet.serving_after("node-a", a[1][0])
        assert a[0][0] < a[1][0] < a_serving < b[0][0] < b[1][0]
        for node in fleet.nodes:
            assert fleet.release_of(node) == release
            assert "agentdeck_" in metrics(fleet.ports[node])


def test_a_node_that_does_not_come_back_stops_the_deploy_before_the_next_node(
    fleet: Fleet,
) -> None:
    """r3's daemon cannot serve /metrics on node-a (its port is taken): the deploy waits
    agentdeck_health_timeout, fails, and node-b is not touched. Rolling back node-a alone
    (``--limit``) brings it back on r1."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # bound, not listening: the daemon cannot bind, nothing answers
    try:
        b_pid, since = fleet.pid("node-b"), time.time()
        run = fleet.play(
            "deploy.yml",
            agentdeck_release="r3",
            agentdeck_metrics_port=taken.getsockname()[1],
            agentdeck_health_timeout=6,
        )
        assert run.returncode != 0
        assert "Wait for agentdeck" in run.stdout and "node-a" in run.stdout
        assert fleet.link_on("node-a", "current") == "r3"
        assert [e for e in fleet.events("node-b") if e[0] >= since] == []
        assert (fleet.pid("node-b"), fleet.release_of("node-b")) == (b_pid, "r1")
        assert "agentdeck_" in metrics(fleet.ports["node-b"])
    finally:
        taken.close()
    ok(fleet.play("rollback.yml", limit="node-a"))
    assert fleet.link_on("node-a", "current") == "r1"
    assert fleet.release_of("node-a") == "r1"
    assert "agentdeck_" in metrics(fleet.ports["node-a"])


def test_the_release_is_named_after_the_package_unless_named(tmp_path: Path) -> None:
    """Without ``agentdeck_release``: ``agentdeck==0.2.0`` is release ``agentdeck-0.2.0``, a
    wheel file its name without ``.whl`` (both plain folder names)."""
    playbook = tmp_path / "release.yml"
    playbook.write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        f"  vars_files: [{ANSIBLE / 'roles/agentdeck/defaults/main.yml'}]\n"
        "  tasks:\n"
        "    - ansible.builtin.debug: {msg: 'release={{ agentdeck_release }}'}\n"
    )
    for package, release in (
        ("agentdeck==0.2.0", "agentdeck-0.2.0"),
        ("/srv/wheels/agentdeck-0.2.0-py3-none-any.whl", "agentdeck-0.2.0-py3-none-any"),
        ("agentdeck", "agentdeck"),
    ):
        run = subprocess.run(
            [
                *(str(PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook)),
                *("-e", f"agentdeck_package={package}"),
            ],
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f'"msg": "release={release}"' in run.stdout, run.stdout + run.stderr
