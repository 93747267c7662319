"""A token bucket: at most ``burst`` at once, refilled at ``rate`` a second of the clock given.

The one rate limiter for the streams that must not flood the events stream (log lines, progress
and output, spans): each offers an item only when :meth:`TokenBucket.take` says yes, and counts
the rest as dropped.
"""

from __future__ import annotations

from agentdeck.core.clock import Clock


class TokenBucket:
    """Starts full; :meth:`take` spends one token if there is one."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._filled_at = clock.now()

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate:g}/s burst={self.burst} tokens={self._tokens:.1f}>"

    def take(self) -> bool:
        """True (and one token fewer) if a token is left after refilling for the time passed."""
        now = self._clock.now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
