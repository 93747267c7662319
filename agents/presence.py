"""An agent's presence in the registry: heartbeats that keep its record alive, and the
settings the worker is checked against before it registers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from structlog.typing import FilteringBoundLogger

from agentdeck.agents.context import Handler
from agentdeck.core.errors import ConfigError
from agentdeck.core.models import AgentRecord
from agentdeck.core.ports import Registry
from agentdeck.core.spec import CAPABILITY_PATTERN, check_name


async def heartbeat(
    registry: Registry, record: AgentRecord, ttl: float, log: FilteringBoundLogger
) -> None:
    """Refresh ``record`` in the registry for ``ttl`` seconds, registering it again if it
    lapsed. Never raises: the registry is rebuildable and work does not depend on it, so a
    failure is logged and the next beat tries again."""
    try:
        alive = await registry.heartbeat(
            record.id,
            ttl,
            in_flight=record.in_flight,
            state=record.state,
            succeeded=record.succeeded,
            failed=record.failed,
        )
        if not alive:
            log.warning("agent_reregistered")
            await registry.register(record, ttl)
    except Exception as exc:
        log.warning("heartbeat_failed", error=str(exc))


async def deregister(registry: Registry, agent_id: str, log: FilteringBoundLogger) -> None:
    """Remove the agent's record; a failure is logged (the record lapses after its ttl)."""
    try:
        await registry.deregister(agent_id)
    except Exception as exc:
        log.warning("deregister_failed", error=str(exc))


def check_settings(
    name: str, handlers: Mapping[str, Handler], concurrency: int, interval: float, ttl: float
) -> None:
    """Raise ConfigError naming the first bad worker setting."""
    if not name:
        raise ConfigError("agent name must not be empty")
    if not handlers:
        raise ConfigError(f"agent {name!r} has no handlers; give at least one capability")
    for capability, handler in handlers.items():
        try:
            check_name("capability", capability, CAPABILITY_PATTERN)
        except ValueError as exc:
            raise ConfigError(f"agent {name!r}: {exc}") from None
        if not callable(handler):
            raise ConfigError(f"agent {name!r}: the handler of {capability!r} is not callable")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(
            f"agent {name!r}: concurrency must be a whole number >= 1, got {concurrency!r}"
        )
    if not interval > 0:
        raise ConfigError(f"agent {name!r}: heartbeat_interval must be > 0, got {interval!r}")
    if not ttl > interval:
        raise ConfigError(
            f"agent {name!r}: ttl ({ttl!r}) must be longer than heartbeat_interval "
            f"({interval!r}), or the record lapses between heartbeats"
        )


def check_sending(name: str, report_limit: int, retry_delays: Sequence[float]) -> None:
    """Raise ConfigError naming a bad ``report_limit`` or ``publish_retry_delays``."""
    if isinstance(report_limit, bool) or not isinstance(report_limit, int) or report_limit < 1024:
        raise ConfigError(
            f"agent {name!r}: report_limit must be a whole number of bytes >= 1024, "
            f"got {report_limit!r}"
        )
    for delay in retry_delays:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 60:
            raise ConfigError(
                f"agent {name!r}: publish_retry_delays must be seconds from 0 to 60, got {delay!r}"
            )
