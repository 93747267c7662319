"""The decisions of ``Store.apply``, pure: no engine, no I/O, the same for every SQL store.

An engine's ``apply`` does, inside one write transaction:

1. :func:`plan` every Change (before anything is written: a bad batch writes nothing);
2. check the fencing token;
3. read the dependents of the tasks :func:`succeeding` may make ``succeeded`` (grouped by
   :func:`waiting_on`) and the :class:`TaskState` of every task named or depending on one
   (locked, on an engine that locks rows);
4. :func:`decide` the batch against those states;
5. write :attr:`Decision.writes` (each task's final state, :func:`write_row`),
   :attr:`Decision.events` and :attr:`Decision.usage` (``INSERT`` ignoring a row whose task
   and attempt exist), and read back the tasks :func:`applied` returns.

:func:`decide` goes change by change, exactly as if the changes were applied one at a time:
a later change sees earlier ones (the same task may move twice; a dependent released by one
change may be dispatched by the next). Because the engine holds the rows (SQLite's write
lock, PostgreSQL's row locks) from step 3 to the commit, the decision cannot go stale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from agentdeck.backends.sql.codec import dumps, dumps_or_null, error_or_null
from agentdeck.core.models import CHANGE_VALUES, JSON, Change, Task, Usage
from agentdeck.core.ports import Applied
from agentdeck.core.states import TaskStatus, check_task

__all__ = [
    "SCALARS",
    "STATE_COLUMNS",
    "WRITE_COLUMNS",
    "Decision",
    "EventRow",
    "Plan",
    "TaskState",
    "UsageRow",
    "applied",
    "decide",
    "plan",
    "succeeding",
    "to_read",
    "value",
    "waiting_on",
    "write_row",
]

SCALARS: tuple[str, ...] = (
    "attempt",
    "first_attempt",
    "agent_id",
    "not_before",
    "deadline",
    "started_at",
    "finished_at",
    "pending",
)
"""The value columns a batch keeps in :class:`TaskState` and writes back as they end up.
Output and error are apart: they may be large, so they are written only when a change sets
them, never read and rewritten."""

STATE_COLUMNS: tuple[str, ...] = ("id", "workflow_id", "key", "status", *SCALARS)
"""The ``tasks`` columns an engine reads, in this order, to build a :class:`TaskState`."""

WRITE_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    *SCALARS,
    "set_output",
    "output",
    "set_error",
    "error",
)
"""What :func:`write_row` gives for each written task, in this order."""

EventRow = tuple[Any, ...]
"""An event row in :data:`backends.sql.codec.EVENT_INSERT_COLUMNS` order."""
UsageRow = tuple[Any, ...]
"""An ``attempt_usage`` row in :data:`backends.sql.codec.USAGE_COLUMNS` order."""

_SUCCEEDED = TaskStatus.SUCCEEDED.value
_BLOCKED = TaskStatus.BLOCKED.value
_READY = TaskStatus.READY.value


class Plan(NamedTuple):
    """A validated Change, its values split and encoded for the database.

    A named tuple, immutable like a frozen dataclass, and built four times faster (a frozen
    dataclass sets each of its eleven fields through ``object.__setattr__``): a scheduler
    plans every change it writes, two or more a task."""

    task_id: str
    to: str
    expect: frozenset[str]
    attempt: int | None
    scalars: tuple[tuple[str, Any], ...]
    output: tuple[str | None] | None  # (json,) when the change sets the output
    error: tuple[str | None] | None  # (json,) when the change sets the error
    kind: str
    detail: str
    columns: frozenset[str]
    """The value columns the change sets (output and error included)."""
    usage: tuple[Any, ...] | None = None
    """The attempt's usage (model, the four token counts, cost), when the change carries it."""


@lru_cache(maxsize=512)
def _sources(expect: frozenset[TaskStatus], to: TaskStatus) -> frozenset[str]:
    """The expected statuses as stored strings, after checking each may reach ``to``, in
    sorted order (so the error names the same status every time).

    Cached: a scheduler sends the same few (expect, to) pairs thousands of times.
    """
    for status in sorted(TaskStatus(s) for s in expect):
        check_task(status, TaskStatus(to))
    return frozenset(TaskStatus(s).value for s in expect)


@lru_cache(maxsize=512)
def _scalar_names(columns: frozenset[str]) -> tuple[str, ...] | None:
    """The :data:`SCALARS` among ``columns``, in that order; None when ``columns`` holds a
    name that is not a value column. Cached: a scheduler's changes set a few sets of values."""
    if not columns <= CHANGE_VALUES:
        return None
    return tuple(name for name in SCALARS if name in columns)


_STATUSES: dict[str, TaskStatus] = {s.value: s for s in TaskStatus}  # also finds the members

_DETAILS: dict[tuple[tuple[Any, Any], ...], str] = {}
"""Detail texts already encoded, by the detail's items, for details of strings only (the
scheduler's own: ``{"node": ...}``, ``{"agent": ...}``, the same for a whole batch)."""
_DETAILS_MOST = 1024


def _detail(detail: Mapping[str, JSON], what: str) -> str:
    """``dumps(dict(detail), ...)``, from :data:`_DETAILS` when it was encoded already."""
    if not detail:
        return "{}"
    items = tuple(detail.items())
    try:
        return _DETAILS[items]
    except TypeError:  # an unhashable value (a list, a dict): never cached
        return dumps(dict(detail), what)
    except KeyError:
        pass
    text = dumps(dict(detail), what)
    # Only strings: a str is encoded alike whatever its equal twins' types (1 == 1.0 == True,
    # but not as JSON). Emptied when full: the scheduler's own few come back at once.
    if all(type(k) is str and type(v) is str for k, v in items):
        if len(_DETAILS) >= _DETAILS_MOST:
            _DETAILS.clear()
        _DETAILS[items] = text
    return text


def plan(change: Change) -> Plan:
    """Validate one Change and encode its values.

    Raises ValueError for a value name that is not a column (naming the allowed ones), a
    status that is not one, a value that is not JSON, or a usage with a negative or
    non-whole token count or a cost that is negative or not finite; InvalidTransition when
    ``expect`` holds a status that cannot reach ``to``. Checked in that order.
    """
    # Hot: every change a scheduler writes passes here (twice or more a task), hence the
    # caches and the arguments by position.
    values = change.values
    columns = frozenset(values)
    names = _scalar_names(columns)
    if names is None:
        unknown = sorted(set(values) - CHANGE_VALUES)
        raise ValueError(
            f"change for task {change.task_id!r} sets unknown value(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(CHANGE_VALUES))}"
        )
    try:
        to = _STATUSES[change.to]
    except (KeyError, TypeError):
        to = TaskStatus(change.to)  # raises the error
    expect = _sources(frozenset(change.expect), to)
    what = f"the change for task {change.task_id!r}"
    return Plan(
        change.task_id,
        to.value,
        expect,
        change.attempt,
        tuple([(name, values[name]) for name in names]),
        (dumps_or_null(values["output"], f"output of {what}"),) if "output" in columns else None,
        (error_or_null(values["error"], f"error of {what}"),) if "error" in columns else None,
        change.event or to.value,
        _detail(change.detail, f"detail of {what}"),
        columns,
        None if change.usage is None else _usage(change.usage, what),
    )


def _usage(usage: Usage, what: str) -> tuple[Any, ...]:
    """A usage's columns (model, tokens, cost), checked. Raises ValueError naming ``what``."""
    if not isinstance(usage, Usage):
        raise ValueError(f"usage of {what} must be a Usage, got {type(usage).__name__}")
    counts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
    )
    for count in counts:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"usage of {what}: token counts must be whole numbers >= 0, got {count!r}"
            )
    cost = usage.cost_usd
    if cost is not None and (
        isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost)
    ):
        raise ValueError(f"usage of {what}: cost_usd must be a finite number, got {cost!r}")
    if cost is not None and cost < 0:
        raise ValueError(f"usage of {what}: cost_usd must be >= 0, got {cost!r}")
    return (usage.model, *counts, None if cost is None else float(cost))


def succeeding(plans: Iterable[Plan]) -> list[str]:
    """The ids the batch may make ``succeeded``, sorted: only their dependents can be released,
    so only theirs need reading."""
    return sorted({p.task_id for p in plans if p.to == _SUCCEEDED})


def waiting_on(deps: Iterable[Sequence[str]]) -> dict[str, list[str]]:
    """``(needs_id, task_id)`` rows as the dependents waiting on each task, in row order."""
    waiting: dict[str, list[str]] = {}
    for needs_id, task_id in deps:
        waiting.setdefault(needs_id, []).append(task_id)
    return waiting


def to_read(plans: Iterable[Plan], waiting: Mapping[str, Iterable[str]]) -> list[str]:
    """Every task whose state the batch needs: those named and their waiting dependents, sorted
    (an engine locking them in this order cannot deadlock with another doing the same)."""
    return sorted({p.task_id for p in plans}.union(*waiting.values()))


@dataclass(slots=True)
class TaskState:
    """What a batch knows of a task (columns :data:`STATE_COLUMNS`), as the batch leaves it."""

    id: str
    workflow_id: str
    key: str
    status: str
    attempt: int
    first_attempt: int
    agent_id: str | None
    not_before: float | None
    deadline: float | None
    started_at: float | None
    finished_at: float | None
    pending: int
    output: tuple[str | None] | None = None  # (json,) once a change has set it
    error: tuple[str | None] | None = None

    def copy(self) -> TaskState:
        """An equal, separate state (spelt out: eight times faster than ``replace``, and
        :func:`decide` copies every state of a batch)."""
        return TaskState(
            self.id,
            self.workflow_id,
            self.key,
            self.status,
            self.attempt,
            self.first_attempt,
            self.agent_id,
            self.not_before,
            self.deadline,
            self.started_at,
            self.finished_at,
            self.pending,
            self.output,
            self.error,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a batch does: the states to write, the events to append, in order."""

    moved: list[str] = field(default_factory=list)
    """Each task moved, once, in the order it first moved."""
    released: list[str] = field(default_factory=list)
    """Each dependent made ``ready``, once, in the order of release."""
    writes: list[TaskState] = field(default_factory=list)
    """The final state of every task to write (moved or counted down), in first-touch order."""
    events: list[EventRow] = field(default_factory=list)
    """The events, in the order they happened."""
    usage: list[UsageRow] = field(default_factory=list)
    """A usage row for each applied change that carries usage, once per (task, attempt)."""
    changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """For each task written, the value columns the batch set (sorted; ``status`` is always
    written besides): an engine whose UPDATE costs by column (SQLite maintains the index of
    every column it sets) writes only these."""


def decide(
    plans: Sequence[Plan],
    states: Mapping[str, TaskState],
    waiting: Mapping[str, Sequence[str]],
    at: float,
    *,
    own: bool = False,
) -> Decision:
    """Decide ``plans`` in order against ``states`` (by task id; a task absent is skipped).

    A plan applies when the task's status is in its ``expect`` and, if it names an attempt,
    the attempt matches; otherwise it does nothing. An applied plan sets the status and its
    values, and appends an event naming the agent involved (the task's, or the one it had
    when the change clears it). A success counts down every dependent in ``waiting`` (never
    below zero); a ``blocked`` dependent reaching zero becomes ``ready`` with a ``ready``
    event whose detail names the key that released it. An applied plan with usage gives a
    usage row for the attempt the task had when the change applied (the first one only, if
    two changes of a batch end the same attempt). ``states`` is not changed, unless ``own``:
    the caller built them for this call and gives them away, so they are changed in place
    rather than copied (a copy per task read, for nothing).
    """
    current = dict(states) if own else {i: state.copy() for i, state in states.items()}
    touched: dict[str, set[str]] = {}  # the columns changed, by id in first-touch order
    moved: dict[str, None] = {}
    released: dict[str, None] = {}
    events: list[EventRow] = []
    usage: dict[tuple[str, int], UsageRow] = {}
    for p in plans:
        state = current.get(p.task_id)
        if state is None or state.status not in p.expect:
            continue
        if p.attempt is not None and state.attempt != p.attempt:
            continue
        before, agent_before = state.status, state.agent_id
        if p.usage is not None:
            usage.setdefault(
                (p.task_id, state.attempt),
                (p.task_id, state.workflow_id, state.attempt, *p.usage, at),
            )
        state.status = p.to
        for name, value in p.scalars:
            setattr(state, name, value)
        if p.output is not None:
            state.output = p.output
        if p.error is not None:
            state.error = p.error
        moved[p.task_id] = None
        touched.setdefault(p.task_id, set()).update(p.columns)
        agent = state.agent_id if state.agent_id is not None else agent_before
        events.append(
            (p.task_id, state.workflow_id, at, p.kind, state.attempt, before, p.to, agent, p.detail)
        )
        if p.to == _SUCCEEDED:
            for dep_id in waiting.get(p.task_id, ()):
                if _count_down(current, dep_id, touched):
                    released[dep_id] = None
                    events.append(_ready_event(current[dep_id], state.key, at))
    return Decision(
        moved=list(moved),
        released=list(released),
        writes=[current[i] for i in touched],
        events=events,
        usage=list(usage.values()),
        changed={i: tuple(sorted(names)) for i, names in touched.items()},
    )


def _count_down(states: dict[str, TaskState], dep_id: str, touched: dict[str, set[str]]) -> bool:
    """One need of ``dep_id`` succeeded: lower its count; True if that releases it."""
    dep = states.get(dep_id)
    if dep is None:
        return False
    dep.pending = max(dep.pending - 1, 0)
    touched.setdefault(dep_id, set()).add("pending")
    if dep.status != _BLOCKED or dep.pending:
        return False
    dep.status = _READY
    return True


def _ready_event(dep: TaskState, released_by: str, at: float) -> EventRow:
    # dumps({"released_by": released_by}), spelt out: a key is a str, JSON text alike.
    detail = '{"released_by":' + dumps(released_by, "detail") + "}"
    return (dep.id, dep.workflow_id, at, "ready", dep.attempt, _BLOCKED, _READY, None, detail)


def value(state: TaskState, name: str) -> Any:
    """The value ``state`` gives column ``name`` (a scalar, ``output`` or ``error``)."""
    if name == "output" or name == "error":
        held: tuple[str | None] | None = getattr(state, name)
        return None if held is None else held[0]
    return getattr(state, name)


def write_row(state: TaskState) -> tuple[Any, ...]:
    """A decided state as the values of :data:`WRITE_COLUMNS` (``set_output``/``set_error``
    say whether the batch set those columns at all)."""
    # The SCALARS spelt out, in their order (a test pins it): a generator of getattr cost
    # as much as the rest.
    return (
        state.id,
        state.status,
        state.attempt,
        state.first_attempt,
        state.agent_id,
        state.not_before,
        state.deadline,
        state.started_at,
        state.finished_at,
        state.pending,
        state.output is not None,
        None if state.output is None else state.output[0],
        state.error is not None,
        None if state.error is None else state.error[0],
    )


def applied(decision: Decision, tasks: Iterable[Task]) -> Applied:
    """The call's answer from the tasks as they stand once written (any order)."""
    by_id = {t.id: t for t in tasks}
    return Applied(
        tasks=[by_id[i] for i in decision.moved],
        released=[by_id[i] for i in decision.released],
    )
