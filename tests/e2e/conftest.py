"""Fixtures shared by the end-to-end modules."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.e2e.cluster_hosts import SharedCluster

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
    collected at once, outside any other work.

    Why: aiormq leaves futures holding an exception no one retrieved in reference cycles when a
    broker goes away under a call in flight (the cluster tests kill and cut nodes), and the
    records pytest captured keep more alive until the item's reports are made. Collected later,
    such a future's finalizer logs its exception, and formatting the traceback parses source
    lines (Python 3.11 does, for the carets). If that collection runs inside another
    ``ast.parse``, the outer parse fails with ``SystemError: AST constructor recursion depth
    mismatch`` (python/cpython#106905): twice, pytest importing hypothesis through its
    assertion rewriter after the last test crashed a run whose tests had all passed. Several
    passes, as pytest makes at its end: a finalizer may leave new garbage."""
    try:
        return (yield)
    finally:
        if item.get_closest_marker("cluster") is not None:
            for _ in range(5):
                if not gc.collect():
                    break
