"""The agent runtime and the built-in agents.

Write an agent as a decorated function (:func:`agent`), or configure a built-in one
(:mod:`agents.builtin`); a :class:`~agents.worker.Worker` runs handlers for task messages and
:func:`agents.main.run_worker` runs a worker as a process. This package imports only ``core``.
"""

from agentdeck.agents.context import Handler, TaskContext
from agentdeck.agents.decorator import AGENTS, AgentDef, agent, load_callable

__all__ = ["AGENTS", "AgentDef", "Handler", "TaskContext", "agent", "load_callable"]
