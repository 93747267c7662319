"""Which errors a reconnection or a moment's wait may cure, and which it cannot."""

from __future__ import annotations

from urllib.parse import unquote

from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
)

from agentdeck.core.errors import AgentdeckError

#: Errors that mean "the broker or the connection is not there right now": worth retrying.
RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, TimeoutError)


class Unconfirmed(AgentdeckError):
    """Part of a batch was not confirmed (retried, then reported as BackendUnavailable)."""


RETRY_PUBLISH: tuple[type[BaseException], ...] = (*RETRYABLE, Unconfirmed)
#: Channel errors that trying again cannot fix: a queue with other arguments, no permission.
PERMANENT: tuple[type[BaseException], ...] = (
    ChannelPreconditionFailed,
    ChannelAccessRefused,
    ChannelNotFoundEntity,
    ChannelLockedResource,
)


def transient(exc: BaseException) -> bool:
    """True for errors a reconnection or a moment's wait may cure."""
    return isinstance(exc, RETRY_PUBLISH) and not isinstance(exc, PERMANENT)


def nacked(exc: BaseException) -> bool:
    """True when the broker refused a confirmed publish with ``basic.nack`` (not a return of
    an unroutable message, not a lost connection)."""
    return type(exc) is DeliveryError and type(exc.frame).__name__ == "Nack"


def describe(exc: BaseException, password: str | None) -> str:
    """``exc`` as one line, with ``password`` (as written in the URL or decoded) blanked."""
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":") if str(exc) else type(exc).__name__
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return " ".join(text.split())
