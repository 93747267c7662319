"""Settings: where agentdeck keeps its state, which backends it talks to, and how it behaves.

Sources, strongest first: keyword arguments (the command line), ``AGENTDECK_*`` environment
variables (``__`` separates nested fields: ``AGENTDECK_SCHEDULER__POLL_INTERVAL=0.5``), a TOML
file, then the defaults below. The TOML file is the one given to :meth:`Settings.load`, else
``./agentdeck.toml``, else ``/etc/agentdeck/agentdeck.toml``.

Passwords in URLs never leave this module in clear: ``repr`` and :meth:`Settings.redacted`
show them as ``***``.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from agentdeck.core.breaker import BreakerPolicy
from agentdeck.core.budgets import budget_from
from agentdeck.core.errors import ConfigError
from agentdeck.core.limits import CapabilityLimits
from agentdeck.core.models import Budget
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.spec import CAPABILITY_PATTERN, SpecLimits, check_name

ENV_PREFIX = "AGENTDECK_"
LOCAL_CONFIG = Path("agentdeck.toml")
"""Read when no config file is given (relative to the working directory)."""
SYSTEM_CONFIG = Path("/etc/agentdeck/agentdeck.toml")
"""Read when no config file is given and there is no local one."""

AGENT_KINDS = ("echo", "sleep", "chaos", "shell", "http", "python", "claude", "anthropic")
"""The built-in agents an ``[[agents]]`` entry may run."""

#: The forms each URL setting takes, shown when one is malformed.
URL_FORMS: dict[str, str] = {
    "bus_url": "memory:// or amqp://user:pass@host:5672/vhost",
    "store_url": "sqlite:///path/to/agentdeck.db or postgresql://user:pass@host:5432/db",
    "registry_url": "memory://, sqlite:///path/to/registry.db or redis://host:6379/0",
    "blob_url": "file:///path/to/blobs or s3://bucket/prefix?endpoint_url=http://host:9000",
}

_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_SECRET_WORDS = ("password", "passwd", "secret", "authorization", "api_key", "apikey")
# "token" but not "tokens": an access_token is a secret, tokens_per_minute and a budget's
# tokens are counts an operator needs to see.
_TOKEN_RE = re.compile(r"token(?!s)")
_config_file: ContextVar[Path | None] = ContextVar("agentdeck_config_file", default=None)


# ------------------------------------------------------------------------------- redaction


def _is_secret_name(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return bool(_TOKEN_RE.search(lowered)) or any(word in lowered for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` with any password (and any secret-named query value) replaced by ``***``.

    ``amqp://bob:s3cret@host:5672/vh`` -> ``amqp://bob:***@host:5672/vh``; everything else is
    kept as written. Text that is not a URL is returned with anything shaped like
    ``user:password@`` masked, since it may be a mistyped URL holding a password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return re.sub(r":[^:@/\s]+@", ":***@", url)
    # Plain string surgery rather than urlsplit/urlunsplit, which rewrite some URLs (they drop
    # the empty authority of ``memory://`` and ``sqlite:////abs.db``). The user info ends at
    # the last ``@`` before the query: a password holding ``/`` or ``@`` is still masked whole.
    before_query, q, query_and_fragment = rest.partition("?")
    userinfo, at, after = before_query.rpartition("@")
    if at and ":" in userinfo:
        before_query = f"{userinfo.split(':', 1)[0]}:***@{after}"
    if q:
        query, hash_, fragment = query_and_fragment.partition("#")
        query = "&".join(
            f"{name}=***" if eq and _is_secret_name(name) else f"{name}{eq}{value}"
            for name, eq, value in (pair.partition("=") for pair in query.split("&"))
        )
        query_and_fragment = f"{query}{hash_}{fragment}"
    return f"{scheme}{sep}{before_query}{q}{query_and_fragment}"


def redact(value: Any) -> Any:
    """A JSON-like value with every URL redacted and every secret-named key's value masked."""
    if isinstance(value, str):
        return redact_url(value) if "@" in value or "?" in value else value
    if isinstance(value, Mapping):
        return {
            k: "***" if isinstance(k, str) and _is_secret_name(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


# ---------------------------------------------------------------------------------- models


class SchedulerSettings(BaseModel):
    """How the scheduler paces itself and judges agents and leases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval: float = Field(default=0.2, gt=0, le=60)
    """Seconds between looks at the Store for ready and due tasks."""

    batch_size: int = Field(default=500, ge=1, le=100_000)
    """The most tasks dispatched in one write and one publish."""

    tasks_per_message: int = Field(default=50, ge=1, le=1000)
    """The most tasks one message carries to an agent under load (1: one message per task,
    as agents older than batches need; docs/messages.md, "Batches")."""

    lost_grace: float = Field(default=5.0, ge=0, le=3600)
    """Seconds past a task's timeout before its attempt counts as lost."""

    lease_ttl: float = Field(default=4.0, gt=0, le=600)
    """Seconds the leader's lease lasts unless renewed."""

    dispatch_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a dispatched attempt may go without any report (started or result) while an
    agent of its capability has a free slot; past that its message counts as lost and the
    attempt fails as ``lost`` (the retry policy decides what comes next)."""

    heartbeat_interval: float = Field(default=2.0, gt=0, le=600)
    """Seconds between heartbeats (agents) and lease renewals (the leader)."""

    agent_ttl: float = Field(default=10.0, gt=0, le=3600)
    """Seconds an agent's record lives without a heartbeat."""

    repair_interval: float = Field(default=30.0, ge=1, le=3600)
    """Seconds between the leader's repair sweeps, which finish what a dead leader left undone
    (skip a failed task's dependents, finish a workflow whose tasks are all final); the first
    runs when a node takes the lease."""

    @model_validator(mode="after")
    def _check_intervals(self) -> SchedulerSettings:
        # A heartbeat slower than the TTL it refreshes would let healthy agents and leaders expire.
        if self.heartbeat_interval >= min(self.lease_ttl, self.agent_ttl):
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval:g}) must be shorter than "
                f"lease_ttl ({self.lease_ttl:g}) and agent_ttl ({self.agent_ttl:g})"
            )
        if self.dispatch_timeout <= self.heartbeat_interval:
            # Agents' free slots are read from heartbeats: a shorter wait would judge on stale ones.
            raise ValueError(
                f"dispatch_timeout ({self.dispatch_timeout:g}) must be longer than "
                f"heartbeat_interval ({self.heartbeat_interval:g})"
            )
        return self


class AgentSpec(BaseModel):
    """One agent process the daemon runs: ``[[agents]]`` in the TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["echo", "sleep", "chaos", "shell", "http", "python", "claude", "anthropic"]
    """Which built-in agent (see :data:`AGENT_KINDS`)."""

    name: str = Field(default="", max_length=200)
    """Shown in the UI and logs; defaults to ``kind``."""

    capabilities: tuple[str, ...] = ()
    """The capabilities it serves; defaults to ``(kind,)``."""

    concurrency: int = Field(default=4, ge=1, le=1000)
    """Tasks it runs at once (its prefetch)."""

    options: dict[str, JsonValue] = Field(default_factory=dict)
    """Settings for the agent itself (e.g. the shell agent's allowed commands)."""

    started_after: float = Field(default=0.05, ge=0, le=3600)
    """Seconds a task runs before the agent reports ``started`` (0: at once). Shorter tasks go
    from dispatched straight to their result (no ``running`` state, no ``started_at``): one
    message less each, for fleets of very short tasks."""

    @field_validator("capabilities")
    @classmethod
    def _check_capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for capability in value:
            check_name("capability", capability, CAPABILITY_PATTERN)
        return value

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_kind(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("kind"), str):
            data = dict(data)
            if data.get("name") is None:
                data["name"] = data["kind"]
            if not data.get("capabilities"):
                data["capabilities"] = [data["kind"]]
        return data

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact(value) if name == "options" else value


def _to_policy(value: Any) -> RetryPolicy:
    if isinstance(value, RetryPolicy):
        return value
    try:
        return RetryPolicy.from_mapping(value, where="")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


RetrySetting = Annotated[
    RetryPolicy,
    PlainValidator(_to_policy),
    PlainSerializer(lambda policy: policy.to_dict(), return_type=dict),
]
"""A retry policy written as a mapping of :class:`core.retry.RetryPolicy` fields."""


CapabilityName = Annotated[
    str, AfterValidator(lambda name: check_name("capability", name, CAPABILITY_PATTERN))
]
"""A capability name as a mapping key (``[retry.<capability>]``)."""


class LimitSettings(BaseModel):
    """``[capability_limits.<capability>]``: what the scheduler lets that capability do across
    the fleet (core/limits.py). Each is a positive whole number, or absent for no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, gt=0)
    """Attempts dispatched in any 60 seconds."""
    tokens_per_minute: int | None = Field(default=None, gt=0)
    """Tokens (input + output, as the attempts report them) in any 60 seconds."""
    max_concurrency: int | None = Field(default=None, gt=0)
    """Attempts dispatched or running at once."""

    def to_limits(self) -> CapabilityLimits:
        """As the scheduler's value object."""
        return CapabilityLimits(
            self.requests_per_minute, self.tokens_per_minute, self.max_concurrency
        )


def _to_budget(value: Any) -> Budget:
    if isinstance(value, Budget):
        return value
    return budget_from(value, "budget")  # its ValueError names the bad value


def _check_label_key(key: str) -> str:
    name, eq, value = key.partition("=")
    if not eq or not name.strip() or not value.strip():
        raise ValueError(f"budget key {key!r} is not a label written name=value (team=search)")
    return key


BudgetSetting = Annotated[
    Budget,
    PlainValidator(_to_budget),
    PlainSerializer(lambda budget: budget.to_dict(), return_type=dict),
]
"""A budget written as a mapping: ``usd`` and/or ``tokens`` (see :mod:`core.budgets`)."""

LabelKey = Annotated[str, AfterValidator(_check_label_key)]
"""A label as a mapping key: ``name=value``."""


def _to_breaker_policy(value: Any) -> BreakerPolicy:
    if isinstance(value, BreakerPolicy):
        return value
    try:
        return BreakerPolicy.from_mapping(value, where="")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


BreakerSetting = Annotated[
    BreakerPolicy,
    PlainValidator(_to_breaker_policy),
    PlainSerializer(lambda policy: policy.to_dict(), return_type=dict),
]
"""A breaker policy written as a mapping of :class:`core.breaker.BreakerPolicy` fields."""


class BreakerSettings(BaseModel):
    """Circuit breakers: ``[breakers]``, ``[breakers.default]``, ``[breakers.capabilities.X]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """False: no breaker holds anything (outcomes are not counted either)."""

    default: BreakerSetting = Field(default_factory=BreakerPolicy)
    """The policy of every agent breaker and of capabilities without their own."""

    capabilities: dict[CapabilityName, BreakerSetting] = Field(default_factory=dict)
    """A policy per capability."""

    refresh: float = Field(default=0.5, ge=0, le=60)
    """Seconds the scheduler trusts its copy of the breakers before reading the Registry."""


class SnapshotSettings(BaseModel):
    """Periodic state snapshots in the BlobStore (``[snapshots]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float = Field(default=0.0, ge=0, le=31 * 86_400)
    """Seconds between snapshots the daemon takes; 0 turns them off."""

    keep: int = Field(default=24, ge=1, le=10_000)
    """Snapshots kept; older ones are deleted after each new one."""

    prefix: str = Field(default="snapshots/", min_length=1, max_length=200)
    """Where in the BlobStore snapshots live."""


def _default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "agentdeck"


class Settings(BaseSettings):
    """Everything a node needs to run. Build it with :meth:`load`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    home: Path = Field(default_factory=_default_home)
    """Where local state lives (``AGENTDECK_HOME``; default ``$XDG_DATA_HOME/agentdeck`` or
    ``~/.local/share/agentdeck``)."""

    bus_url: str = "memory://"
    """The message bus: ``memory://`` or ``amqp://...``."""

    store_url: str = Field(default_factory=lambda data: f"sqlite:///{data['home']}/agentdeck.db")
    """The Store: ``sqlite:///...`` (default in ``home``) or ``postgresql://...``."""

    registry_url: str = Field(default_factory=lambda data: f"sqlite:///{data['home']}/registry.db")
    """The Registry: ``memory://``, ``sqlite:///...`` (default in ``home``) or ``redis://...``."""

    blob_url: str = Field(default_factory=lambda data: f"file://{data['home']}/blobs")
    """The BlobStore: ``file:///...`` (default in ``home``) or ``s3://bucket/prefix``."""

    node: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    """This node's name in logs, leases and the UI (default: the host name)."""

    limits: SpecLimits = Field(default_factory=SpecLimits)
    """Bounds on submitted workflows."""

    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    """Scheduler pacing and timeouts."""

    retry: dict[CapabilityName, RetrySetting] = Field(default_factory=dict)
    """Retry policy per capability (a task's own ``retry`` wins over it)."""

    capability_limits: dict[CapabilityName, LimitSettings] = Field(default_factory=dict)
    """``[capability_limits.<capability>]``: limits the scheduler enforces across the fleet."""

    budgets: dict[LabelKey, BudgetSetting] = Field(default_factory=dict)
    """``[budgets."team=search"]`` ``usd = 50.0`` and/or ``tokens = 10_000_000``: what all the
    workflows carrying a label may spend together (a workflow's own budget is in its spec)."""

    breakers: BreakerSettings = Field(default_factory=BreakerSettings)
    """Circuit breaker policies."""

    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)
    """Periodic snapshots of the whole state."""

    output_inline_limit: int = Field(default=65_536, ge=0, le=1_073_741_824)
    """Task outputs whose JSON is larger than this many bytes are kept in the blob store and
    the task holds a reference; 0 keeps every output in the Store. 64 KiB: a model's long
    answer handed down a pipeline then crosses the bus as a reference, never whole
    (docs/performance.md, "Outputs by reference")."""

    agents: list[AgentSpec] = Field(default_factory=list)
    """Agents the daemon runs on this node."""

    agent_modules: list[str] = Field(default_factory=list)
    """Python modules whose ``@agent``-decorated functions the daemon also runs (one worker
    each), e.g. ``["myproject.agents"]``."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """The least severe log level written."""

    log_format: Literal["auto", "json", "console"] = "auto"
    """``json`` lines, a ``console`` for people, or ``auto``: console on a terminal."""

    theme: str = Field(default="dark", min_length=1, max_length=1000)
    """Control-centre theme: ``dark``, ``light``, ``high-contrast``, or a theme TOML file's path."""

    metrics_port: int = Field(default=0, ge=0, le=65535)
    """TCP port of the Prometheus ``/metrics`` endpoint (daemon and agent processes); 0: off."""

    metrics_address: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    """Address the ``/metrics`` endpoint binds (``0.0.0.0`` to let a remote Prometheus in)."""

    tracing: bool = True
    """OpenTelemetry spans for workflows, attempts and runs (exported when ``OTEL_*`` says
    where; ``OTEL_SDK_DISABLED=true`` also turns them off)."""

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("bus_url", mode="before")
    @classmethod
    def _join_brokers(cls, value: Any) -> Any:
        # A cluster's brokers may be listed (TOML array): the bus reads them comma-joined.
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return ",".join(value)
        return value

    @field_validator("bus_url", "store_url", "registry_url", "blob_url", mode="after")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        if not _URL_RE.fullmatch(value):
            field = info.field_name or ""
            raise ValueError(f"{redact_url(value)!r} is not a URL; expected {URL_FORMS[field]}")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then environment, then the TOML file chosen by :meth:`load`."""
        sources = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config_path: str | Path | None = None, **overrides: Any) -> Settings:
        """Settings from ``overrides``, the environment, the TOML file and the defaults.

        Raises :class:`ConfigError` naming the field and the file when a value is bad, when
        ``config_path`` does not exist, or when the TOML file is malformed.
        """
        path = find_config(config_path)
        token = _config_file.set(path)
        try:
            return cls(**overrides)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{_shown(path)}: malformed TOML: {exc}") from None
        except ValidationError as exc:
            raise ConfigError(_explain(exc, path)) from None
        except SettingsError as exc:
            # An environment variable holding a list or mapping that is not valid JSON.
            raise ConfigError(f"invalid settings: {exc}") from None
        finally:
            _config_file.reset(token)

    def retry_policy(self, capability: str) -> RetryPolicy:
        """The retry policy for tasks of ``capability`` (the default policy if none is set)."""
        return self.retry.get(capability) or RetryPolicy()

    def redacted(self) -> dict[str, Any]:
        """The effective settings as a JSON-able dict, with every secret masked."""
        result: dict[str, Any] = redact(self.model_dump(mode="json"))
        return result

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # pydantic builds both repr() and str() from these; mask secrets in both.
        for name, value in super().__repr_args__():
            yield name, redact(value) if isinstance(value, str) else value


def find_config(config_path: str | Path | None = None) -> Path | None:
    """The TOML file a load reads: ``config_path`` (which must exist), else the local file,
    else the system one, else None."""
    if config_path is not None:
        path = Path(config_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist or is not a file")
        return path
    for candidate in (LOCAL_CONFIG, SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def _shown(path: Path | None) -> str:
    return str(path.absolute()) if path else ""


def _explain(exc: ValidationError, path: Path | None) -> str:
    """Every pydantic error as ``field: what is wrong (got value)``, plus where values come from."""
    lines = []
    for error in exc.errors():
        if error["type"] == "default_factory_not_called":
            continue  # a default built from a field that failed: that field's error says why
        field = ".".join(str(part) for part in error["loc"] if part != "[key]") or "settings"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] not in ("value_error",) and "input" in error:
            shown = repr(redact(error["input"]))
            message += f" (got {shown[:60]})"
        lines.append(f"{field}: {message}")
    env_hint = f"{ENV_PREFIX}* environment variables"
    source = f"{_shown(path)} or {env_hint}" if path else env_hint
    return f"invalid settings (from {source}): " + "; ".join(lines)
