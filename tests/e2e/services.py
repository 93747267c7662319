"""Private Redis, PostgreSQL and RabbitMQ servers for tests that restart them.

The shared services on 6379, 5432 and 5672 serve every test running on this machine; a test
that stops one would break the others. The fault-injection suite starts its own instances on
free loopback ports, in a temporary folder, and restarts those. Each one:

- starts within a bounded time or fails with the end of its log;
- ``restart()`` stops it the way the issue asks (Redis loses its data, PostgreSQL does a fast
  shutdown, RabbitMQ a full node stop) and starts it again, returning when it accepts
  connections; the time it was unreachable is ``outage``;
- ``close()`` leaves no process behind (its process group is killed), even after a failure.

A missing server binary skips the test, except in CI (``CI=true``) where it is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import IN_CI

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
"""Seconds a server may take to accept connections (RabbitMQ takes ~8 s on a busy machine)."""
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def need(binary: str, *candidates: str) -> str:
    """The path of ``binary`` (on PATH or at one of ``candidates``); skip, or fail in CI."""
    for path in (*candidates, shutil.which(binary)):
        if path and os.access(path, os.X_OK):
            return path
    message = f"{binary} is not installed (looked on PATH and in {', '.join(candidates) or '-'})"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class Server:
    """One server process (and its children) in a process group of its own."""

    name = "server"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.outage = 0.0
        """Seconds the last :meth:`restart` left the server unreachable."""
        self.stop_took = 0.0
        """Seconds of that outage spent stopping it (the rest is its start)."""

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.log"

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def popen_extra(self) -> dict[str, object]:
        return {}

    def start(self) -> None:
        """Start the server; return once it accepts connections (bounded)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(self.command()),
                cwd=self.home,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: close() kills its children too
                **self.popen_extra(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not accept connections on {HOST}:{self.port} within "
                    f"{START_TIMEOUT:g}s:\n{self.tail()}"
                )
            time.sleep(0.05)

    def ready(self) -> bool:
        return listening(self.port)

    def stop(self) -> None:
        """Stop the server (each kind says how); the default is SIGKILL."""
        self.kill()

    def restart(self) -> float:
        """Stop and start again; returns the moment it was stopped (``time.time()``)."""
        stopped_at = time.time()
        self.stop()
        self.stop_took = time.time() - stopped_at
        self.start()
        self.outage = time.time() - stopped_at
        return stopped_at

    def kill(self) -> None:
        """SIGKILL the server's whole process group and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def close(self) -> None:
        """Leave no process behind."""
        with contextlib.suppress(Exception):
            self.stop()
        self.kill()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


class RedisServer(Server):
    """``redis-server`` without persistence: a restart loses every key."""

    name = "redis"

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.binary = need("redis-server")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> Sequence[str]:
        return [
            self.binary,
            *("--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"),
            *("--daemonize", "no", "--dir", str(self.home)),
        ]


class PostgresServer(Server):
    """A throw-away PostgreSQL cluster (``initdb`` in a temporary folder, trust auth), run as
    the ``postgres`` user when we are root (PostgreSQL refuses to run as root)."""

    name = "postgres"

    def __init__(self, home: Path) -> None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        self.postgres = need("postgres", *(f"{d}/postgres" for d in bindirs))
        self.initdb = need("initdb", *(f"{d}/initdb" for d in bindirs))
        self.isready = need("pg_isready", *(f"{d}/pg_isready" for d in bindirs))
        # The cluster lives outside pytest's tmp_path: the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="agentdeck-pg-"))
        super().__init__(self.root)
        self.data = self.root / "data"
        self.user: str | None = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, self.user, self.user)
        done = subprocess.run(
            [
                self.initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            **self.popen_extra(),  # type: ignore[arg-type]
        )
        if done.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            raise AssertionError(f"initdb failed:\n{done.stdout}{done.stderr}")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def popen_extra(self) -> dict[str, object]:
        return {"user": self.user, "group": self.user} if self.user else {}

    def ready(self) -> bool:
        """The server accepts sessions, not only TCP connections: while it starts up (or
        recovers after a stop) it listens already but refuses every session with "the
        database system is starting up"."""
        if not listening(self.port):
            return False
        check = subprocess.run(
            [self.isready, "-q", "-h", HOST, "-p", str(self.port), "-U", "postgres", "-t", "5"],
            capture_output=True,
            timeout=30,
        )
        return check.returncode == 0

    def command(self) -> Sequence[str]:
        return [
            self.postgres,
            *("-D", str(self.data), "-p", str(self.port), "-k", str(self.root)),
            *("-c", f"listen_addresses={HOST}", "-c", "fsync=off", "-c", "max_connections=200"),
        ]

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are cut, the server stops cleanly."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.root, ignore_errors=True)


class RabbitServer(Server):
    """A second RabbitMQ node (its own name, ports, data and log folders; no plugins)."""

    name = "rabbitmq"

    def __init__(self, home: Path) -> None:
        self.server = need("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server")
        self.ctl = need("rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl")
        super().__init__(home)
        self.dist_port = free_port()
        self.node = f"agentdeck-faults-{os.getpid()}@localhost"
        (home / "enabled_plugins").write_text("[].\n")
        (home / "rabbitmq.conf").write_text("loopback_users = none\n")
        (home / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    def env(self) -> dict[str, str]:
        home = str(self.home)
        return {
            **os.environ,
            "HOME": home,  # its Erlang cookie lives here, shared with our rabbitmqctl
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": f"{home}/mnesia",
            "RABBITMQ_LOG_BASE": f"{home}/log",
            "RABBITMQ_PID_FILE": f"{home}/rabbitmq.pid",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{home}/enabled_plugins",
            "RABBITMQ_PLUGINS_EXPAND_DIR": f"{home}/plugins-expand",
            "RABBITMQ_CONFIG_FILE": f"{home}/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{home}/advanced.config",
            "RABBITMQ_CONF_ENV_FILE": f"{home}/rabbitmq-env.conf",
            "ERL_EPMD_ADDRESS": HOST,
        }

    def command(self) -> Sequence[str]:
        return [self.server]

    def stop(self) -> None:
        """``rabbitmqctl stop``: the whole node goes down, as in a service restart."""
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [self.ctl, "-n", self.node, "stop"],
                env=self.env(),
                capture_output=True,
                timeout=STOP_TIMEOUT,
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_TIMEOUT)
        self.kill()
