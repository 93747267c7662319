"""The one error tree of agentdeck.

Every error the program raises on purpose derives from :class:`AgentdeckError`, so the
command line can print it as one clear line and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence


class AgentdeckError(Exception):
    """Root of every error agentdeck raises on purpose."""


class ConfigError(AgentdeckError):
    """A setting, config file or URL is malformed; it names the field and what is allowed."""


class SpecError(AgentdeckError):
    """A workflow spec is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid workflow spec ({len(self.problems)} problem(s)):\n{lines}")


class NotFound(AgentdeckError):
    """A workflow, task, agent or object does not exist."""


class BackendUnavailable(AgentdeckError):
    """A backend cannot be reached. Retryable: the caller may try again later."""


class PermissionDenied(AgentdeckError):
    """The engine refused an action to the authenticated user: its role does not allow it (a
    read-only viewer queueing a command, an operator writing tasks). Not retryable; the
    message names the user, the action and what the role is."""


class ConflictError(AgentdeckError):
    """A compare-and-set lost: the record changed under us (another writer, a stale attempt)."""


class InvalidTransition(AgentdeckError):
    """A state change not in the transition table was asked for."""

    def __init__(self, kind: str, current: str, target: str) -> None:
        self.kind, self.current, self.target = kind, current, target
        super().__init__(f"{kind} cannot go from {current!r} to {target!r}")


class MessageError(AgentdeckError):
    """A bus message could not be decoded. Such messages are dead-lettered, never requeued."""


class LeaseLost(AgentdeckError):
    """This node no longer holds the scheduler lease; it must stop writing."""


class TaskFailed(AgentdeckError):
    """Raised by an agent handler to fail the current attempt with control over retries.

    ``non_retryable`` stops all further attempts; ``retry_after`` asks for a specific delay in
    seconds before the next attempt (the policy's max delay still caps it).
    """

    def __init__(
        self,
        message: str,
        *,
        non_retryable: bool = False,
        retry_after: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.non_retryable = non_retryable
        self.retry_after = retry_after
        self.kind = kind or ("permanent" if non_retryable else "error")


class RateLimited(TaskFailed):
    """Raised by an agent handler when a provider refused the call for its rate limit (an
    HTTP 429 or 529 answer, a Claude usage limit).

    Reported as a failed attempt whose ``error.kind`` is ``rate_limited``. It is backpressure,
    not failure: the scheduler holds the capability until ``retry_after`` seconds have passed
    (None: the provider gave no time) and counts no attempt and no breaker failure for it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after, kind="rate_limited")
