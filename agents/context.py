"""What a handler is given for one task attempt, and the shape of a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from agentdeck.agents.feed import AttemptFeed
from agentdeck.agents.upstream import Upstream
from agentdeck.core.logs import get_logger
from agentdeck.core.messages import TaskMessage
from agentdeck.core.models import JSON
from agentdeck.core.outputs import OutputStore


def _default_log() -> FilteringBoundLogger:
    return get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TaskContext:
    """One task attempt as an agent's handler sees it.

    ``upstream`` holds the outputs of the tasks this one ``needs``, by task key: the whole
    output, a large one fetched from the blob store when first read (:mod:`agents.upstream`;
    :meth:`load_upstream` fetches without holding the event loop). ``deadline``
    is the clock time (seconds since the epoch) after which the attempt counts as timed out.
    ``log`` is bound to the task, so every line a handler writes can be traced back to it.
    ``feed`` takes what the handler reports while it runs (:meth:`usage`, :meth:`progress`,
    :meth:`emit`; see :mod:`agents.feed`).
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
    feed: AttemptFeed = field(default_factory=AttemptFeed, compare=False, repr=False)

    def usage(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cost_usd: float | None = None,
        model: str | None = None,
    ) -> None:
        """Count what one model call spent. Every call of the attempt is summed and sent on
        its final report, succeeded or failed; ``input_tokens`` excludes the cache tokens (as
        the Messages API counts them); ``cost_usd`` None: not known. Raises TaskFailed
        (``bad_usage``, not retryable) for a negative or non-integer count."""
        self.feed.add_usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_creation_input_tokens=cache_creation_input_tokens,
            cache_read_input_tokens=cache_read_input_tokens,
            cost_usd=cost_usd,
            model=model,
        )

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Tell watchers how far the attempt is (a ``progress`` event): ``fraction`` from 0
        to 1 and/or a short ``message``. Best effort: never blocks; dropped when the agent
        publishes too many events."""
        self.feed.progress(fraction, message)

    def emit(self, text: str) -> None:
        """Stream partial output to watchers (``output`` events), e.g. a model's text as it
        is generated. Best effort like :meth:`progress`; the output that counts is the
        handler's return value."""
        self.feed.emit(text)

    async def load_upstream(self, *keys: str) -> None:
        """Fetch the large upstream outputs of ``keys`` (none given: all) without holding the
        event loop, so reading ``upstream[key]`` afterwards is instant; worth it for a large
        output on a remote blob store. Raises KeyError for a key that is not upstream,
        TaskFailed (``upstream_unreadable``) for an output that cannot be read."""
        if isinstance(self.upstream, Upstream):
            await self.upstream.load(*keys)
        else:
            missing = [k for k in keys if k not in self.upstream]
            if missing:
                raise KeyError(f"{missing[0]!r} is not an upstream task of this one")

    @classmethod
    def for_message(
        cls,
        message: TaskMessage,
        *,
        agent_id: str,
        now: float,
        log: FilteringBoundLogger,
        feed: AttemptFeed | None = None,
        outputs: OutputStore | None = None,
    ) -> TaskContext:
        """The context for running ``message`` on agent ``agent_id``, starting at ``now``
        (``feed``: where its usage, progress and output go; None: a fresh one, going nowhere;
        ``outputs``: where its large upstream outputs are read from; None: nowhere, so
        reading one fails the attempt as ``upstream_unreadable``)."""
        return cls(
            task_id=message.task_id,
            workflow_id=message.workflow_id,
            key=message.key,
            capability=message.capability,
            attempt=message.attempt,
            input=message.input,
            upstream=Upstream(message.upstream, outputs),
            agent_id=agent_id,
            deadline=now + message.timeout,
            log=log.bind(
                task_id=message.task_id,
                workflow_id=message.workflow_id,
                attempt=message.attempt,
                capability=message.capability,
            ),
            feed=feed or AttemptFeed(),
        )


Handler = Callable[[TaskContext], Awaitable[JSON]]
"""An agent: takes the attempt's context, returns its JSON output or raises.

Raise :class:`core.errors.TaskFailed` to control retries; any other exception is a retryable
failure named after its class.
"""
