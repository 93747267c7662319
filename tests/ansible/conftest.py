"""Hooks of the playbook tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gc_sweep import sweep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    """After a playbook test has run whole (its teardown and reports too), its garbage is
    collected at once: :mod:`tests.gc_sweep` says why (the playbook session crashed once at
    its end, every test passed)."""
    try:
        return (yield)
    finally:
        sweep()


def pytest_sessionfinish() -> None:
    """Once more before the terminal summary, which may import (and so parse) modules."""
    sweep()
