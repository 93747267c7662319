"""What travels on the bus, and the one codec for it (JSON, versioned).

Backends move bytes; only this module turns them into objects. A body that does not decode
raises :class:`core.errors.MessageError`, and its delivery is dead-lettered, never requeued.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentdeck.core.errors import MessageError
from agentdeck.core.models import JSON, ErrorInfo, Usage

VERSION = 1


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    v: int = VERSION


class TaskMessage(_Message):
    """A task attempt for an agent: what to run, with what, and for how long."""

    type: Literal["task"] = "task"
    task_id: str
    workflow_id: str
    key: str
    capability: str
    attempt: int = Field(ge=1)
    input: JSON = None
    upstream: dict[str, JSON] = Field(default_factory=dict)
    """The outputs of the tasks this one needs, by task key: small ones inline, large ones as
    references to the blob store, which the agent fetches when its handler reads them."""
    timeout: float = Field(gt=0)
    dispatched_at: float


class ErrorModel(BaseModel):
    """Wire form of :class:`core.models.ErrorInfo`."""

    model_config = ConfigDict(frozen=True)
    kind: str
    message: str
    retryable: bool = True
    retry_after: float | None = None

    def to_info(self) -> ErrorInfo:
        """As the domain object."""
        return ErrorInfo(self.kind, self.message, self.retryable, self.retry_after)

    @classmethod
    def of(cls, info: ErrorInfo) -> ErrorModel:
        """From the domain object."""
        return cls(**info.to_dict())


class UsageModel(BaseModel):
    """Wire form of :class:`core.models.Usage`: what an attempt spent (tokens, US dollars)."""

    model_config = ConfigDict(frozen=True)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)
    cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    model: str | None = None

    def to_usage(self) -> Usage:
        """As the domain object."""
        return Usage(**self.model_dump())

    @classmethod
    def of(cls, usage: Usage) -> UsageModel:
        """From the domain object."""
        return cls(**usage.to_dict())


class Report(_Message):
    """An agent's word on an attempt: ``started``, ``succeeded`` (with output) or ``failed``."""

    type: Literal["report"] = "report"
    kind: Literal["started", "succeeded", "failed"]
    task_id: str
    attempt: int
    agent_id: str
    at: float
    output: JSON = None
    error: ErrorModel | None = None
    started_at: float | None = None
    """On a result: when the attempt started (an agent may skip the ``started`` report for a
    short task; older agents leave it out, older schedulers ignore it)."""
    usage: UsageModel | None = None
    """On a result (``succeeded`` or ``failed``): what the attempt spent with model providers,
    summed over every ``ctx.usage(...)`` call its handler made (None: it reported none)."""


class Event(_Message):
    """A fact for watchers (UI, --watch, metrics); topic: task, workflow, breaker, command,
    log, progress, output."""

    type: Literal["event"] = "event"
    topic: str
    at: float
    data: dict[str, JSON] = Field(default_factory=dict)


class Control(_Message):
    """An order to agents: ``drain``/``resume`` an agent, ``cancel`` a task attempt."""

    type: Literal["control"] = "control"
    action: Literal["drain", "resume", "cancel"]
    target: str
    """An agent id (drain/resume; ``*`` for all) or a task id (cancel)."""
    at: float
    attempt: int | None = None
    """Cancel only: the attempts of the task up to this one (the scheduler gave that attempt up
    as lost; a newer attempt of the same task may be running by now and must go on); None:
    every attempt (its workflow was cancelled). Older agents ignore it."""


M = TypeVar("M", bound=_Message)


def encode(message: _Message) -> bytes:
    """The message as compact JSON bytes."""
    return message.model_dump_json().encode()


def decode(body: bytes, kind: type[M]) -> M:
    """Parse ``body`` as ``kind``. Raises MessageError naming what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("v", VERSION) != VERSION:
        raise MessageError(f"unknown message version {data.get('v')!r} (this node reads {VERSION})")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise MessageError(f"bad {kind.__name__}: {problems}") from None


def peek_ids(body: bytes) -> tuple[str, int] | None:
    """Best effort (task_id, attempt) from a body that failed to decode, so the task can be
    failed with the reason instead of waiting for its timeout."""
    try:
        data: Any = json.loads(body)
        return str(data["task_id"]), int(data["attempt"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
