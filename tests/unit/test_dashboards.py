"""The Grafana dashboards, the Prometheus scrape config and the Loki shipping config in ansible/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentdeck.core.metrics import Metrics
from tests.conftest import IN_CI

FILES = Path(__file__).resolve().parents[2] / "ansible" / "files"
DASHBOARDS = sorted((FILES / "grafana").glob("*.json"))
METRIC_NAME = re.compile(r"\bagentdeck_[a-z0-9_]+\b")
#: Loki labels the promtail config may set: a small, fixed set of values each.
LOW_CARDINALITY_LABELS = {"service", "unit", "host", "level"}


def exported_names() -> set[str]:
    """Every series name the program can expose (histogram and counter suffixes included)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum", "created")}
        else:
            names.add(family.name)
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found += panel.get("panels", [])
    return found


def prometheus_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every Prometheus target and query variable (Loki's LogQL left out)."""
    exprs = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == "prometheus":
                exprs.append(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query" and variable["datasource"]["type"] == "prometheus":
            exprs.append(variable["definition"])
    return exprs


def test_there_are_four_dashboards() -> None:
    """Overview, agents, breakers and retries, and logs ship as Grafana JSON."""
    assert [p.stem for p in DASHBOARDS] == [
        "agentdeck-agents",
        "agentdeck-breakers-retries",
        "agentdeck-logs",
        "agentdeck-overview",
    ]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_promql_names_only_exported_metrics(path: Path) -> None:
    """Every PromQL expression in the dashboard names at least one metric, all exported."""
    dashboard = json.loads(path.read_text())
    exported = exported_names()
    exprs = prometheus_exprs(dashboard)
    assert exprs
    for expr in exprs:
        named = set(METRIC_NAME.findall(expr))
        assert named, f"{expr!r} names no agentdeck metric"
        assert named <= exported, f"{expr!r} names {sorted(named - exported)}, not exported"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_well_formed(path: Path) -> None:
    """A uid, a title, unique panel ids, and every panel placed on the grid with a target."""
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem and dashboard["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["targets"], panel["title"]


def test_logs_dashboard_reads_loki() -> None:
    """The logs dashboard has a logs panel on a Loki data source."""
    dashboard = json.loads((FILES / "grafana" / "agentdeck-logs.json").read_text())
    logs = [p for p in panels(dashboard) if p["type"] == "logs"]
    assert logs and all(p["datasource"]["type"] == "loki" for p in logs)


def test_prometheus_scrape_config_is_valid() -> None:
    """promtool accepts the scrape configuration."""
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (apt-get install prometheus; make tools)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [promtool, "check", "config", str(FILES / "prometheus" / "agentdeck-scrape.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtail_sets_only_low_cardinality_labels() -> None:
    """Loki labels are service, unit, host and level; ids stay in the JSON line."""
    config = yaml.safe_load((FILES / "promtail" / "agentdeck.yml").read_text())
    (job,) = config["scrape_configs"]
    labels = set(job["journal"]["labels"])
    labels |= {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    for stage in job["pipeline_stages"]:
        labels |= set(stage.get("labels") or {})
    assert labels <= LOW_CARDINALITY_LABELS


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every PromQL expression (as recording rules, Grafana variables filled)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (apt-get install prometheus; make tools)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    exprs = [e for path in DASHBOARDS for e in prometheus_exprs(json.loads(path.read_text()))]
    rules = [
        {"record": f"agentdeck:check_{i}", "expr": re.sub(r"\$\w+", ".*", expr)}
        for i, expr in enumerate(exprs)
        if not expr.startswith("label_values(")  # a Grafana function, not PromQL
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
