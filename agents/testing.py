"""Helpers for testing agents: build a :class:`~agents.context.TaskContext` without a worker.

from agentdeck.agents.testing import make_context
assert await my_handler(make_context({"text": "a b"})) == {"words": 2}
"""

from __future__ import annotations

from collections.abc import Mapping

from agentdeck.agents.context import TaskContext
from agentdeck.core.models import JSON


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
) -> TaskContext:
    """A context for task ``key`` of workflow ``workflow_id`` with the given input."""
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
    )
