"""Operator actions: the one table every part reads.

The client validates a command's target by :attr:`ActionSpec.target`, the scheduler dispatches on
:class:`Action`, the CLI registers one command per row (its help text and metavar), the control
centre asks "Retry task wf/a?" with :attr:`ActionSpec.verb`, and ``--read-only`` hides every
action whose :attr:`ActionSpec.mutating` is set. A new action is a new row here, and each of those
places either handles it or fails a test that walks the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from agentdeck.core.errors import AgentdeckError


class Action(StrEnum):
    """What an operator can ask the scheduler to do (the value is how it is spelled everywhere:
    the CLI command, the command row in the Store, the action log)."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"
    TRIP = "trip"
    RESET = "reset"
    DRAIN = "drain"
    UNDRAIN = "undrain"
    PAUSE_CAPABILITY = "pause-capability"
    RESUME_CAPABILITY = "resume-capability"
    REQUEUE = "requeue"
    BUDGET = "budget"
    RELOAD = "reload"


class TargetKind(StrEnum):
    """What an action's target names, and so how it is checked before the command is queued."""

    WORKFLOW = "workflow"
    """A workflow id (it must exist)."""
    TASK_OR_WORKFLOW = "task-or-workflow"
    """A task id ``wf/key`` or a workflow id (it must exist)."""
    BREAKER = "breaker"
    """A breaker name: ``capability:<name>``, ``agent:<id>`` or a bare capability."""
    AGENT = "agent"
    """An agent id, or ``*`` for every agent (the scheduler checks it is live)."""
    CAPABILITY = "capability"
    """A capability name."""
    DEAD_LETTER = "dead-letter"
    """A dead letter's id."""
    NODE = "node"
    """A scheduler node's name, or ``leader`` for whichever node holds the lease."""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One operator action.

    ``target``: what the target names. ``verb``: how the action reads in a confirmation
    ("Retry task wf/a?"). ``help``: the CLI command's help text. ``metavar``: the CLI's name for
    the target argument. ``group``: the CLI group the command lives in (None: top level).
    ``mutating``: it changes something (``--read-only`` and read-only roles may not).
    ``value``: the metavar of the value the action takes besides its target, carried in the
    command's ``args`` (None: it takes none). ``default_target``: the target when none is given
    (the CLI's argument is then optional; None: a target must be given).
    """

    action: Action
    target: TargetKind
    verb: str
    help: str
    metavar: str = "TARGET"
    group: str | None = None
    mutating: bool = True
    value: str | None = None
    default_target: str | None = None


LEADER = "leader"
"""The target of a node action that means "whichever node leads now"."""


def _table(*specs: ActionSpec) -> Mapping[Action, ActionSpec]:
    table = {s.action: s for s in specs}
    missing = set(Action) - set(table)
    if missing:  # pragma: no cover - caught by every test run at import
        raise AssertionError(f"actions without a spec: {sorted(missing)}")
    return table


ACTIONS: Mapping[Action, ActionSpec] = _table(
    ActionSpec(
        Action.CANCEL,
        TargetKind.WORKFLOW,
        "Cancel",
        "Cancel a workflow: unfinished tasks are cancelled, running ones told to stop.",
    ),
    ActionSpec(
        Action.RETRY,
        TargetKind.TASK_OR_WORKFLOW,
        "Retry",
        "Retry a failed task (WF/KEY), or every failed task of a workflow.",
    ),
    ActionSpec(
        Action.PAUSE,
        TargetKind.WORKFLOW,
        "Pause",
        "Pause a workflow: running tasks finish, nothing new is dispatched.",
    ),
    ActionSpec(Action.RESUME, TargetKind.WORKFLOW, "Resume", "Resume a paused workflow."),
    ActionSpec(
        Action.DRAIN,
        TargetKind.AGENT,
        "Drain",
        "Drain agent AGENT (* for all): it finishes what runs, takes nothing new.",
        metavar="AGENT",
    ),
    ActionSpec(
        Action.UNDRAIN,
        TargetKind.AGENT,
        "Undrain",
        "Let a drained agent AGENT (* for all) take tasks again.",
        metavar="AGENT",
    ),
    ActionSpec(
        Action.PAUSE_CAPABILITY,
        TargetKind.CAPABILITY,
        "Pause",
        "Pause capability CAP: none of its ready tasks is dispatched until resumed.",
        metavar="CAP",
    ),
    ActionSpec(
        Action.RESUME_CAPABILITY,
        TargetKind.CAPABILITY,
        "Resume",
        "Resume a paused capability CAP.",
        metavar="CAP",
    ),
    ActionSpec(
        Action.REQUEUE,
        TargetKind.DEAD_LETTER,
        "Requeue",
        "Put dead letter ID back on its queue.",
        metavar="ID",
    ),
    ActionSpec(
        Action.BUDGET,
        TargetKind.WORKFLOW,
        "Set the budget of",
        "Set workflow WF's budget to VALUE (usd=N and/or tokens=N); a workflow its budget "
        "held resumes once it is within it.",
        metavar="WF",
        value="usd=N|tokens=N",
    ),
    ActionSpec(
        Action.RELOAD,
        TargetKind.NODE,
        "Reload the limits of",
        "Make the leading scheduler re-read capability_limits and label budgets from its config "
        "file, as SIGHUP does; print what changed, or the bad value (the limits in force stay). "
        "NODE: leader (the default) or the leader's node name.",
        metavar="NODE",
        default_target=LEADER,
    ),
    ActionSpec(
        Action.TRIP,
        TargetKind.BREAKER,
        "Trip open",
        "Open breaker NAME (capability:X, agent:ID or a capability) until it is reset.",
        metavar="NAME",
        group="breaker",
    ),
    ActionSpec(
        Action.RESET,
        TargetKind.BREAKER,
        "Reset closed",
        "Close breaker NAME and clear its counts.",
        metavar="NAME",
        group="breaker",
    ),
)


def parse_action(text: str) -> Action:
    """The action spelled ``text``; AgentdeckError naming the known ones otherwise."""
    try:
        return Action(text)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise AgentdeckError(f"unknown action {text!r}; known: {known}") from None
