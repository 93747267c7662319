"""Fixtures shared by the end-to-end modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.cluster_hosts import SharedCluster
from tests.gc_sweep import sweep

CLUSTER_UP_TIMEOUT = 900.0
"""Seconds ``scripts/cluster.sh up`` may take (~25-100 s once installed; installs add more)."""


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[SharedCluster]:
    """The session's one ``scripts/cluster.sh`` cluster (made on first use); always removed."""
    cluster = SharedCluster(CLUSTER_UP_TIMEOUT)
    try:
        yield cluster
    finally:
        if cluster.urls is not None:
            cluster.down()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    """After a cluster test has run whole (its teardown and reports too), its garbage is
    collected at once: :mod:`tests.gc_sweep` says why."""
    try:
        return (yield)
    finally:
        if item.get_closest_marker("cluster") is not None:
            sweep()
