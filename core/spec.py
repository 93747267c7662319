"""The workflow spec: what a user submits, parsed from YAML or JSON and checked in full.

.. code-block:: yaml

    name: a-to-b
    labels: {team: search}
    budget: {usd: 5.00, tokens: 2000000}
    tasks:
      - key: fetch
        capability: http
        input: {url: "https://example.org"}
      - key: parse
        capability: python
        needs: [fetch]
        timeout: 30
        retry: {max_attempts: 5, initial_delay: 0.1}

:func:`parse_spec` reports *every* problem at once in one :class:`core.errors.SpecError`, so a
user fixes a spec in one round. :func:`build` turns a valid spec into the records the Store
writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from agentdeck.core import dag
from agentdeck.core.budgets import budget_from
from agentdeck.core.errors import ConfigError, SpecError
from agentdeck.core.models import JSON, Budget, Task, Workflow, task_id
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.states import TaskStatus, WorkflowStatus

KEY_PATTERN = "[A-Za-z0-9_.-]+"
"""What a task key may contain (it becomes part of the task id, so no ``/``)."""

CAPABILITY_PATTERN = "[a-z0-9_.-]+"
"""What a capability name may contain (it becomes a queue name)."""

MAX_NAME_LENGTH = 100
"""The longest task key or capability name."""

_KEY_RE = re.compile(KEY_PATTERN)
_CAPABILITY_RE = re.compile(CAPABILITY_PATTERN)


def check_name(kind: str, value: str, pattern: str) -> str:
    """Return ``value`` if it is 1..100 characters matching ``pattern``; else raise ValueError
    with a message naming the value and the allowed form."""
    if len(value) <= MAX_NAME_LENGTH and re.fullmatch(pattern, value):
        return value
    shown = value if len(value) <= 40 else value[:37] + "..."
    raise ValueError(
        f"{kind} {shown!r} is not allowed; use 1 to {MAX_NAME_LENGTH} characters matching {pattern}"
    )


class SpecLimits(BaseModel):
    """Bounds on what one submitted workflow may hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tasks: int = Field(default=10_000, ge=1, le=1_000_000)
    """The most tasks in one workflow."""

    max_payload_bytes: int = Field(default=256 * 1024, ge=1, le=64 * 1024 * 1024)
    """The largest ``input`` of one task, as compact UTF-8 JSON."""


class TaskSpec(BaseModel):
    """One task as written in a spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    """Unique within the workflow; ``[A-Za-z0-9_.-]+``, at most 100 characters."""

    capability: str
    """Which agents can run it; ``[a-z0-9_.-]+``, at most 100 characters."""

    input: JsonValue = Field(default_factory=dict)
    """Handed to the agent, with the outputs of the tasks this one needs."""

    needs: tuple[str, ...] = ()
    """Keys of the tasks that must succeed first."""

    timeout: float = Field(default=60.0, gt=0, le=86400)
    """Seconds one attempt may run before it counts as failed."""

    retry: dict[str, JsonValue] | None = None
    """This task's retry settings (fields of :class:`core.retry.RetryPolicy`), only those
    written; None means the capability's or the default policy."""

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        try:
            return check_name("key", value, KEY_PATTERN)
        except ValueError as exc:
            raise PydanticCustomError("task_key", str(exc)) from None

    @field_validator("capability")
    @classmethod
    def _check_capability(cls, value: str) -> str:
        try:
            return check_name("capability", value, CAPABILITY_PATTERN)
        except ValueError as exc:
            raise PydanticCustomError("capability", str(exc)) from None

    @field_validator("retry")
    @classmethod
    def _check_retry(cls, value: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
        if value is None:
            return None
        try:
            policy = RetryPolicy.from_mapping(value, where="retry")
        except ConfigError as exc:
            raise PydanticCustomError("retry", str(exc)) from None
        # Keep only the keys written, with their values normalised (lists, floats), so the
        # scheduler can lay them over the capability's policy.
        normalised = policy.to_dict()
        return {name: normalised[name] for name in value}

    def retry_policy(self, base: RetryPolicy | None = None) -> RetryPolicy | None:
        """The policy this task asks for, laid over ``base`` (default: the default policy);
        None when the spec sets no retry."""
        if self.retry is None:
            return None
        merged = {**(base or RetryPolicy()).to_dict(), **self.retry}
        return RetryPolicy.from_mapping(merged, where=f"task {self.key!r} retry")


class WorkflowSpec(BaseModel):
    """A whole workflow as written in a spec, already checked by :func:`parse_spec`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    """A name for people; need not be unique."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form tags (team, source) shown and filtered on in the UI."""

    budget: Budget | None = None
    """What the workflow may spend (``{usd: 5.0, tokens: 2000000}``, either optional); once
    its spending reaches it, it is held: no new attempt starts (core/budgets.py)."""

    tasks: tuple[TaskSpec, ...]
    """The DAG's nodes, in the order written."""

    def graph(self) -> dict[str, tuple[str, ...]]:
        """Task key -> keys it needs, for :mod:`core.dag`."""
        return {task.key: task.needs for task in self.tasks}


class _Header(BaseModel):
    """The top level of a spec, with tasks still unchecked (they are checked one by one)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)
    budget: Any = None
    tasks: list[Any]


_HEADER = TypeAdapter(_Header)
_TASK = TypeAdapter(TaskSpec)

Format = Literal["yaml", "json"]


def parse_spec(
    text: str, *, fmt: Format | None = None, limits: SpecLimits | None = None
) -> WorkflowSpec:
    """Parse and check a workflow spec. ``fmt`` None reads YAML, which also reads JSON.

    Raises :class:`SpecError` listing every problem found: syntax (with line), missing and
    unknown fields, bad names, duplicate keys, unknown or self ``needs``, cycles, too many
    tasks, inputs over the size limit, bad retry settings and a budget that is not positive.
    """
    limits = limits or SpecLimits()
    data = _load(text, fmt)
    if not isinstance(data, Mapping):
        raise SpecError([f"a spec is a mapping with 'name' and 'tasks', got {type(data).__name__}"])
    problems: list[str] = []
    header: _Header | None = None
    try:
        header = _HEADER.validate_python(data)
    except ValidationError as exc:
        problems += [_describe(e, _Header, "") for e in exc.errors()]
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list):
        raise SpecError(problems)
    if not raw_tasks:
        problems.append("tasks: a workflow needs at least one task")
    if len(raw_tasks) > limits.max_tasks:
        problems.append(f"too many tasks: {len(raw_tasks)} (the limit is {limits.max_tasks})")
    tasks = _check_tasks(raw_tasks, limits, problems)
    budget = None
    if header is not None and header.budget is not None:
        try:
            budget = budget_from(header.budget, "budget")
        except ValueError as exc:
            problems.append(str(exc))
    if problems or header is None:
        raise SpecError(problems)
    return WorkflowSpec.model_construct(
        name=header.name, labels=header.labels, budget=budget, tasks=tasks
    )


def load_spec(path: str | Path, limits: SpecLimits | None = None) -> WorkflowSpec:
    """Read and parse a spec file; ``.json`` files are read as JSON, anything else as YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"cannot read {path}: {exc}"]) from None
    fmt: Format | None = "json" if path.suffix.lower() == ".json" else None
    return parse_spec(text, fmt=fmt, limits=limits)


def build(spec: WorkflowSpec, *, workflow_id: str, now: float) -> tuple[Workflow, list[Task]]:
    """The workflow record and its task records for a checked spec, as submitted at ``now``.

    Tasks that need nothing are ``ready``; the others ``blocked`` with ``pending`` counting
    their needs.
    """
    workflow = Workflow(
        id=workflow_id,
        name=spec.name,
        status=WorkflowStatus.RUNNING,
        created_at=now,
        updated_at=now,
        task_count=len(spec.tasks),
        labels=dict(spec.labels),
        budget=spec.budget,
    )
    tasks = [
        Task(
            id=task_id(workflow_id, t.key),
            workflow_id=workflow_id,
            key=t.key,
            capability=t.capability,
            status=TaskStatus.BLOCKED if t.needs else TaskStatus.READY,
            input=t.input,
            needs=t.needs,
            pending=len(t.needs),
            created_at=now,
            updated_at=now,
            timeout=t.timeout,
            retry=dict(t.retry) if t.retry is not None else None,
        )
        for t in spec.tasks
    ]
    return workflow, tasks


# ----------------------------------------------------------------------------- internals


def _load(text: str, fmt: Format | None) -> Any:
    """The document's data, or SpecError naming the syntax error and where it is."""
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                [f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
            ) from None
    if fmt not in (None, "yaml"):
        raise ValueError(f"unknown spec format {fmt!r}; expected 'yaml' or 'json'")
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "not valid YAML"
        raise SpecError([f"YAML syntax error{where}: {what}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"YAML syntax error: {exc}"]) from None


def _check_tasks(
    raw_tasks: Sequence[Any], limits: SpecLimits, problems: list[str]
) -> tuple[TaskSpec, ...]:
    """Check each task, then the graph they form; append every problem to ``problems``."""
    # The graph as written, from every task that names its key and needs, valid or not: a
    # task with a bad timeout must neither make its dependents report an unknown need nor
    # hide a cycle it is part of. The first task with a key wins; duplicates are reported.
    written: dict[str, list[str]] = {}
    for raw in raw_tasks:
        key = raw.get("key") if isinstance(raw, Mapping) else None
        if isinstance(key, str) and key not in written:
            needs = raw.get("needs")
            ok = isinstance(needs, list) and all(isinstance(n, str) for n in needs)
            written[key] = list(needs) if ok else []
    first_index: dict[str, int] = {}
    tasks: list[TaskSpec] = []
    for index, raw in enumerate(raw_tasks):
        where = _task_where(index, raw)
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: a task is a mapping with 'key' and 'capability'")
            continue
        try:
            task = _TASK.validate_python(raw)
        except ValidationError as exc:
            problems += [_describe(e, TaskSpec, where) for e in exc.errors()]
            # Its needs are still checked: one bad field must not hide another problem.
            key = raw.get("key")
            problems += [
                f"{where}: needs {need!r}, which is not a task in this workflow"
                for need in (written.get(key, []) if isinstance(key, str) else [])
                if need not in written
            ]
            continue
        if task.key in first_index:
            first = first_index[task.key]
            problems.append(f"{where}: duplicate key {task.key!r} (first used by tasks[{first}])")
            continue
        first_index[task.key] = index
        tasks.append(task)
        problems += [f"{where}: {p}" for p in _task_problems(task, written.keys(), limits)]

    # Self-needs and unknown needs are reported above; leave them out of the cycle search.
    graph = {key: [n for n in needs if n in written and n != key] for key, needs in written.items()}
    problems += [f"cycle: {dag.format_cycle(cycle)}" for cycle in dag.find_cycles(graph)]
    return tuple(tasks)


def _task_problems(task: TaskSpec, known: Collection[str], limits: SpecLimits) -> list[str]:
    """What is wrong with one well-formed task in the context of its workflow."""
    problems = []
    seen: set[str] = set()
    for need in task.needs:
        if need == task.key:
            problems.append("needs itself")
        elif need in seen:
            problems.append(f"needs {need!r} more than once")
        elif need not in known:
            problems.append(f"needs {need!r}, which is not a task in this workflow")
        seen.add(need)
    try:
        size = len(_compact_json(task.input))
    except ValueError as exc:
        problems.append(f"input is not JSON: {exc}")
    else:
        if size > limits.max_payload_bytes:
            problems.append(f"input is {size} bytes; the limit is {limits.max_payload_bytes} bytes")
    return problems


def _compact_json(value: JSON) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _task_where(index: int, raw: object) -> str:
    key = raw.get("key") if isinstance(raw, Mapping) else None
    return f"tasks[{index}] {key!r}" if isinstance(key, str) and key else f"tasks[{index}]"


def _describe(error: ErrorDetails, model: type[BaseModel], where: str) -> str:
    """One pydantic error as a sentence naming the field, the bad value and what is allowed."""
    loc = ".".join(str(part) for part in error["loc"])
    prefix = f"{where}: " if where else ""
    if error["type"] == "missing":
        return f"{prefix}missing required field {loc!r}"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(model.model_fields)
        return f"{prefix}unknown field {loc!r} (allowed: {allowed})"
    if error["type"] in ("task_key", "capability", "retry"):
        return f"{prefix}{error['msg']}"
    shown = repr(error["input"])
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{prefix}{loc}: {error['msg']} (got {shown})"
