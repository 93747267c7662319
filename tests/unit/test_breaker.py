"""The circuit breaker's pure state machine, every transition driven with a fake clock."""

from __future__ import annotations

import math

import pytest

from agentdeck.core.breaker import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    BreakerPolicy,
    BreakerReset,
    BreakerState,
    BreakerStatus,
    BreakerTripped,
    allows,
    begin_trial,
    give_back_trial,
    record,
    reset,
    tick,
    trip,
)
from agentdeck.core.clock import FakeClock
from agentdeck.core.errors import ConfigError

S = BreakerStatus
POLICY = BreakerPolicy(
    failure_threshold=3, failure_rate=0.5, window_seconds=60, min_calls=10, cool_down=30
)


def feed(state: BreakerState, outcomes: str, clock: FakeClock, step: float = 1.0) -> BreakerState:
    """Record outcomes written as a string ('o' success, 'x' failure), ``step`` seconds apart."""
    for c in outcomes:
        state, _ = record(state, c == "o", clock.now(), POLICY)
        clock.advance(step)
    return state


def opened(clock: FakeClock) -> BreakerState:
    state = feed(BreakerState("capability:echo"), "xxx", clock)
    assert state.status is S.OPEN
    return state


def test_closed_breaker_lets_work_through(clock: FakeClock) -> None:
    """A new breaker is closed and allows work; successes keep it closed."""
    state = feed(BreakerState("capability:echo"), "oooooooooooo", clock)
    assert state.status is S.CLOSED and allows(state)
    assert state.calls() == 12 and state.failure_rate() == 0


def test_consecutive_failures_open_it(clock: FakeClock) -> None:
    """The threshold's worth of failures in a row opens the breaker, with a BreakerOpened."""
    state = feed(BreakerState("capability:echo"), "xx", clock)
    assert state.status is S.CLOSED and state.consecutive_failures == 2
    state, events = record(state, False, clock.now(), POLICY)
    assert state.status is S.OPEN and not allows(state)
    assert state.opened_at == clock.now()
    assert [type(e) for e in events] == [BreakerOpened]
    assert "3 failures in a row" in events[0].reason


def test_a_success_resets_the_run_of_failures(clock: FakeClock) -> None:
    """Failures separated by successes do not add up to the consecutive threshold."""
    state = feed(BreakerState("capability:echo"), "xxoxxo", clock)
    assert state.status is S.CLOSED and state.consecutive_failures == 0


def test_failure_rate_over_the_window_opens_it(clock: FakeClock) -> None:
    """Half the calls failing over the window opens it even with no run of three failures."""
    state = feed(BreakerState("capability:echo"), "oxoxoxoxo", clock)
    assert state.status is S.CLOSED  # nine calls: below min_calls
    state, events = record(state, False, clock.now(), POLICY)
    assert state.status is S.OPEN
    assert "50% of 10 calls failed" in events[0].reason


def test_old_outcomes_leave_the_sliding_window(clock: FakeClock) -> None:
    """Failures older than the window no longer count toward the rate."""
    state = feed(BreakerState("capability:echo"), "xxoxxoxxo", clock)
    clock.advance(120)
    state = feed(state, "ooooooooox", clock)
    assert state.status is S.CLOSED
    assert state.calls() == 10 and math.isclose(state.failure_rate(), 0.1)


def test_window_size_stays_bounded(clock: FakeClock) -> None:
    """Thousands of outcomes fold into at most one bucket per second of the window."""
    state = BreakerState("capability:echo")
    for _ in range(5000):
        state, _ = record(state, True, clock.now(), POLICY)
        clock.advance(0.05)
    assert len(state.window) <= 61
    assert state.calls() == pytest.approx(60 / 0.05, abs=25)


def test_open_breaker_ignores_late_outcomes(clock: FakeClock) -> None:
    """Outcomes of work sent before it opened change nothing while it is open."""
    state = opened(clock)
    assert record(state, True, clock.now(), POLICY) == (state, [])
    assert record(state, False, clock.now(), POLICY) == (state, [])


def test_cool_down_moves_open_to_half_open(clock: FakeClock) -> None:
    """Before the cool-down nothing happens; after it the breaker is half-open."""
    state = opened(clock)
    clock.advance(25)
    assert tick(state, clock.now(), POLICY) == (state, [])
    clock.advance(5)
    state, events = tick(state, clock.now(), POLICY)
    assert state.status is S.HALF_OPEN and allows(state)
    assert [type(e) for e in events] == [BreakerHalfOpened]


def half_open(clock: FakeClock) -> BreakerState:
    state = opened(clock)
    clock.advance(30)
    state, _ = tick(state, clock.now(), POLICY)
    return state


def test_half_open_lets_exactly_one_trial_through(clock: FakeClock) -> None:
    """Once the trial is out nothing else is allowed until it reports."""
    state = begin_trial(half_open(clock), clock.now())
    assert state.trial_in_flight and not allows(state)
    assert begin_trial(state, clock.now() + 1) == state


def test_successful_trial_closes_it(clock: FakeClock) -> None:
    """A success while half-open closes the breaker and clears its counts."""
    state = begin_trial(half_open(clock), clock.now())
    state, events = record(state, True, clock.now(), POLICY)
    assert state.status is S.CLOSED and state.consecutive_failures == 0 and state.window == ()
    assert [type(e) for e in events] == [BreakerClosed]


def test_failed_trial_reopens_for_another_cool_down(clock: FakeClock) -> None:
    """A failure while half-open opens it again, from now."""
    state = begin_trial(half_open(clock), clock.now())
    state, events = record(state, False, clock.now(), POLICY)
    assert state.status is S.OPEN and state.opened_at == clock.now()
    assert [type(e) for e in events] == [BreakerOpened]
    clock.advance(29)
    assert tick(state, clock.now(), POLICY)[0].status is S.OPEN


def test_unanswered_trial_is_given_up_after_trial_timeout(clock: FakeClock) -> None:
    """A trial that never reports (its task was cancelled) frees the slot for another."""
    state = begin_trial(half_open(clock), clock.now())
    clock.advance(POLICY.trial_timeout)
    state, events = tick(state, clock.now(), POLICY)
    assert state.status is S.HALF_OPEN and allows(state) and events == []


def test_a_trial_never_sent_is_given_back_at_once(clock: FakeClock) -> None:
    """Giving back the trial claimed at its time frees the slot now, not after trial_timeout;
    the breaker stays half-open and the next claim is a new trial."""
    claimed = begin_trial(half_open(clock), clock.now())
    assert claimed.trial_at is not None
    clock.advance(1)
    state = give_back_trial(claimed, claimed.trial_at)
    assert state.status is S.HALF_OPEN and allows(state) and state.trial_at is None
    again = begin_trial(state, clock.now())
    assert again.trial_in_flight and again.trial_at == clock.now()


def test_giving_back_touches_only_that_trial(clock: FakeClock) -> None:
    """A give-back for another claim (made before, or since), or for a breaker that moved on
    (the trial reported, an operator tripped it), changes nothing."""
    claimed = begin_trial(half_open(clock), clock.now())
    assert claimed.trial_at is not None
    assert give_back_trial(claimed, claimed.trial_at - 1) == claimed
    reported, _ = record(claimed, False, clock.now(), POLICY)
    assert give_back_trial(reported, claimed.trial_at) == reported
    tripped, _ = trip(claimed, clock.now())
    assert give_back_trial(tripped, claimed.trial_at) == tripped
    free = half_open(clock)
    assert give_back_trial(free, clock.now()) == free


def test_tripped_breaker_stays_open_until_reset(clock: FakeClock) -> None:
    """An operator's trip ignores the cool-down; a reset closes it again."""
    state, events = trip(BreakerState("agent:a1"), clock.now())
    assert state.status is S.OPEN and state.manual
    assert [type(e) for e in events] == [BreakerTripped]
    clock.advance(10_000)
    assert tick(state, clock.now(), POLICY) == (state, [])
    state, events = reset(state, clock.now())
    assert state.status is S.CLOSED and not state.manual
    assert [type(e) for e in events] == [BreakerReset]
    assert events[0].kind == "BreakerReset"


def test_state_survives_the_registry_record(clock: FakeClock) -> None:
    """to_record and from_record give back the same state."""
    state = feed(BreakerState("capability:x"), "oxox", clock)
    record_ = state.to_record(7)
    assert record_.version == 7 and record_.state == "closed"
    assert BreakerState.from_record(record_) == state
    trial = begin_trial(half_open(clock), clock.now())
    assert BreakerState.from_record(trial.to_record(1)) == trial


def test_name_splits_into_kind_and_target() -> None:
    """A breaker name is <kind>:<target>; agent ids may hold colons of their own."""
    state = BreakerState("agent:echo@host:1")
    assert (state.kind, state.target) == ("agent", "echo@host:1")


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("failure_threshold", 0, "from 1 to 10000"),
        ("failure_threshold", 2.5, "an integer"),
        ("failure_rate", 1.5, "from 0.01 to 1"),
        ("failure_rate", float("nan"), "from 0.01 to 1"),
        ("window_seconds", 0, "from 1 to 86400"),
        ("min_calls", 0, "from 1 to 100000"),
        ("cool_down", -1, "from 0.1 to 86400"),
        ("trial_timeout", True, "from 1 to 86400"),
    ],
)
def test_policy_out_of_range_is_refused(field: str, value: object, allowed: str) -> None:
    """A policy field out of range is one ConfigError naming the field, the value and the range."""
    with pytest.raises(ConfigError, match=field) as info:
        BreakerPolicy(**{field: value})  # type: ignore[arg-type]
    assert allowed in str(info.value) and repr(value) in str(info.value)


def test_policy_from_mapping_reads_text_and_refuses_unknown_keys() -> None:
    """Environment-style text converts; an unknown key is named with the allowed ones."""
    policy = BreakerPolicy.from_mapping({"failure_threshold": "7", "cool_down": "2.5"})
    assert (policy.failure_threshold, policy.cool_down) == (7, 2.5)
    assert BreakerPolicy.from_mapping(policy.to_dict()) == policy
    with pytest.raises(ConfigError, match=r"breaker: unknown key.*'threshold'.*failure_threshold"):
        BreakerPolicy.from_mapping({"threshold": 3})
    with pytest.raises(ConfigError, match="breaker: cool_down must be"):
        BreakerPolicy.from_mapping({"cool_down": "soon"})
