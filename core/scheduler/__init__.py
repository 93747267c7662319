"""The scheduler: the one writer of task state.

One node at a time holds the scheduler lease (its fencing token goes with every write). The
leader loops: apply agents' reports, carry out operators' commands, promote retries whose delay
has passed, fail attempts that outlived their deadline, and dispatch ready tasks. Every step
reads the Store and writes it with compare-and-set, so a duplicate or late report, or a second
scheduler that lost its lease, changes nothing.

The package, one module per concern:

- ``config``: :class:`SchedulerConfig` and the sets of states the rounds look for;
- ``observer``: :class:`SchedulerObserver`, the one interface through which the scheduler tells
  the node what happened (the events feed, metrics and tracing implement it);
- ``feed``: the events feed, an observer publishing to the bus's events stream;
- ``base``: the shared state and the one place task changes are written;
- ``leadership``: the lease, taking over, stepping down;
- ``dispatch``: ready tasks published and recorded;
- ``reports``: agents' reports applied;
- ``followups``: failed attempts, skipped dependents, finished workflows;
- ``repair``: due retries, deadlines, lost agents, the repair sweep;
- ``commands``: operators' commands, one handler per action of core/actions.py;
- ``loop``: :class:`Scheduler`, the rounds that put them together.
"""

from agentdeck.core.scheduler.config import (
    LEASE_NAME,
    OPEN_WORKFLOWS,
    REPAIR_PAGE,
    SchedulerConfig,
)
from agentdeck.core.scheduler.feed import EventsFeed
from agentdeck.core.scheduler.loop import Scheduler
from agentdeck.core.scheduler.observer import Observers, SchedulerObserver
from agentdeck.core.scheduler.summary import summarize

__all__ = [
    "LEASE_NAME",
    "OPEN_WORKFLOWS",
    "REPAIR_PAGE",
    "EventsFeed",
    "Observers",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerObserver",
    "summarize",
]
