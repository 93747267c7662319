"""The retry policy: validation, building from mappings, and the retry decision."""

from __future__ import annotations

import random

import pytest

from agentdeck.core.errors import ConfigError
from agentdeck.core.models import ErrorInfo, TaskEvent
from agentdeck.core.retry import RetryDecision, RetryPolicy, decide, decide_lost, lost_in_budget

ERROR = ErrorInfo(kind="error", message="boom")
NO_JITTER = RetryPolicy(jitter=0.0)


def rng() -> random.Random:
    return random.Random(42)


# ------------------------------------------------------------------------------ validation


def test_defaults() -> None:
    """The default policy: 3 attempts, 1 s doubling to 60 s, 1 s jitter, never on permanent."""
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay) == (3, 1.0, 60.0)
    assert (policy.multiplier, policy.jitter, policy.retry_on) == (2.0, 1.0, ())
    assert policy.never_on == ("permanent", "malformed")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer from 1 to 100, got 0"),
        ({"max_attempts": 101}, "max_attempts must be an integer from 1 to 100, got 101"),
        ({"max_attempts": 2.5}, "max_attempts must be an integer from 1 to 100, got 2.5"),
        ({"max_attempts": True}, "max_attempts must be an integer from 1 to 100, got True"),
        ({"initial_delay": -1.0}, "initial_delay must be a number from 0 to 3600, got -1.0"),
        ({"initial_delay": "1"}, "initial_delay must be a number from 0 to 3600, got '1'"),
        (
            {"initial_delay": 10.0, "max_delay": 5.0},
            "max_delay must be a number from initial_delay (10) to 86400, got 5.0",
        ),
        ({"max_delay": 86401.0}, "max_delay must be a number from initial_delay (1) to 86400"),
        ({"multiplier": 0.5}, "multiplier must be a number from 1 to 10, got 0.5"),
        ({"jitter": float("nan")}, "jitter must be a number from 0 to 60, got nan"),
        ({"jitter": 61.0}, "jitter must be a number from 0 to 60, got 61.0"),
        ({"retry_on": ("",)}, "retry_on must be a list of error kinds"),
        ({"never_on": ["permanent"]}, "never_on must be a list of error kinds"),
    ],
)
def test_out_of_range_field_is_named_with_value_and_range(
    kwargs: dict[str, object], message: str
) -> None:
    """A bad field raises ConfigError naming the field, the value and the allowed range."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_bad_initial_delay_is_not_also_blamed_on_max_delay() -> None:
    """When initial_delay is bad, max_delay is not judged against it."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy(initial_delay=-5.0)
    assert "max_delay" not in str(info.value)


def test_every_bad_field_is_reported() -> None:
    """Two bad fields give both messages in one error."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy(max_attempts=0, multiplier=50.0)
    assert "max_attempts" in str(info.value)
    assert "multiplier" in str(info.value)


# ---------------------------------------------------------------------------- from_mapping


def test_from_mapping_keeps_defaults_for_absent_keys() -> None:
    """Keys not given keep their defaults."""
    policy = RetryPolicy.from_mapping({"max_attempts": 5, "initial_delay": 0.1})
    assert policy == RetryPolicy(max_attempts=5, initial_delay=0.1)


def test_from_mapping_converts_strings_and_lists() -> None:
    """Environment strings become numbers and lists become tuples."""
    policy = RetryPolicy.from_mapping({"max_attempts": "7", "jitter": "0.5", "retry_on": ["lost"]})
    assert (policy.max_attempts, policy.jitter, policy.retry_on) == (7, 0.5, ("lost",))


def test_from_mapping_names_unknown_keys_and_lists_allowed_ones() -> None:
    """An unknown key is named, with every allowed key listed, after the location."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy.from_mapping({"attempts": 3}, where="task 'x' retry")
    assert str(info.value) == (
        "task 'x' retry: unknown key(s) 'attempts'; allowed: max_attempts, initial_delay, "
        "max_delay, multiplier, jitter, retry_on, never_on, max_lost"
    )


def test_from_mapping_reports_wrong_types_with_value() -> None:
    """A value of the wrong type is named with the value given."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy.from_mapping({"multiplier": "fast"}, where="retry")
    assert str(info.value).startswith("retry: multiplier: ")
    assert "(got 'fast')" in str(info.value)


def test_from_mapping_reports_range_errors_after_the_location() -> None:
    """Range problems carry the location prefix."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy.from_mapping({"max_attempts": 0}, where="retry.echo")
    assert str(info.value) == "retry.echo: max_attempts must be an integer from 1 to 100, got 0"


def test_from_mapping_without_location_has_no_prefix() -> None:
    """An empty location leaves the message bare."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy.from_mapping({"max_attempts": 0}, where="")
    assert str(info.value).startswith("max_attempts")


def test_from_mapping_refuses_a_non_mapping() -> None:
    """A list or number where a mapping belongs is refused."""
    with pytest.raises(ConfigError, match="expected a mapping of retry settings, got 3"):
        RetryPolicy.from_mapping(3)  # type: ignore[arg-type]


def test_to_dict_round_trips() -> None:
    """to_dict gives JSON-shaped data that from_mapping reads back to an equal policy."""
    policy = RetryPolicy(max_attempts=4, retry_on=("timeout", "lost"))
    data = policy.to_dict()
    assert data["retry_on"] == ["timeout", "lost"]
    assert RetryPolicy.from_mapping(data) == policy


# -------------------------------------------------------------------------------- decide


def test_first_retry_waits_initial_delay() -> None:
    """After the first failed attempt the wait is initial_delay (no jitter)."""
    decision = decide(NO_JITTER, 1, ERROR, rng())
    assert decision == RetryDecision(True, 1.0, "attempt 2 of 3 in 1.00s")


def test_delays_grow_by_the_multiplier_up_to_max_delay() -> None:
    """Waits grow initial * multiplier ** (n - 1), capped at max_delay."""
    policy = RetryPolicy(
        max_attempts=10, initial_delay=0.5, multiplier=3.0, max_delay=10.0, jitter=0
    )
    delays = [decide(policy, n, ERROR, rng()).delay for n in range(1, 6)]
    assert delays == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_jitter_comes_from_the_injected_rng() -> None:
    """Jitter adds rng.uniform(0, jitter): the same seed gives the same delay."""
    policy = RetryPolicy(initial_delay=2.0, jitter=1.0)
    expected = 2.0 + random.Random(42).uniform(0.0, 1.0)
    assert decide(policy, 1, ERROR, rng()).delay == pytest.approx(expected)
    assert decide(policy, 1, ERROR, random.Random(7)).delay != pytest.approx(expected)


def test_jitter_never_exceeds_max_delay() -> None:
    """Jitter included, the wait stays within max_delay."""
    policy = RetryPolicy(initial_delay=5.0, max_delay=5.0, jitter=10.0)
    assert decide(policy, 1, ERROR, rng()).delay == 5.0


def test_no_retry_when_attempts_are_spent() -> None:
    """The last allowed attempt failing ends the task."""
    decision = decide(RetryPolicy(max_attempts=3), 3, ERROR, rng())
    assert decision == RetryDecision(False, 0.0, "attempts spent (3 of 3)")


def test_a_single_attempt_policy_never_retries() -> None:
    """max_attempts=1 means no retry at all."""
    assert not decide(RetryPolicy(max_attempts=1), 1, ERROR, rng()).retry


def test_no_retry_for_a_non_retryable_error() -> None:
    """An error marked not retryable ends the task, whatever the budget."""
    error = ErrorInfo(kind="error", message="bad input", retryable=False)
    decision = decide(RetryPolicy(), 1, error, rng())
    assert decision == RetryDecision(False, 0.0, "error 'error' is not retryable")


def test_no_retry_for_a_kind_in_never_on() -> None:
    """A kind listed in never_on never retries."""
    decision = decide(RetryPolicy(), 1, ErrorInfo(kind="malformed", message="x"), rng())
    assert not decision.retry
    assert "never_on" in decision.reason


def test_never_on_wins_over_retry_on() -> None:
    """A kind in both lists does not retry."""
    policy = RetryPolicy(retry_on=("timeout",), never_on=("timeout",))
    assert not decide(policy, 1, ErrorInfo(kind="timeout", message="x"), rng()).retry


def test_retry_on_limits_which_kinds_retry() -> None:
    """With retry_on set, only its kinds retry."""
    policy = RetryPolicy(retry_on=("timeout", "lost"))
    refused = decide(policy, 1, ErrorInfo(kind="error", message="x"), rng())
    assert refused == RetryDecision(False, 0.0, "error 'error' is not in retry_on (timeout, lost)")
    assert decide(policy, 1, ErrorInfo(kind="lost", message="x"), rng()).retry


def test_retry_after_overrides_the_backoff() -> None:
    """An agent's retry_after replaces the computed delay, without jitter."""
    error = ErrorInfo(kind="error", message="busy", retry_after=7.5)
    decision = decide(RetryPolicy(), 2, error, rng())
    assert decision == RetryDecision(True, 7.5, "attempt 3 of 3 in 7.5s, as the agent asked")


def test_retry_after_is_capped_by_max_delay_and_floored_at_zero() -> None:
    """retry_after beyond max_delay is cut to it; a negative one means now."""
    policy = RetryPolicy(max_delay=30.0)
    late = ErrorInfo(kind="error", message="x", retry_after=3600.0)
    early = ErrorInfo(kind="error", message="x", retry_after=-1.0)
    assert decide(policy, 1, late, rng()).delay == 30.0
    assert decide(policy, 1, early, rng()).delay == 0.0


def test_retry_after_does_not_buy_extra_attempts() -> None:
    """retry_after changes the wait, not the budget."""
    error = ErrorInfo(kind="error", message="x", retry_after=1.0)
    assert not decide(RetryPolicy(max_attempts=2), 2, error, rng()).retry


def test_attempts_are_counted_from_one() -> None:
    """Asking about attempt 0 is a programming error."""
    with pytest.raises(ValueError, match="counts from 1, got 0"):
        decide(RetryPolicy(), 0, ERROR, rng())


# ------------------------------------------------------------------------- lost attempts

LOST = ErrorInfo(kind="lost", message="no report")


def test_max_lost_defaults_to_ten_and_is_checked() -> None:
    """max_lost: 10 by default, a whole number from 0 to 1000."""
    assert RetryPolicy().max_lost == 10
    assert RetryPolicy.from_mapping({"max_lost": "0"}).max_lost == 0
    with pytest.raises(ConfigError, match="max_lost must be an integer from 0 to 1000, got 1001"):
        RetryPolicy(max_lost=1001)


def test_a_lost_attempt_retries_without_spending_an_attempt() -> None:
    """Lost attempts retry up to max_lost times, whatever max_attempts says, and spend none."""
    policy = RetryPolicy(max_attempts=1, max_lost=3, jitter=0)
    decisions = [decide_lost(policy, n, LOST, rng()) for n in (1, 2, 3)]
    assert [(d.retry, d.spends_attempt) for d in decisions] == [(True, False)] * 3
    assert decisions[0].reason == "lost 1 of at most 3: again in 1.00s, no attempt spent"


def test_lost_attempts_back_off_like_failures() -> None:
    """The n-th lost attempt waits what the n-th retry would: initial * multiplier ** (n - 1),
    capped at max_delay, plus jitter from the injected rng."""
    policy = RetryPolicy(initial_delay=0.5, multiplier=3.0, max_delay=10.0, jitter=0)
    delays = [decide_lost(policy, n, LOST, rng()).delay for n in range(1, 6)]
    assert delays == [0.5, 1.5, 4.5, 10.0, 10.0]
    jittery = RetryPolicy(initial_delay=2.0, jitter=1.0)
    expected = 2.0 + random.Random(42).uniform(0.0, 1.0)
    assert decide_lost(jittery, 1, LOST, rng()).delay == pytest.approx(expected)


def test_past_max_lost_the_task_fails() -> None:
    """The lost attempt after max_lost ends the task (a poison task still ends); 0 = at once."""
    assert decide_lost(RetryPolicy(max_lost=3), 4, LOST, rng()) == RetryDecision(
        False, 0.0, "lost 4 times, more than max_lost (3)"
    )
    assert not decide_lost(RetryPolicy(max_lost=0), 1, LOST, rng()).retry


def test_the_error_rules_still_hold_for_lost() -> None:
    """retry_on without lost, never_on with it, a lost error marked not retryable: no retry."""
    assert not decide_lost(RetryPolicy(retry_on=("timeout",)), 1, LOST, rng()).retry
    assert not decide_lost(RetryPolicy(never_on=("lost",)), 1, LOST, rng()).retry
    refused = ErrorInfo(kind="lost", message="x", retryable=False)
    assert not decide_lost(RetryPolicy(), 1, refused, rng()).retry
    with pytest.raises(ValueError, match="lost counts from 1"):
        decide_lost(RetryPolicy(), 0, LOST, rng())


def event(kind: str, error_kind: str | None = None) -> TaskEvent:
    detail = {"error": {"kind": error_kind}} if error_kind else {}
    return TaskEvent("w/a", "w", 0.0, kind, 1, detail=detail)


def test_lost_in_budget_counts_lost_failures_since_the_last_operator_retry() -> None:
    """Lost failures (retrying or failed lines) count; other errors, rate limits and lines with
    no error do not; an operator's retry starts the count again."""
    history = [
        event("dispatched"),
        event("retrying", "lost"),
        event("retrying", "error"),
        event("rate_limited", "rate_limited"),
        event("failed", "lost"),
        event("retried"),
        event("retrying", "lost"),
        event("waiting"),
    ]
    assert lost_in_budget(history[:5]) == 2
    assert lost_in_budget(history) == 1
    assert lost_in_budget([]) == 0
