"""Driving ``scripts/cluster.sh``'s three test hosts from a test: the script, the engines' own
tools, and ``agentdeck`` processes started inside a host's network namespace.

Everything here is bounded in time: a command that hangs fails the test after its timeout
(the cluster's engines may be paused or cut off). What asks an engine who leads does so with
that engine's own tool (``rabbitmqctl``, Sentinel, Patroni's REST API), from the root
namespace or inside the host's namespace when the host may be cut off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT
from tests.e2e.harness import AGENTDECK, Procs

SCRIPT = ROOT / "scripts" / "cluster.sh"
STATE = Path(os.environ.get("AGENTDECK_CLUSTER_DIR", "/tmp/agentdeck-cluster"))
HOSTS = ("h1", "h2", "h3")
HOST_IPS = {"h1": "10.213.7.1", "h2": "10.213.7.2", "h3": "10.213.7.3"}
RABBIT_VHOST = "agentdeck"


def namespace(host: str) -> str:
    """The network namespace of ``host`` (``h1`` -> ``adk-h1``)."""
    return f"adk-{host}"


def host_of(address: str) -> str:
    """The host name of an address of the cluster (``10.213.7.2`` -> ``h2``)."""
    for name, ip in HOST_IPS.items():
        if address in (ip, name):
            return name
    raise ValueError(f"{address!r} is not a cluster host (one of {sorted(HOST_IPS.values())})")


def need_root_and_ip() -> None:
    """Skip (fail in CI) where network namespaces cannot be made."""
    problem = None
    if os.geteuid() != 0:
        problem = "scripts/cluster.sh needs root (network namespaces)"
    elif shutil.which("ip") is None:
        problem = "scripts/cluster.sh needs `ip` (iproute2)"
    if problem:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)


def run(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    """``scripts/cluster.sh *args``'s output; a failure (with ``check``) or a time-out fails
    the test, with the end of the script's error output."""
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/cluster.sh {' '.join(args)} took more than {timeout:.0f} s")
    if check and done.returncode != 0:
        pytest.fail(
            f"scripts/cluster.sh {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
        )
    return done.stdout


def status() -> dict[str, dict[str, str]]:
    """``status`` as {host: {field: value}}, e.g. ``status()["h1"]["redis"] == "primary"``."""
    hosts = {}
    for line in run("status").splitlines():
        name, ip, *fields = line.split()
        hosts[name] = {"ip": ip, **dict(f.split("=", 1) for f in fields)}
    return hosts


def urls() -> dict[str, str]:
    """The ``AGENTDECK_*_URL`` values ``env`` prints (they hold passwords: never print them)."""
    found = {}
    for line in run("env").splitlines():
        name, value = shlex.split(line.removeprefix("export "))[0].split("=", 1)
        found[name] = value
    return found


class SharedCluster:
    """The cluster of a test session (``tests/e2e/test_cluster.py``,
    ``tests/e2e/test_cluster_faults.py``): made on first use (``down`` first, so it starts new
    with every primary on h1), made anew by a module that needs it new (:meth:`renew`), and
    removed by the module done with it or at the end of the session, whatever happened."""

    def __init__(self, up_timeout: float) -> None:
        self.up_timeout = up_timeout
        self.urls: dict[str, str] | None = None
        """The URLs ``env`` prints (passwords: never print them); None while there is none."""
        self.up_seconds = 0.0

    def ensure(self) -> dict[str, str]:
        """The URLs of the session's cluster, making it first if there is none."""
        if self.urls is None:
            need_root_and_ip()
            run("down", timeout=180)
            started = time.monotonic()
            try:
                run("up", timeout=self.up_timeout)
            except BaseException:
                run("down", timeout=180, check=False)
                raise
            self.up_seconds = time.monotonic() - started
            self.urls = urls()
        return self.urls

    def renew(self) -> dict[str, str]:
        """A new cluster (``down``, ``up``) whatever an earlier module left, and its URLs."""
        self.urls = None
        return self.ensure()

    def down(self) -> None:
        """Remove the cluster (whatever state it is in); the next :meth:`ensure` makes one."""
        self.urls = None
        run("down", timeout=180, check=False)


# ------------------------------------------------------------------------------ RabbitMQ


def rabbitmqctl(host: str, *args: str, timeout: float = 60.0) -> str:
    """``rabbitmqctl`` against ``rabbit@host``, run inside its namespace with its environment
    (as ``scripts/cluster/rabbitmq.sh`` sets it); fails the test on an error or a time-out."""
    base = STATE / host / "rabbitmq"
    env = {
        **os.environ,
        "HOME": str(base / "home"),
        "RABBITMQ_NODENAME": f"rabbit@{host}",
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
    }
    command = ["ip", "netns", "exec", namespace(host), "/usr/lib/rabbitmq/bin/rabbitmqctl"]
    try:
        done = subprocess.run(
            [*command, "-q", "-n", f"rabbit@{host}", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rabbitmqctl {' '.join(args)} on {host} took more than {timeout:.0f} s")
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} on {host}: {done.stderr[-2000:]}")
    return done.stdout


def queue_leaders(via: str) -> dict[str, str]:
    """{queue: host of its leader} for every quorum queue of the vhost, asked of ``via``."""
    rows = json.loads(
        rabbitmqctl(
            via, "list_queues", "-p", RABBIT_VHOST, "name", "type", "leader", "--formatter", "json"
        )
        or "[]"
    )
    return {
        row["name"]: str(row["leader"]).split("@", 1)[1]
        for row in rows
        if row.get("type") == "quorum" and "@" in str(row.get("leader", ""))
    }


def move_queue_leaders(to: str) -> None:
    """Ask every quorum queue of the vhost to hand its leadership to ``rabbit@to`` (what
    ``rabbitmq-upgrade drain`` does to leave a node, aimed at one node instead)."""
    rabbitmqctl(
        to,
        "eval",
        f"[rabbit_quorum_queue:transfer_leadership(Q, 'rabbit@{to}') "
        f'|| Q <- rabbit_amqqueue:list(<<"{RABBIT_VHOST}">>), '
        "amqqueue:get_type(Q) =:= rabbit_quorum_queue].",
    )


# --------------------------------------------------------------------------------- Redis


def redis_cli(*args: str, timeout: float = 5.0) -> str:
    """``redis-cli *args`` from the root namespace; '' when it fails or times out."""
    try:
        done = subprocess.run(
            ["redis-cli", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout if done.returncode == 0 else ""


def redis_primary() -> str | None:
    """The host the first Sentinel that answers names as primary, or None."""
    for host in HOSTS:
        reply = redis_cli(
            "-h", HOST_IPS[host], "-p", "26379", "sentinel", "get-master-addr-by-name", "mymaster"
        )
        if reply.strip():
            return host_of(reply.split()[0])
    return None


def redis_failover_to(host: str) -> None:
    """Make the Redis on ``host`` (a replica) the primary: it alone keeps a replica priority
    Sentinel prefers, then a Sentinel fails over (the other replicas' priority is put back)."""
    for other in HOSTS:
        priority = "1" if other == host else "100"
        redis_cli("-h", HOST_IPS[other], "config", "set", "replica-priority", priority)
    redis_cli("-h", HOST_IPS[host], "-p", "26379", "sentinel", "failover", "mymaster")


def sentinel_switches(since: float) -> list[float]:
    """When a Sentinel logged ``+switch-master`` (it names a new Redis primary) at or after
    ``since``, as ``time.time()`` values, oldest first, from every host's Sentinel log (Redis
    writes local time to the millisecond: ``pid:X 07 Dec 2026 12:07:04.113 # +switch-master``)."""
    found = []
    for host in HOSTS:
        log = STATE / host / "sentinel.log"
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            if "+switch-master" not in line:
                continue
            parts = line.split(" ", 5)
            with contextlib.suppress(IndexError, ValueError):
                clock, millis = parts[4].split(".")
                at = time.mktime(time.strptime(" ".join([*parts[1:4], clock]), "%d %b %Y %H:%M:%S"))
                if at + int(millis) / 1000 >= since:
                    found.append(at + int(millis) / 1000)
    return sorted(found)


# ---------------------------------------------------------------------- PostgreSQL (Patroni)


def patroni_switchover(leader: str, candidate: str) -> None:
    """Ask Patroni (its REST API on ``leader``) to hand the primary to ``candidate`` now.

    In ``synchronous_mode`` Patroni takes only the synchronous standby (412 otherwise). A
    failover to an asynchronous member instead (which its API allows) once left the cluster
    with no member willing to promote at the next cut (the synchronous standby behind the
    other replica: "not the healthiest node" on both), so the suite starts from a new cluster
    rather than move a primary that an earlier module moved."""
    _patroni_post(leader, "switchover", {"leader": leader, "candidate": candidate})


def _patroni_post(host: str, action: str, body: Mapping[str, str]) -> None:
    request = urllib.request.Request(
        f"http://{HOST_IPS[host]}:8008/{action}",
        data=json.dumps(dict(body)).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        reply.read()


def postgres_leader(hosts: Mapping[str, Mapping[str, str]]) -> str | None:
    """The host ``status`` shows as Patroni's leader, or None."""
    return next((h for h, v in hosts.items() if v.get("postgres") == "leader"), None)


# ------------------------------------------------------------------------------ processes


class HostProcs(Procs):
    """``agentdeck`` processes, each inside one host's namespace (``ip netns exec``); logs in
    ``home``. ``hosts`` says which host each process runs on."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        super().__init__(home, env)
        self.hosts: dict[str, str] = {}

    def start_on(self, host: str, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``agentdeck *args`` inside ``host``'s namespace as ``name`` (its log is
        appended to: a process started again under the same name keeps one log)."""
        with (self.home / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", namespace(host), *AGENTDECK, *args],
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        self.hosts[name] = host
        return proc

    def count(self, name: str, event: str) -> int:
        """How many JSON log lines of ``name`` have ``"event": event``."""
        return self.log(name).count(f'"event": "{event}"')
