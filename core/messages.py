"""What travels on the bus, and the one codec for it (JSON, versioned).

Backends move bytes; only this module turns them into objects. A body that does not decode
raises :class:`core.errors.MessageError`, and its delivery is dead-lettered, never requeued.

Under load several task messages for one capability, or several reports of one agent, travel
as one *batch* message (``type`` ``tasks`` or ``reports``): an envelope whose ``items`` are
the messages themselves, each exactly as it would travel alone. :func:`batch` builds one from
encoded bodies without encoding them again; :func:`decode_batch` reads a batch or a lone
message alike, item by item, so one bad item does not take its neighbours down with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

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
    return _validate(_load(body), kind)


def _load(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("v", VERSION) != VERSION:
        raise MessageError(f"unknown message version {data.get('v')!r} (this node reads {VERSION})")
    return data


def _validate(data: Any, kind: type[M]) -> M:
    if not isinstance(data, dict):
        raise MessageError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise MessageError(f"bad {kind.__name__}: {problems}") from None


BATCH_TYPES: dict[type[_Message], str] = {TaskMessage: "tasks", Report: "reports"}
"""The ``type`` of a batch of each kind of message that may travel in batches."""


class _TaskBatch(_Message):
    type: Literal["tasks"]
    items: list[TaskMessage] = Field(min_length=1)
    headers: list[dict[str, str]] | None = None


class _ReportBatch(_Message):
    type: Literal["reports"]
    items: list[Report] = Field(min_length=1)
    headers: list[dict[str, str]] | None = None


_WHOLE: dict[type[_Message], type[_TaskBatch | _ReportBatch]] = {
    TaskMessage: _TaskBatch,
    Report: _ReportBatch,
}
"""A batch of each kind read in one pass (pydantic's own JSON parser): the fast path of
:func:`decode_batch` for a batch that is valid throughout, by far the usual case."""


@dataclass(frozen=True, slots=True)
class Item(Generic[M]):
    """One message of a body read by :func:`decode_batch`: the message, or why it is not one.

    ``headers``: the item's own headers (a batch carries each task's trace header for it);
    a lone message's are its delivery's. ``ids``: (task id, attempt) read from an item that
    did not decode, when they can be (so its task can be failed with the reason)."""

    message: M | None
    error: MessageError | None = None
    headers: Mapping[str, str] | None = None
    ids: tuple[str, int] | None = None


def batch(
    kind: type[_Message], bodies: Sequence[bytes], headers: Sequence[Mapping[str, str]] = ()
) -> bytes:
    """One batch message of ``kind`` carrying the encoded messages ``bodies`` (compact JSON
    objects, as :func:`encode` makes them) and, when given, each one's ``headers``."""
    out = b'{"v":%d,"type":"%s","items":[' % (VERSION, BATCH_TYPES[kind].encode())
    out += b",".join(bodies) + b"]"
    if headers:
        if len(headers) != len(bodies):
            raise ValueError(f"{len(headers)} headers for {len(bodies)} messages")
        out += (
            b',"headers":' + json.dumps([dict(h) for h in headers], separators=(",", ":")).encode()
        )
    return out + b"}"


def decode_batch(body: bytes, kind: type[M]) -> list[Item[M]]:
    """The messages of ``body``: a batch of ``kind`` (see :func:`batch`), or a lone ``kind``.

    Raises MessageError when the body as a whole is unreadable (not JSON, another version, a
    lone message that is not a valid ``kind``, a batch without items); an item that is not a
    valid ``kind`` comes back as an :class:`Item` with its ``error`` and, when readable, ids.
    """
    fast = _at_once(body, kind)
    return fast if fast is not None else _careful(body, kind)


def _careful(body: bytes, kind: type[M]) -> list[Item[M]]:
    """:func:`decode_batch` item by item, saying what is wrong with each."""
    data = _load(body)
    if data.get("type") != BATCH_TYPES[kind]:
        return [Item(_validate(data, kind))]
    items, headers = data.get("items"), data.get("headers")
    if not isinstance(items, list) or not items:
        raise MessageError(f"bad {BATCH_TYPES[kind]} batch: items must be a non-empty list")
    if headers is not None and not (
        isinstance(headers, list)
        and len(headers) == len(items)
        and all(isinstance(h, dict) for h in headers)
    ):
        raise MessageError(f"bad {BATCH_TYPES[kind]} batch: headers must be one object per item")
    out: list[Item[M]] = []
    for i, raw in enumerate(items):
        own = {str(k): str(v) for k, v in headers[i].items()} if headers else None
        try:
            out.append(Item(_validate(raw, kind), headers=own))
        except MessageError as exc:
            out.append(Item(None, exc, own, _ids(raw)))
    return out


def peek_ids(body: bytes) -> tuple[str, int] | None:
    """Best effort (task_id, attempt) from a body that failed to decode, so the task can be
    failed with the reason instead of waiting for its timeout."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return _ids(data)


def _at_once(body: bytes, kind: type[M]) -> list[Item[M]] | None:
    """The items of a body that is valid throughout, read in one pass; None for anything
    else (another version, a bad item, not JSON, ...), which the careful path then reads and
    explains. The same messages either way: the careful path is the reference."""
    try:
        if b'"items"' not in body:
            lone = kind.model_validate_json(body)
            return [Item(lone)] if lone.v == VERSION else None
        whole = _WHOLE[kind].model_validate_json(body)
    except (ValidationError, ValueError):
        return None
    if whole.v != VERSION or (whole.headers is not None and len(whole.headers) != len(whole.items)):
        return None
    headers: list[dict[str, str] | None] = (
        list(whole.headers) if whole.headers is not None else [None] * len(whole.items)
    )
    return [Item(cast(M, m), headers=h) for m, h in zip(whole.items, headers, strict=True)]


def _ids(data: Any) -> tuple[str, int] | None:
    try:
        return str(data["task_id"]), int(data["attempt"])
    except (ValueError, KeyError, TypeError):
        return None
