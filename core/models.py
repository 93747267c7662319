"""The records agentdeck keeps: workflows, tasks, task events, agents, commands.

Plain frozen dataclasses: backends build them from rows, core derives new ones with
``dataclasses.replace``. JSON-shaped fields (input, output, error, detail) hold plain
``dict``/``list``/``str``/number values only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agentdeck.core.states import TaskStatus, WorkflowStatus

JSON = Any
"""A value that survives ``json.dumps``/``json.loads`` unchanged."""


def new_id() -> str:
    """A fresh short identifier (12 hex digits: unique enough, short enough to type)."""
    return uuid.uuid4().hex[:12]


def task_id(workflow_id: str, key: str) -> str:
    """The id of the task ``key`` in workflow ``workflow_id``: ``<workflow>/<key>``."""
    return f"{workflow_id}/{key}"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an attempt failed.

    ``kind`` is a short machine word (``error``, ``timeout``, ``lost``, ``permanent``,
    ``malformed``, ``cancelled``, or an exception's class name); ``retryable`` False means the
    retry policy must not try again; ``retry_after`` is a delay the agent asked for.
    """

    kind: str
    message: str
    retryable: bool = True
    retry_after: float | None = None

    def to_dict(self) -> dict[str, JSON]:
        """As a JSON object."""
        return {
            "kind": self.kind,
            "message": self.message,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSON]) -> ErrorInfo:
        """From a JSON object written by :meth:`to_dict`."""
        retry_after = data.get("retry_after")
        return cls(
            kind=str(data.get("kind", "error")),
            message=str(data.get("message", "")),
            retryable=bool(data.get("retryable", True)),
            retry_after=float(retry_after) if retry_after is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """What one attempt spent with a model provider: tokens and, when known, US dollars.

    ``input_tokens`` excludes the cache tokens, as the Messages API counts them:
    ``cache_creation_input_tokens`` were written to the prompt cache and
    ``cache_read_input_tokens`` read from it. ``cost_usd`` is None when it is not known (a
    model missing from the price table). ``model`` names the model, or several joined with
    ``+`` in the order first used (None: not said).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float | None = None
    model: str | None = None

    @property
    def total_tokens(self) -> int:
        """Every token counted: input, output and both kinds of cache token."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        """The two summed. The cost is unknown (None) if either is: a partial sum would
        under-count the spending. Models are joined with ``+``, each named once."""
        if not isinstance(other, Usage):
            return NotImplemented
        cost = (
            None
            if self.cost_usd is None or other.cost_usd is None
            else self.cost_usd + other.cost_usd
        )
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=(
                self.cache_creation_input_tokens + other.cache_creation_input_tokens
            ),
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cost_usd=cost,
            model=_join_models(self.model, other.model),
        )

    def to_dict(self) -> dict[str, JSON]:
        """As a JSON object (the wire form's fields)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cost_usd": self.cost_usd,
            "model": self.model,
        }


@dataclass(frozen=True, slots=True)
class AttemptUsage:
    """The usage record of one attempt, as the Store keeps it: written with the change that
    ended the attempt, at ``at``."""

    task_id: str
    workflow_id: str
    attempt: int
    usage: Usage
    at: float


def _join_models(first: str | None, second: str | None) -> str | None:
    if not first or not second:
        return first or second
    names = first.split("+")
    names += [name for name in second.split("+") if name not in names]
    return "+".join(names)


@dataclass(frozen=True, slots=True)
class Workflow:
    """A submitted DAG of tasks."""

    id: str
    name: str
    status: WorkflowStatus
    created_at: float
    updated_at: float
    task_count: int
    finished_at: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    budget: Budget | None = None
    """What the workflow may spend (None: no budget of its own)."""
    hold_reason: str | None = None
    """Why the scheduler paused it (e.g. its budget is spent); None when it is not paused, or
    an operator paused it."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit: ``usd`` US dollars and/or ``tokens`` (input + output tokens, the
    count ``tokens_per_minute`` limits use too: cache reads are cheap and a Claude Code run
    reads millions of them, so counting them would spend a token budget on nothing). None:
    no limit of that kind. Build it with :func:`core.budgets.budget_from` to check it."""

    usd: float | None = None
    tokens: int | None = None

    def to_dict(self) -> dict[str, JSON]:
        """As a JSON object (the keys set only)."""
        out: dict[str, JSON] = {}
        if self.usd is not None:
            out["usd"] = self.usd
        if self.tokens is not None:
            out["tokens"] = self.tokens
        return out


@dataclass(frozen=True, slots=True)
class Task:
    """One node of a workflow's DAG, and everything known about its current attempt.

    ``attempt`` counts dispatches and, with ``id``, is the compare-and-set key for results.
    ``first_attempt`` is where the current retry budget began (an operator's retry starts a
    fresh budget). ``pending`` counts dependencies that have not succeeded yet.
    ``retry`` is the task's own retry policy as written in the spec (None: the capability's
    or the default one). ``deadline`` is when a running attempt counts as lost;
    ``not_before`` is when a retrying task may be dispatched again.
    """

    id: str
    workflow_id: str
    key: str
    capability: str
    status: TaskStatus
    input: JSON
    needs: tuple[str, ...]
    pending: int
    created_at: float
    updated_at: float
    timeout: float = 60.0
    attempt: int = 0
    first_attempt: int = 1
    retry: Mapping[str, JSON] | None = None
    output: JSON = None
    error: ErrorInfo | None = None
    agent_id: str | None = None
    not_before: float | None = None
    deadline: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def attempts_used(self) -> int:
        """Attempts made in the current retry budget."""
        return max(0, self.attempt - self.first_attempt + 1)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One line of a task's history: a transition or a notable fact (``redelivered``)."""

    task_id: str
    workflow_id: str
    at: float
    kind: str
    attempt: int
    from_status: TaskStatus | None = None
    to_status: TaskStatus | None = None
    agent_id: str | None = None
    detail: Mapping[str, JSON] = field(default_factory=dict)
    seq: int = 0
    """Position in the store's global event order; set by the store."""


class AgentState(StrEnum):
    """An agent's life as discovery sees it."""

    UP = "up"
    DRAINING = "draining"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """A live agent process as published to the registry by its heartbeats."""

    id: str
    name: str
    capabilities: tuple[str, ...]
    concurrency: int
    state: AgentState
    started_at: float
    last_seen: float
    in_flight: int = 0
    host: str = ""
    pid: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def load(self) -> float:
        """Share of the agent's slots in use (0 idle, 1 full)."""
        return self.in_flight / self.concurrency if self.concurrency else 1.0


class CommandStatus(StrEnum):
    """Where an operator's command is: queued for the scheduler, then done or failed."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Command:
    """An operator's action (cancel, retry, pause, resume, ...) and its outcome.

    The scheduler leader is the only writer of task state; the CLI and the UI queue commands and
    the leader carries them out in order. The table of commands is also the action log.
    """

    id: str
    action: str
    target: str
    created_at: float
    actor: str = ""
    args: Mapping[str, JSON] = field(default_factory=dict)
    status: CommandStatus = CommandStatus.PENDING
    result: str = ""
    finished_at: float | None = None


#: Columns a Change may set through ``values``; Store.apply itself sets status and updated_at.
CHANGE_VALUES = frozenset(
    {
        "attempt",
        "first_attempt",
        "output",
        "error",
        "agent_id",
        "not_before",
        "deadline",
        "started_at",
        "finished_at",
        "pending",
    }
)


@dataclass(frozen=True, slots=True)
class Change:
    """One compare-and-set task transition for :meth:`core.ports.Store.apply`.

    Applied only if the task's status is in ``expect`` and, when ``attempt`` is not None, its
    attempt equals it. ``values`` sets other columns (``attempt``, ``first_attempt``, ``output``,
    ``error``, ``agent_id``, ``not_before``, ``deadline``, ``started_at``, ``finished_at``,
    ``pending``). ``event`` names the history line written with it (defaults to the new status)
    and ``detail`` is stored on that line. ``usage`` is what the attempt that the change ends
    spent: written (one row per task and attempt) in the same transaction, only if the change
    applies.
    """

    task_id: str
    to: TaskStatus
    expect: frozenset[TaskStatus]
    attempt: int | None = None
    values: Mapping[str, JSON] = field(default_factory=dict)
    event: str | None = None
    detail: Mapping[str, JSON] = field(default_factory=dict)
    usage: Usage | None = None
