"""What a handler is given for one task attempt, and the shape of a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from agentdeck.core.logs import get_logger
from agentdeck.core.messages import TaskMessage
from agentdeck.core.models import JSON


def _default_log() -> FilteringBoundLogger:
    return get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TaskContext:
    """One task attempt as an agent's handler sees it.

    ``upstream`` holds the outputs of the tasks this one ``needs``, by task key. ``deadline``
    is the clock time (seconds since the epoch) after which the attempt counts as timed out.
    ``log`` is bound to the task, so every line a handler writes can be traced back to it.
    """

    task_id: str
    workflow_id: str
    key: str
    capability: str
    attempt: int
    input: JSON
    upstream: Mapping[str, JSON]
    agent_id: str
    deadline: float
    log: FilteringBoundLogger = field(default_factory=_default_log, compare=False, repr=False)

    @classmethod
    def for_message(
        cls, message: TaskMessage, *, agent_id: str, now: float, log: FilteringBoundLogger
    ) -> TaskContext:
        """The context for running ``message`` on agent ``agent_id``, starting at ``now``."""
        return cls(
            task_id=message.task_id,
            workflow_id=message.workflow_id,
            key=message.key,
            capability=message.capability,
            attempt=message.attempt,
            input=message.input,
            upstream=dict(message.upstream),
            agent_id=agent_id,
            deadline=now + message.timeout,
            log=log.bind(
                task_id=message.task_id,
                workflow_id=message.workflow_id,
                attempt=message.attempt,
                capability=message.capability,
            ),
        )


Handler = Callable[[TaskContext], Awaitable[JSON]]
"""An agent: takes the attempt's context, returns its JSON output or raises.

Raise :class:`core.errors.TaskFailed` to control retries; any other exception is a retryable
failure named after its class.
"""
