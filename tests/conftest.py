"""Shared fixtures: a fake clock, service checks that skip locally but fail in CI, and the
package with its dependencies as wheels."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from agentdeck.core.clock import FakeClock

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(name: str, host: str, port: int) -> None:
    """Skip the test when a service is not listening, except in CI where that is a failure."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port}: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Each test leaves structlog as it found it: one that configures logging (a CLI run in
    process, a level of "warning") must not hide the next test's info lines from its
    ``capture_logs``."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built from this checkout, once for the whole run.

    pip builds a local folder in place (setuptools writes ``build/`` and ``*.egg-info`` in the
    checkout), so two sessions building at once (``scripts/test.sh`` runs tests/ansible beside
    the rest) could mix their files: a lock per checkout lets one build at a time."""
    out = tmp_path_factory.mktemp("wheels")
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"agentdeck-wheel-{checkout}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (released when the file closes)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
            check=True,
            capture_output=True,
            timeout=180,
        )
    (built,) = out.glob("agentdeck-*.whl")
    return built


def _wheelhouse_key() -> str:
    """What the wheelhouse's content depends on: the pinned versions, the declared
    dependencies, and the interpreter and platform the wheels are built for."""
    digest = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    digest.update(f"{sys.version}|{sysconfig.get_platform()}".encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def wheelhouse(wheel: Path) -> Path:
    """A folder of wheels of the package's dependencies at the versions of requirements.lock
    (never the package itself), for ``pip install --no-index --find-links`` into a fresh
    virtualenv without resolving against an index or building anything.

    Built once and kept across runs in ``$AGENTDECK_TEST_CACHE`` (default
    ``~/.cache/agentdeck-tests``) under a key of requirements.lock, pyproject.toml and the
    interpreter: a change to any of them builds a new one. It is built in a scratch folder and
    renamed into place, so an interrupted build or two runs at once never leave a partial one.
    """
    cache = Path(os.environ.get("AGENTDECK_TEST_CACHE", Path.home() / ".cache" / "agentdeck-tests"))
    house = cache / f"wheelhouse-{_wheelhouse_key()}"
    if house.is_dir():
        return house
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=cache))
    try:
        built = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "wheel", "-q", "-w", str(scratch)),
                *("-c", str(ROOT / "requirements.lock"), str(wheel)),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}{built.stderr[-4000:]}"
        for own in scratch.glob("agentdeck-*.whl"):
            own.unlink()  # (built per run from the checkout: never cached)
        try:
            scratch.rename(house)
        except OSError:
            if not house.is_dir():  # (else another run renamed its own first: use that)
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return house
