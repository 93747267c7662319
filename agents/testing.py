"""Helpers for testing agents: build a :class:`~agents.context.TaskContext` without a worker.

from agentdeck.agents.testing import make_context
assert await my_handler(make_context({"text": "a b"})) == {"words": 2}

The context's ``feed`` is a :class:`RecordingFeed`: what the handler reported with
``ctx.usage``, ``ctx.progress`` and ``ctx.emit`` can be read back from it.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentdeck.agents.context import TaskContext
from agentdeck.agents.feed import AttemptFeed
from agentdeck.core.models import JSON


class RecordingFeed(AttemptFeed):
    """An attempt feed that keeps every progress report and every piece of output."""

    def __init__(self) -> None:
        super().__init__()
        self.progressed: list[tuple[float | None, str | None]] = []
        self.emitted: list[str] = []

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        super().progress(fraction, message)  # the same checks as the real thing
        self.progressed.append((fraction, message))

    def emit(self, text: str) -> None:
        super().emit(text)
        self.emitted.append(text)

    @property
    def text(self) -> str:
        """All the output emitted, joined."""
        return "".join(self.emitted)


def make_context(
    input: JSON = None,
    *,
    upstream: Mapping[str, JSON] | None = None,
    attempt: int = 1,
    key: str = "t",
    workflow_id: str = "wf",
    capability: str = "test",
    agent_id: str = "agent-test",
    deadline: float = 1_700_000_060.0,
    feed: AttemptFeed | None = None,
) -> TaskContext:
    """A context for task ``key`` of workflow ``workflow_id`` with the given input (``feed``:
    where its usage, progress and output go; default a fresh :class:`RecordingFeed`)."""
    return TaskContext(
        task_id=f"{workflow_id}/{key}",
        workflow_id=workflow_id,
        key=key,
        capability=capability,
        attempt=attempt,
        input=input,
        upstream=dict(upstream or {}),
        agent_id=agent_id,
        deadline=deadline,
        feed=feed if feed is not None else RecordingFeed(),
    )
