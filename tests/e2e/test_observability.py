"""Observability with real processes: a real Prometheus scrapes a daemon, and an OTLP receiver
sees one trace span a daemon and two agent processes."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import IN_CI, require_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
AGENTDECK = [sys.executable, "-m", "agentdeck.tui.cli"]
WAIT = 60.0
"""The longest any step may take before the test fails (a bound, not a timing assertion)."""
RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
BROKER = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def until(check: Callable[[], Any], what: str, limit: float = WAIT) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {limit:g}s")
        time.sleep(0.2)


class Processes:
    """Processes started by a test; every one is killed at the end, whatever happens."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def terminate(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM (a clean stop that flushes spans), SIGKILL if it lingers."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (apt-get install prometheus; make tools)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTDECK_", "OTEL_"))}
    env.update({"AGENTDECK_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    return env


WORKFLOW = """
name: observed
tasks:
  - {key: a, capability: echo, input: {text: one}}
  - {key: b, capability: echo, needs: [a]}
  - {key: c, capability: echo, needs: [a]}
  - {key: d, capability: echo, needs: [b, c]}
"""


# ---------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_the_daemon_and_answers_about_tasks_that_ran(
    tmp_path: Path, procs: Processes
) -> None:
    """A real Prometheus scrapes the daemon's /metrics and counts the tasks that succeeded."""
    prometheus = need("prometheus")
    metrics_port, prom_port = free_port(), free_port()
    (tmp_path / "agentdeck.toml").write_text(
        f'log_format = "json"\nmetrics_port = {metrics_port}\n'
        '[scheduler]\npoll_interval = 0.05\n[[agents]]\nkind = "echo"\nconcurrency = 4\n'
    )
    env = base_env(tmp_path)
    config = ["--config", str(tmp_path / "agentdeck.toml")]
    procs.start("daemon", [*AGENTDECK, *config, "--daemon"], env)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: agentdeck\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    procs.start(
        "prometheus",
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        env,
    )
    spec = tmp_path / "wf.yaml"
    spec.write_text(WORKFLOW)
    for _ in range(3):
        done = subprocess.run(
            [*AGENTDECK, *config, "submit", str(spec), "--wait", "--timeout", str(WAIT)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT + 10,
        )
        assert done.returncode == 0, done.stderr + procs.log("daemon")

    def succeeded() -> float | None:
        query = urllib.parse.urlencode(
            {"query": 'sum(agentdeck_tasks_total{job="agentdeck",outcome="succeeded"})'}
        )
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?{query}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except OSError:
            return None  # Prometheus is still starting
        result = body["data"]["result"]
        value = float(result[0]["value"][1]) if result else 0.0
        return value if value >= 12 else None

    assert until(succeeded, "Prometheus reporting 12 succeeded tasks") == 12.0


# -------------------------------------------------------------------------------- traces


class Receiver:
    """A tiny OTLP/HTTP trace receiver on loopback: decodes every export it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                receiver.add(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            {
                                "service": service,
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "attributes": {
                                    a.key: a.value.string_value or a.value.int_value
                                    for a in span.attributes
                                },
                            }
                        )

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def delete_topology(prefix: str) -> None:
    """Remove the test's queues and exchanges from the shared broker."""
    from agentdeck.backends.rabbitmq import RabbitBus
    from agentdeck.core.clock import SystemClock

    async def go() -> None:
        bus = RabbitBus.from_url(f"{BROKER}?prefix={prefix}", clock=SystemClock())
        await bus.start()
        # A fresh bus knows only the queues it declared: name the task queue the run used,
        # or it is left on the broker after every run.
        bus.declared.add(bus.names.task("echo"))
        try:
            await bus.delete_topology()
        finally:
            await bus.close()

    asyncio.run(go())


def test_one_trace_spans_the_daemon_and_two_agent_processes(
    tmp_path: Path, procs: Processes
) -> None:
    """An OTLP receiver gets workflow -> attempt (daemon) -> run (two agent processes) spans
    of one trace, each run the child of its own attempt."""
    require_service("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    prefix = f"obs-{uuid.uuid4().hex[:10]}"
    with Receiver() as receiver:
        env = base_env(tmp_path)
        env.update(
            {
                "AGENTDECK_BUS_URL": f"{BROKER}?prefix={prefix}",
                "AGENTDECK_STORE_URL": f"sqlite:///{tmp_path}/agentdeck.db",
                "AGENTDECK_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.db",
                "AGENTDECK_LOG_FORMAT": "json",
                "AGENTDECK_SCHEDULER__POLL_INTERVAL": "0.05",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            }
        )
        try:
            procs.start("daemon", [*AGENTDECK, "--daemon"], env)
            agent_metrics = free_port()
            for i in (1, 2):
                own = ["--metrics-port", str(agent_metrics)] if i == 1 else []
                procs.start(
                    f"agent-{i}",
                    [
                        *AGENTDECK,
                        "agent",
                        "--kind",
                        "sleep",
                        "--name",
                        f"sleeper-{i}",
                        "--capability",
                        "echo",
                        "--concurrency",
                        "1",
                        *own,
                    ],
                    env,
                )
            spec = tmp_path / "wf.yaml"
            # Sleeping tasks with one slot per agent: the two in parallel (b, c) land one on
            # each agent, because an agent holding one cannot take another.
            spec.write_text(
                WORKFLOW.replace("input: {text: one}", "input: {seconds: 0.3}").replace(
                    "needs: [a]}", "needs: [a], input: {seconds: 0.5}}"
                )
            )
            done = subprocess.run(
                [*AGENTDECK, "submit", str(spec), "--wait", "--timeout", str(WAIT), "--json"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=WAIT + 10,
            )
            assert done.returncode == 0, done.stderr + procs.log("daemon")
            workflow_id = json.loads(done.stdout)["id"]

            def complete() -> list[dict[str, Any]] | None:
                spans = receiver.snapshot()
                names = [s["name"].split()[0] for s in spans]
                if names.count("workflow") == 1 and names.count("run") == 4:
                    return spans if names.count("attempt") == 4 else None
                return None

            try:
                spans = until(complete, "the receiver holding the workflow's 9 spans")
            except AssertionError as exc:
                seen = [(s["service"], s["name"]) for s in receiver.snapshot()]
                raise AssertionError(f"{exc}; received {seen}") from None
            # Read after the run spans arrived: a run's span ends after its metrics are counted.
            url = f"http://127.0.0.1:{agent_metrics}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                agent_exposition = response.read().decode()
        finally:
            for proc in reversed(procs.procs):  # agents first, then the daemon
                procs.terminate(proc)
            delete_topology(prefix)

    (root,) = [s for s in spans if s["name"].startswith("workflow ")]
    assert root["parent"] == "" and root["service"] == "agentdeck"
    assert root["attributes"]["agentdeck.workflow_id"] == workflow_id
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}
    attempts = {s["span_id"]: s for s in spans if s["name"].startswith("attempt ")}
    assert all(a["parent"] == root["span_id"] for a in attempts.values())
    assert all(a["service"] == "agentdeck" for a in attempts.values())
    runs = [s for s in spans if s["name"].startswith("run ")]
    assert all(r["service"] == "agentdeck-agent" for r in runs)
    assert sorted(r["parent"] for r in runs) == sorted(attempts)
    for run in runs:
        attempt = attempts[run["parent"]]
        assert run["attributes"]["agentdeck.task_id"] == attempt["attributes"]["agentdeck.task_id"]
    assert len({r["attributes"]["agentdeck.agent"] for r in runs}) == 2  # both processes
    # The first agent process serves its own /metrics, counting the runs it did.
    ran_here = sum(
        1 for r in runs if str(r["attributes"]["agentdeck.agent"]).startswith("sleeper-1")
    )
    line = f'agentdeck_agent_runs_total{{capability="echo",outcome="succeeded"}} {ran_here}.0'
    assert line in agent_exposition
