"""The composition root: the one place that turns settings into backends, agents and a runtime."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from agentdeck.agents.builtin import build as build_handler
from agentdeck.agents.decorator import import_agents
from agentdeck.agents.worker import Worker
from agentdeck.backends import open_blobs, open_bus, open_registry, open_store
from agentdeck.core.breakers import Breakers
from agentdeck.core.clock import Clock, SystemClock
from agentdeck.core.outputs import OutputStore
from agentdeck.core.ports import BlobStore, Bus, Registry, Store
from agentdeck.core.recovery import LostAgents
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.runtime import Runtime, Service
from agentdeck.core.scheduler import SchedulerConfig
from agentdeck.core.settings import AgentSpec, Settings
from agentdeck.core.snapshot import SnapshotService

#: The settings that name backends; setting any of them (config file or environment) means a
#: cluster the control centre attaches to instead of running the embedded core.
BACKEND_URLS = frozenset({"bus_url", "store_url", "registry_url", "blob_url"})

#: The fleet ``--demo`` adds when the config declares none: one of each harmless built-in.
DEMO_AGENTS: tuple[dict[str, Any], ...] = (
    {"kind": "echo", "concurrency": 8},
    {"kind": "sleep", "concurrency": 8},
    {"kind": "chaos", "concurrency": 4, "options": {"fail_rate": 0.2}},
)


def attaches(settings: Settings) -> bool:
    """True when the control centre should attach to a cluster rather than embed the core.

    That is when a backend URL is configured (not left at its default), unless the registry is
    ``memory://``: the lease lives there, and a registry inside one process has no cluster to
    join (nobody else could lead it).
    """
    configured = bool(settings.model_fields_set & BACKEND_URLS)
    return configured and not settings.registry_url.startswith("memory:")


def scheduler_config(settings: Settings) -> SchedulerConfig:
    """The scheduler's pacing and retry policies from settings."""
    s = settings.scheduler
    per_cap = {
        cap: p if isinstance(p, RetryPolicy) else RetryPolicy.from_mapping(p, where=f"retry.{cap}")
        for cap, p in settings.retry.items()
    }
    return SchedulerConfig(
        poll_interval=s.poll_interval,
        batch_size=s.batch_size,
        tasks_per_message=s.tasks_per_message,
        lost_grace=s.lost_grace,
        dispatch_timeout=s.dispatch_timeout,
        lease_ttl=s.lease_ttl,
        repair_interval=s.repair_interval,
        capability_retry=per_cap,
        limits={cap: lim.to_limits() for cap, lim in settings.capability_limits.items()},
        label_budgets=settings.budgets,
    )


def build_breakers(
    settings: Settings, registry: Registry, bus: Bus, clock: Clock
) -> Breakers | None:
    """The circuit breakers the scheduler consults, or None when turned off."""
    b = settings.breakers
    if not b.enabled:
        return None
    return Breakers(
        registry, bus, clock, default=b.default, policies=b.capabilities, refresh=b.refresh
    )


def agent_specs(settings: Settings, demo: bool) -> list[AgentSpec]:
    """The configured fleet, plus the demo fleet's kinds the config does not already run."""
    specs = list(settings.agents)
    if demo:
        have = {s.kind for s in specs}
        specs += [AgentSpec.model_validate(d) for d in DEMO_AGENTS if d["kind"] not in have]
    return specs


def build_worker(
    spec: AgentSpec,
    bus: Bus,
    registry: Registry,
    clock: Clock,
    settings: Settings,
    outputs: OutputStore | None = None,
) -> Worker:
    """One agent worker serving its capabilities with the built-in handler of its kind
    (``outputs``: where it keeps its large outputs; None: it sends them in its reports)."""
    handler = build_handler(spec.kind, dict(spec.options))
    name = spec.name or spec.kind
    return Worker(
        bus,
        registry,
        dict.fromkeys(spec.capabilities, handler),
        name=f"{name}@{settings.node}",
        concurrency=spec.concurrency,
        clock=clock,
        heartbeat_interval=settings.scheduler.heartbeat_interval,
        ttl=settings.scheduler.agent_ttl,
        started_after=spec.started_after,
        outputs=outputs,
    )


def agent_outputs(settings: Settings, clock: Clock) -> tuple[BlobStore, OutputStore]:
    """The BlobStore (not started) and OutputStore of an agent process.

    With a ``blob_url`` configured (config file or environment), the agent keeps its outputs
    over ``output_inline_limit`` there itself and reports references. Without one, the default
    is a folder on this machine, which a scheduler on another cannot read: the agent then sends
    every output inside its reports (limit 0) and only READS references from that folder, so
    an agent beside the daemon reads its upstream outputs, and one on another host without a
    shared blob store fails such a read with an error that says to configure ``blob_url``."""
    blobs = open_blobs(settings.blob_url, clock=clock)
    shared = "blob_url" in settings.model_fields_set
    return blobs, OutputStore(blobs, limit=settings.output_inline_limit if shared else 0)


@contextlib.asynccontextmanager
async def store_only(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Store]:
    """Just the Store, migrated: what read-only CLI commands need."""
    store = open_store(settings.store_url, clock=clock or SystemClock())
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def blobs_only(settings: Settings, clock: Clock | None = None) -> AsyncIterator[BlobStore]:
    """Just the BlobStore, started."""
    blobs = open_blobs(settings.blob_url, clock=clock or SystemClock())
    await blobs.start()
    try:
        yield blobs
    finally:
        await blobs.close()


@contextlib.asynccontextmanager
async def registry_only(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Registry]:
    """Just the Registry, started."""
    registry = open_registry(settings.registry_url, clock=clock or SystemClock())
    await registry.start()
    try:
        yield registry
    finally:
        await registry.close()


@contextlib.asynccontextmanager
async def bus_only(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Bus]:
    """Just the Bus, started (no consumer: it only publishes, reads events and dead letters)."""
    bus = open_bus(settings.bus_url, clock=clock or SystemClock())
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


def decorated_workers(
    modules: Sequence[str],
    bus: Bus,
    registry: Registry,
    clock: Clock,
    settings: Settings,
    outputs: OutputStore | None = None,
) -> list[Worker]:
    """One worker per ``@agent`` function found in ``modules`` (ConfigError if one is missing)."""
    return [
        Worker(
            bus,
            registry,
            {d.capability: d.handler},
            name=f"{d.capability}@{settings.node}",
            concurrency=d.concurrency,
            clock=clock,
            heartbeat_interval=settings.scheduler.heartbeat_interval,
            ttl=settings.scheduler.agent_ttl,
            outputs=outputs,
        )
        for d in import_agents(modules).values()
    ]


def build_runtime(
    settings: Settings,
    *,
    demo: bool = False,
    clock: Clock | None = None,
    extra_services: Mapping[str, Service] | None = None,
    with_agents: bool = True,
) -> Runtime:
    """The whole node: backends from the URLs, the configured agents, the scheduler."""
    clock = clock or SystemClock()
    bus = open_bus(settings.bus_url, clock=clock)
    registry = open_registry(settings.registry_url, clock=clock)
    blobs = open_blobs(settings.blob_url, clock=clock)
    # One for the agents here (they keep large outputs themselves) and the scheduler (which
    # resolves references, and stores what an agent elsewhere sent inline); limit 0: none.
    outputs = OutputStore(blobs, limit=settings.output_inline_limit)
    services: list[Service] = []
    if with_agents:
        services += [
            build_worker(s, bus, registry, clock, settings, outputs)
            for s in agent_specs(settings, demo)
        ]
        services += decorated_workers(
            settings.agent_modules, bus, registry, clock, settings, outputs
        )
    services += list((extra_services or {}).values())
    runtime = Runtime(
        store=open_store(settings.store_url, clock=clock),
        bus=bus,
        registry=registry,
        breakers=build_breakers(settings, registry, bus, clock),
        lost_agents=LostAgents(
            registry,
            clock,
            grace=2 * settings.scheduler.heartbeat_interval,
            interval=settings.scheduler.heartbeat_interval / 2,
        ),
        blobs=blobs,
        outputs=outputs,
        clock=clock,
        node=settings.node or socket.gethostname(),
        config=scheduler_config(settings),
        limits=settings.limits,
        services=services,
    )
    snap = settings.snapshots
    if snap.interval > 0:
        runtime.services.append(
            SnapshotService(
                runtime.store,
                runtime.blobs,
                clock,
                interval=snap.interval,
                keep=snap.keep,
                prefix=snap.prefix,
                node=runtime.node,
                active=lambda: runtime.scheduler.is_leader,  # one node writes them
            )
        )
    return runtime
