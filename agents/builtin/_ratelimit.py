"""How long a provider asked us to wait: its rate-limit headers read as seconds from now.

Pure functions over an answer's headers and the current time, shared by the ``http`` and
``anthropic`` kinds. Order of trust: ``retry-after-ms``, then ``retry-after`` (seconds, or an
HTTP date), then the ``anthropic-ratelimit-<limit>-reset`` times (RFC 3339) of the limits whose
``-remaining`` is 0 (the latest of them: every exhausted limit must have reset).
"""

from __future__ import annotations

import email.utils
import math
from datetime import datetime
from typing import Protocol

RATE_LIMIT_STATUSES = frozenset({429, 529})
"""Answers that mean "too much, come back later": 429 Too Many Requests and Anthropic's 529
Overloaded."""

LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")
"""The limits Anthropic reports in ``anthropic-ratelimit-<limit>-{remaining,reset}``."""


class Headers(Protocol):
    """Case-insensitive header lookup (``email.message.Message``, ``httpx.Headers``)."""

    def get(self, name: str, /) -> str | None: ...


def retry_after(headers: Headers | None, now: float) -> float | None:
    """Seconds to wait from ``now`` (Unix seconds), or None when the headers say nothing usable.

    Never negative: a time already past gives 0.
    """
    if headers is None:
        return None
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = headers.get("retry-after")
    if value is not None:
        seconds = _number(value)
        if seconds is not None:
            return seconds
        at = http_date(value)
        if at is not None:
            return max(0.0, at - now)
    resets = []
    for limit in LIMITS:
        remaining = headers.get(f"anthropic-ratelimit-{limit}-remaining")
        reset = headers.get(f"anthropic-ratelimit-{limit}-reset")
        if reset is None or remaining is None or remaining.strip() != "0":
            continue
        at = rfc3339(reset)
        if at is not None:
            resets.append(at)
    return max(0.0, max(resets) - now) if resets else None


def http_date(value: str) -> float | None:
    """An HTTP date (``Wed, 21 Oct 2015 07:28:00 GMT``) as Unix seconds, or None."""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def rfc3339(value: str) -> float | None:
    """An RFC 3339 time (``2026-12-07T09:30:00Z``) as Unix seconds, or None."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _number(value: str | None) -> float | None:
    """A finite number >= 0 written in ``value``, or None."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
