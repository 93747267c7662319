"""How the scheduler paces itself, and the sets of states its rounds look for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agentdeck.core.limits import CapabilityLimits
from agentdeck.core.models import Budget
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.states import TASK_IN_FLIGHT, TaskStatus, WorkflowStatus

T = TaskStatus
W = WorkflowStatus
LEASE_NAME = "scheduler"
"""The Registry lease the scheduler nodes compete for."""
IN_FLIGHT = frozenset(TASK_IN_FLIGHT)
#: Open workflows the repair sweep looks at per round (one query for them, one for the counts
#: of their tasks), so a big store's sweep is spread over rounds rather than stall one.
REPAIR_PAGE = 1000
#: Task statuses that still move a workflow forward with no follow-up needed.
MOVING = frozenset({T.READY, T.DISPATCHED, T.RUNNING, T.RETRYING})
REPORT_WAIT = 0.25
"""The part of ``poll_interval`` after tasks were sent during which their reports are taken
to be on their way (see :meth:`SchedulerBase._report_coming`)."""

#: Workflow statuses whose tasks may still move (the others' tasks are all final).
OPEN_WORKFLOWS = frozenset({W.RUNNING, W.PAUSED})


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """How the scheduler paces itself.

    ``poll_interval``: the longest it idles before looking at the Store again (work submitted by
    another process is noticed within it). ``batch_size``: most tasks dispatched or reports
    applied per round. ``lost_grace``: seconds past a running attempt's timeout before it counts
    as lost. ``lease_ttl``: how long the leader's lease lives unless renewed. ``repair_interval``:
    seconds between the leader's repair sweeps (the first runs when it takes the lease).
    ``dispatch_timeout``: seconds a dispatched attempt may go without a report while its
    capability has an agent with a free slot and an empty queue (``Bus.queued``) before it
    counts as lost; ``max_dispatch_wait``: the longest a waiting attempt's deadline is pushed
    out at a time while its capability is busy or its queue holds messages (the wait doubles
    up to it). ``limits``: per-capability limits (core/limits.py).
    ``label_budgets``: what all the workflows of a label (``name=value``) may spend together
    (core/budgets.py). ``tasks_per_message``: the most tasks one message carries to an agent
    under load (1: one message per task; see :func:`core.scheduler.dispatch.grouped`).
    """

    poll_interval: float = 0.2
    batch_size: int = 500
    lost_grace: float = 5.0
    lease_ttl: float = 4.0
    repair_interval: float = 30.0
    dispatch_timeout: float = 10.0
    max_dispatch_wait: float = 300.0
    default_retry: RetryPolicy = field(default_factory=RetryPolicy)
    capability_retry: Mapping[str, RetryPolicy] = field(default_factory=dict)
    limits: Mapping[str, CapabilityLimits] = field(default_factory=dict)
    label_budgets: Mapping[str, Budget] = field(default_factory=dict)
    tasks_per_message: int = 50
