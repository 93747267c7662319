"""The retry policy: how many attempts a task gets, how long to wait between them, and which
errors deserve another try.

:class:`RetryPolicy` is plain data, written per task in a spec or per capability in settings.
:func:`decide` is the one place that turns a failed attempt into "retry after N seconds" or
"give up, because ..."; :func:`decide_lost` does the same for an attempt that ended with no
report at all (``lost``), which spends no attempt and has a bound of its own. The backoff
maths is tenacity's (``wait_exponential`` and ``stop_after_attempt``); the jitter comes from
an injected :class:`random.Random` so tests are repeatable.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import tenacity
from pydantic import ConfigDict, TypeAdapter, ValidationError

from agentdeck.core.errors import ConfigError
from agentdeck.core.models import JSON, ErrorInfo, TaskEvent

LOST = "lost"
"""The error kind of an attempt that ended with no report (its dispatch deadline passed while an
agent had a free slot, it outlived its timeout + grace, or its agent stopped sending
heartbeats). It says where the attempt's messages or agent went, not how the task behaves:
mostly a host or an engine failing over. So it spends no attempt of ``max_attempts`` and counts
in no breaker; ``max_lost`` bounds it instead (:func:`decide_lost`)."""


@dataclass(frozen=True)
class RetryPolicy:
    """When and how a failed task is tried again.

    The wait before retry ``n`` (``n`` = 1 after the first failed attempt) is
    ``initial_delay * multiplier ** (n - 1)`` plus up to ``jitter`` random seconds, never more
    than ``max_delay``. An agent may ask for a delay of its own (``retry_after``); the policy's
    ``max_delay`` still caps it.
    """

    # Lets pydantic (used by :meth:`from_mapping` to coerce "5" to 5) refuse unknown keys.
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    max_attempts: int = 3
    """Attempts in all, the first one included (1 = never retry). 1..100."""

    initial_delay: float = 1.0
    """Seconds to wait before the first retry. 0..3600."""

    max_delay: float = 60.0
    """The longest wait between two attempts, jitter included. ``initial_delay``..86400."""

    multiplier: float = 2.0
    """Each wait is this many times the one before (1 = constant delay). 1..10."""

    jitter: float = 1.0
    """Up to this many random seconds added to each wait, so retries of many tasks that
    failed together do not all land at once. 0..60."""

    retry_on: tuple[str, ...] = ()
    """Error kinds that may retry (``timeout``, ``lost``, ...); empty means every kind that is
    retryable and not in ``never_on``."""

    never_on: tuple[str, ...] = ("permanent", "malformed")
    """Error kinds that never retry, whatever ``retry_on`` says."""

    max_lost: int = 10
    """Attempts failed as ``lost`` a task may have in one retry budget (since it was submitted
    or an operator retried it). They spend none of ``max_attempts``, so an outage does not fail
    tasks for good; past this many the task fails (a poison task that kills or loses every
    agent it reaches still ends). 0 = the first lost attempt fails the task. 0..1000."""

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        """Raise :class:`ConfigError` naming each field out of its range."""
        problems = [
            *_number_problem("max_attempts", self.max_attempts, 1, 100, integer=True),
            *_number_problem("max_lost", self.max_lost, 0, 1000, integer=True),
            *_number_problem("initial_delay", self.initial_delay, 0, 3600),
            *_number_problem("multiplier", self.multiplier, 1, 10),
            *_number_problem("jitter", self.jitter, 0, 60),
            *_kinds_problem("retry_on", self.retry_on),
            *_kinds_problem("never_on", self.never_on),
        ]
        if not any(p.startswith("initial_delay") for p in problems):
            problems += _number_problem(
                "max_delay", self.max_delay, self.initial_delay, 86400, low_name="initial_delay"
            )
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The names a retry mapping may use, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "retry") -> RetryPolicy:
        """Build a policy from a spec's or a config file's mapping; absent keys keep defaults.

        Numbers given as strings (environment variables) are converted. Raises
        :class:`ConfigError` (its message starting with ``where``, when given) for unknown
        keys, wrong types and values out of range.
        """
        at = f"{where}: " if where else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{at}expected a mapping of retry settings, got {data!r}")
        allowed = cls.fields()
        unknown = [str(k) for k in data if k not in allowed]
        if unknown:
            raise ConfigError(
                f"{at}unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                f"allowed: {', '.join(allowed)}"
            )
        try:
            return _ADAPTER.validate_python(dict(data))
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e['input']!r})"
                for e in exc.errors()
            ]
            raise ConfigError(f"{at}{'; '.join(problems)}") from None
        except ConfigError as exc:
            raise ConfigError(f"{at}{exc}") from None

    def to_dict(self) -> dict[str, JSON]:
        """As a JSON object that :meth:`from_mapping` reads back."""
        return {
            f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
            for f in dataclasses.fields(self)
        }


_ADAPTER: TypeAdapter[RetryPolicy] = TypeAdapter(RetryPolicy)


def _number_problem(
    name: str, value: object, low: float, high: float, *, integer: bool = False, low_name: str = ""
) -> list[str]:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if integer and isinstance(value, float):
        is_number = False
    # ``low <= value <= high`` is False for NaN, so NaN is refused too.
    if is_number and isinstance(value, int | float) and low <= value <= high:
        return []
    kind = "an integer" if integer else "a number"
    lowest = f"{low_name} ({low:g})" if low_name else f"{low:g}"
    return [f"{name} must be {kind} from {lowest} to {high:g}, got {value!r}"]


def _kinds_problem(name: str, value: object) -> list[str]:
    if isinstance(value, tuple) and all(isinstance(v, str) and v for v in value):
        return []
    return [f"{name} must be a list of error kinds (non-empty strings), got {value!r}"]


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt."""

    retry: bool
    """True: dispatch the task again after ``delay``; False: the task has failed."""

    delay: float
    """Seconds to wait before the next attempt (0 when not retrying)."""

    reason: str
    """Why, in words for the task's history and the UI."""

    spends_attempt: bool = True
    """False for a ``lost`` attempt (:func:`decide_lost`): the next attempt is not counted in
    ``max_attempts`` (the budget's start moves up by one)."""


def decide(
    policy: RetryPolicy, attempts_used: int, error: ErrorInfo, rng: random.Random
) -> RetryDecision:
    """Whether attempt ``attempts_used`` (counted from 1 in the current budget), which failed
    with ``error``, gets another try, and after how long.

    No retry when the error is marked not retryable, its kind is in ``never_on``, ``retry_on``
    is set and lacks it, or the policy's attempts are spent.
    """
    if attempts_used < 1:
        raise ValueError(f"attempts_used counts from 1, got {attempts_used}")
    refused = _refused(policy, error)
    if refused is not None:
        return refused
    retrying, state = _tenacity(policy, policy.max_attempts, attempts_used)
    if retrying.stop(state):
        return RetryDecision(
            False, 0.0, f"attempts spent ({attempts_used} of {policy.max_attempts})"
        )

    next_attempt = f"attempt {attempts_used + 1} of {policy.max_attempts}"
    if error.retry_after is not None:
        delay = min(max(0.0, error.retry_after), policy.max_delay)
        return RetryDecision(True, delay, f"{next_attempt} in {delay:g}s, as the agent asked")
    backoff = float(retrying.wait(state))
    delay = min(backoff + rng.uniform(0.0, policy.jitter), policy.max_delay)
    return RetryDecision(True, delay, f"{next_attempt} in {delay:.2f}s")


def decide_lost(
    policy: RetryPolicy, lost: int, error: ErrorInfo, rng: random.Random
) -> RetryDecision:
    """Whether a task whose attempt just failed as ``lost`` (:data:`LOST`), its ``lost``-th
    lost attempt in the current budget (counted from 1, this one included), is tried again.

    The rules of :func:`decide` that look at the error (``retryable``, ``never_on``,
    ``retry_on``) hold as they are. Then, instead of ``max_attempts``: the task fails once
    ``lost`` exceeds ``max_lost``; otherwise it retries without spending an attempt
    (``spends_attempt`` False), after the policy's backoff for retry number ``lost`` (so many
    losses in a row wait longer and longer, up to ``max_delay``) plus jitter. An agent's
    ``retry_after`` means nothing here: no agent reported.
    """
    if lost < 1:
        raise ValueError(f"lost counts from 1, got {lost}")
    refused = _refused(policy, error)
    if refused is not None:
        return refused
    if lost > policy.max_lost:
        return RetryDecision(
            False, 0.0, f"lost {lost} times, more than max_lost ({policy.max_lost})"
        )
    retrying, state = _tenacity(policy, policy.max_lost + 1, lost)
    backoff = float(retrying.wait(state))
    delay = min(backoff + rng.uniform(0.0, policy.jitter), policy.max_delay)
    return RetryDecision(
        True,
        delay,
        f"lost {lost} of at most {policy.max_lost}: again in {delay:.2f}s, no attempt spent",
        spends_attempt=False,
    )


def lost_in_budget(history: Sequence[TaskEvent]) -> int:
    """How many of a task's attempts failed as ``lost`` in its current retry budget, read from
    its history (oldest first): the failures (``retrying`` or ``failed`` lines) whose error
    kind is :data:`LOST`, since the task was submitted or last retried by an operator (a
    ``retried`` line starts a fresh budget)."""
    count = 0
    for event in history:
        if event.kind == "retried":
            count = 0
            continue
        error = event.detail.get("error")
        if isinstance(error, Mapping) and error.get("kind") == LOST:
            count += 1
    return count


def _refused(policy: RetryPolicy, error: ErrorInfo) -> RetryDecision | None:
    """The decision not to retry ``error`` whatever the count, or None."""
    if not error.retryable:
        return RetryDecision(False, 0.0, f"error {error.kind!r} is not retryable")
    if error.kind in policy.never_on:
        return RetryDecision(False, 0.0, f"error {error.kind!r} never retries (never_on)")
    if policy.retry_on and error.kind not in policy.retry_on:
        allowed = ", ".join(policy.retry_on)
        return RetryDecision(False, 0.0, f"error {error.kind!r} is not in retry_on ({allowed})")
    return None


def _tenacity(
    policy: RetryPolicy, stop_after: int, attempt: int
) -> tuple[tenacity.Retrying, tenacity.RetryCallState]:
    """tenacity's strategies and a call state at ``attempt``: after attempt n fails, tenacity
    waits ``initial_delay * multiplier ** (n - 1)`` (at most ``max_delay``) before n + 1."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(stop_after),
        wait=tenacity.wait_exponential(
            multiplier=policy.initial_delay, exp_base=policy.multiplier, max=policy.max_delay
        ),
    )
    state = tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return retrying, state
