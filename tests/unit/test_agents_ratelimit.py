"""Reading how long a provider asked us to wait from its answer's headers."""

from __future__ import annotations

import email.message
import email.utils

import pytest

from agentdeck.agents.builtin._ratelimit import http_date, retry_after, rfc3339

NOW = 1_795_650_000.0


def headers(**values: str) -> email.message.Message:
    """Headers as urllib hands them over (case-insensitive); ``_`` in a name becomes ``-``."""
    message = email.message.Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


@pytest.mark.parametrize(
    ("given", "wait"),
    [
        ({"Retry_After": "7"}, 7.0),
        ({"retry_after": "2.5"}, 2.5),
        ({"retry_after_ms": "1500", "retry_after": "9"}, 1.5),
        ({"Retry_After": email.utils.formatdate(NOW + 120, usegmt=True)}, 120.0),
        ({"Retry_After": email.utils.formatdate(NOW - 120, usegmt=True)}, 0.0),
        ({"Retry_After": "soon"}, None),
        ({"Retry_After": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after_in_seconds_milliseconds_or_an_http_date(
    given: dict[str, str], wait: float | None
) -> None:
    """retry-after-ms beats retry-after; seconds or an HTTP date; nonsense is no answer."""
    assert retry_after(headers(**given), NOW) == wait


def test_the_reset_times_of_exhausted_limits_when_there_is_no_retry_after() -> None:
    """Without retry-after, the latest reset among limits with nothing remaining counts."""
    given = headers(
        anthropic_ratelimit_requests_remaining="0",
        anthropic_ratelimit_requests_reset="2026-11-24T12:00:30Z",
        anthropic_ratelimit_tokens_remaining="0",
        anthropic_ratelimit_tokens_reset="2026-11-24T12:01:00Z",
        anthropic_ratelimit_output_tokens_remaining="500",
        anthropic_ratelimit_output_tokens_reset="2026-11-24T12:05:00Z",
    )
    now = rfc3339("2026-11-24T12:00:00Z")
    assert now is not None
    assert retry_after(given, now) == 60.0


def test_no_headers_no_answer() -> None:
    """An answer without headers gives no wait."""
    assert retry_after(None, NOW) is None


def test_dates_without_a_zone_are_not_guessed() -> None:
    """A time with no zone is refused rather than read in the machine's local time."""
    assert rfc3339("2026-11-24T12:00:00") is None
    assert http_date("not a date") is None
