"""Per-capability limits: the leader lets no capability exceed its fleet-wide limits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agentdeck.core.errors import ConfigError
from agentdeck.core.limits import CapabilityLimits, Limiter
from agentdeck.core.models import Task
from agentdeck.core.settings import Settings
from agentdeck.core.states import TaskStatus as T
from tests.unit.test_scheduler import Deck, deck  # noqa: F401 - the fixture

NOW = 1_000.0


def tasks(capability: str, n: int) -> list[Task]:
    return [
        Task(f"w/{capability}{i}", "w", f"{capability}{i}", capability, T.READY, None, (), 0, 0, 0)
        for i in range(n)
    ]


def test_max_concurrency_admits_only_the_free_slots_in_order() -> None:
    """Two of five in flight and a limit of four: the first two ready tasks go."""
    limiter = Limiter({"llm": CapabilityLimits(max_concurrency=4)})
    ready = tasks("llm", 5) + tasks("echo", 2)
    admitted = limiter.admit(ready, {"llm": 2}, NOW)
    assert [t.key for t in admitted] == ["llm0", "llm1", "echo0", "echo1"]


def test_requests_per_minute_counts_a_sliding_window() -> None:
    """Three a minute: three go, the fourth waits until the first leaves the window."""
    limiter = Limiter({"llm": CapabilityLimits(requests_per_minute=3)})
    assert len(limiter.admit(tasks("llm", 2), {}, NOW)) == 2
    assert len(limiter.admit(tasks("llm", 2), {}, NOW + 30)) == 1
    assert limiter.held(NOW + 59) == {"llm": "3 requests per minute reached"}
    assert limiter.held(NOW + 60) == {}
    assert len(limiter.admit(tasks("llm", 5), {}, NOW + 60)) == 2


def test_tokens_per_minute_holds_until_reported_tokens_leave_the_window() -> None:
    """Tokens reported at or over the limit hold the capability for the rest of the minute."""
    limiter = Limiter({"llm": CapabilityLimits(tokens_per_minute=10_000)})
    limiter.record_tokens("llm", 6_000, NOW)
    assert limiter.held(NOW) == {}
    limiter.record_tokens("llm", 4_000, NOW + 10)
    assert limiter.held(NOW + 10) == {"llm": "10000 tokens per minute reached"}
    assert limiter.admit(tasks("llm", 1), {}, NOW + 20) == []
    assert limiter.held(NOW + 60) == {}  # the first 6,000 left the window
    limiter.record_tokens("echo", 1_000_000, NOW)  # no limit: not even counted
    assert limiter.tokens_in_window("echo", NOW) == 0


def test_a_limit_that_is_not_a_positive_whole_number_is_refused(tmp_path: Path) -> None:
    """One clear error naming the capability and the field."""
    with pytest.raises(
        ConfigError, match=r"capability_limits\.llm\.max_concurrency: .* greater than 0"
    ):
        Settings.load(config_path=None, capability_limits={"llm": {"max_concurrency": 0}})
    with pytest.raises(ConfigError, match="requests_per_minut"):
        Settings.load(config_path=None, capability_limits={"llm": {"requests_per_minut": 5}})


async def test_the_scheduler_keeps_a_capability_under_its_concurrency_limit(deck: Deck) -> None:  # noqa: F811
    """Six ready tasks, max_concurrency 2: two go; each one finished lets one more go."""
    limits = {"echo": CapabilityLimits(max_concurrency=2)}
    deck.scheduler.config = replace(deck.scheduler.config, limits=limits)
    deck.scheduler.limiter = Limiter(limits)
    names = ", ".join(f"{{key: t{i}, capability: echo}}" for i in range(6))
    wf = await deck.submit(f"name: six\ntasks: [{names}]\n")
    await deck.settle()
    first = await deck.take("echo", 2)
    counts = await deck.store.count_by_capability([T.READY, T.DISPATCHED])
    assert counts["echo"] == {T.DISPATCHED: 2, T.READY: 4}
    await deck.finish(first[0][0], "ok")
    await deck.settle()
    await deck.take("echo", 1)
    counts = await deck.store.count_by_capability([T.READY, T.DISPATCHED])
    assert counts["echo"] == {T.DISPATCHED: 2, T.READY: 3}
    assert (await deck.store.get_workflow(wf)).status.value == "running"


def test_new_limits_keep_the_window_of_what_was_already_sent() -> None:
    """A reload lowering a limit counts the minute's attempts; a capability no longer limited
    is forgotten (and not counted any more)."""
    limiter = Limiter({"llm": CapabilityLimits(requests_per_minute=10)})
    limiter.admit(tasks("llm", 3), {}, NOW)
    limiter.set_limits({"llm": CapabilityLimits(requests_per_minute=3)})
    assert limiter.held(NOW + 1) == {"llm": "3 requests per minute reached"}
    limiter.set_limits({})
    assert limiter.held(NOW + 1) == {} and not limiter.counts_in_flight
    limiter.set_limits({"llm": CapabilityLimits(requests_per_minute=3)})
    assert len(limiter.admit(tasks("llm", 5), {}, NOW + 2)) == 3
