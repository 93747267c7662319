"""The composition root: settings and flags in, one ready object out.

``agentdeck`` decides here, once, what this process is:

- a **node** (nothing configured, ``--scheduler``, ``--demo`` or ``--daemon``): the backends the
  URLs name, the scheduler, the configured agents (and with ``--demo`` the demo fleet and a
  stream of examples), instrumented as the settings say;
- an **attached** control centre (backend URLs configured): the Store, the Registry and the
  Bus only. It runs no scheduler and never takes the lease, so it costs the cluster nothing;
  commands are queued in the Store for whichever node leads, as the CLI does.

The daemon gets a running node (:func:`run_daemon`); the control centre gets one opener of its
data sources (:func:`control_centre`), which it enters in its own event loop and never looks
behind: it opens no backend itself. Nothing here imports Textual (the daemon's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
from collections.abc import AsyncIterator
from enum import StrEnum
from pathlib import Path

from agentdeck.core.client import Client
from agentdeck.core.clock import SystemClock
from agentdeck.core.collector import fewer_collections
from agentdeck.core.logs import configure_logging
from agentdeck.core.runtime import Runtime
from agentdeck.core.settings import Settings
from agentdeck.tui.holds import policies_of
from agentdeck.tui.reload import attach_reload, reload_limits
from agentdeck.tui.sources import Connect, Sources
from agentdeck.tui.telemetry import Telemetry, instrumented
from agentdeck.tui.wiring import (
    agent_specs,
    attaches,
    build_runtime,
    bus_only,
    registry_only,
    store_only,
)


class Mode(StrEnum):
    """What this process runs."""

    NODE = "node"
    """The whole node: backends, scheduler, agents."""
    ATTACHED = "attached"
    """The Store, the Registry and the Bus of a cluster, and no scheduler or agent."""


def mode(settings: Settings, *, demo: bool = False, scheduler: bool = False) -> Mode:
    """Attached when the settings name a cluster to attach to (``wiring.attaches``), unless
    ``--scheduler`` or ``--demo`` asks for a node in this process too."""
    return Mode.ATTACHED if attaches(settings) and not (scheduler or demo) else Mode.NODE


@contextlib.asynccontextmanager
async def node(
    settings: Settings, *, demo: bool, live_log: bool = False, config: Path | None = None
) -> AsyncIterator[tuple[Runtime, Telemetry]]:
    """The whole node, instrumented (``/metrics``, spans; closed at the end of the block), not
    yet started: enter the runtime to start it. With ``demo`` the demo feed too, and with
    ``live_log`` a line per notable event on stdout. Its scheduler carries out ``reload`` by
    re-reading ``config`` (or the file a start finds), as SIGHUP does."""
    from agentdeck.tui.demo import DemoFeeder, LivePrinter, simulated_agent

    runtime = build_runtime(settings, demo=demo)
    attach_reload(runtime.scheduler, config)
    served = {c for spec in agent_specs(settings, demo) for c in spec.capabilities}
    if demo and (agent := simulated_agent(runtime, settings)) is not None:
        runtime.services.append(agent)  # (before instrumenting: it gets metrics like the rest)
        served |= set(agent.capabilities)
    async with instrumented(runtime, settings) as telemetry:
        if demo and live_log:
            runtime.services.append(LivePrinter(runtime.bus))
        if demo:
            runtime.services.append(DemoFeeder(runtime.client, runtime.clock, capabilities=served))
        yield runtime, telemetry


async def run_daemon(settings: Settings, *, demo: bool, config: Path | None = None) -> None:
    """The headless node until SIGTERM or SIGINT. SIGHUP (the daemon convention) reloads the
    capability limits and label budgets from ``config`` (or the file a start finds):
    :mod:`agentdeck.tui.reload`."""
    configure_logging(settings.log_level, settings.log_format, node=settings.node)
    loop = asyncio.get_running_loop()
    async with node(settings, demo=demo, live_log=True, config=config) as (runtime, _):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runtime.close)
        loop.add_signal_handler(signal.SIGHUP, reload_limits, runtime.scheduler, config)
        async with runtime:
            # Once started, what the node holds is frozen and young collections wait longer
            # (core.collector; measured in docs/performance.md).
            with fewer_collections():
                await runtime.wait_closed()


def _actor(node: str) -> str:
    return f"tui:{getpass.getuser()}@{node}"


@contextlib.asynccontextmanager
async def runtime_sources(
    settings: Settings, *, demo: bool, config: Path | None = None
) -> AsyncIterator[Sources]:
    """A running node (:func:`node`, reloading ``config``) and what the screens read of it."""
    async with node(settings, demo=demo, config=config) as (runtime, telemetry), runtime:
        client = Client(
            runtime.store,
            runtime.clock,
            limits=settings.limits,
            actor=_actor(runtime.node),
            on_submit=runtime.scheduler.wake,
        )
        yield Sources(
            client,
            runtime.registry,
            runtime.clock,
            runtime.bus.subscribe_events,
            runtime.node,
            runtime.bus,
            telemetry.tracing.recent if telemetry.tracing is not None else None,
            breakers=policies_of(settings.breakers),
        )


@contextlib.asynccontextmanager
async def attached_sources(settings: Settings) -> AsyncIterator[Sources]:
    """The cluster's Store, Registry and Bus, and no scheduler or agent."""
    clock = SystemClock()
    async with (
        store_only(settings, clock) as store,
        registry_only(settings, clock) as registry,
        bus_only(settings, clock) as bus,
    ):
        client = Client(store, clock, limits=settings.limits, actor=_actor(settings.node))
        yield Sources(
            client,
            registry,
            clock,
            bus.subscribe_events,
            settings.node,
            bus,
            attached=True,
            breakers=policies_of(settings.breakers),
        )


def control_centre(
    settings: Settings,
    *,
    demo: bool = False,
    scheduler: bool = False,
    config: Path | None = None,
) -> Connect:
    """The one opener of the control centre's data sources, for the :func:`mode` the settings
    and flags decide (a node of its own reloads ``config`` on the ``reload`` action)."""
    if mode(settings, demo=demo, scheduler=scheduler) is Mode.ATTACHED:
        return lambda: attached_sources(settings)
    return lambda: runtime_sources(settings, demo=demo, config=config)
