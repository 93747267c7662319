"""Wiring metrics and traces into a node: what the settings ask for, attached to its parts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from agentdeck.agents.worker import Worker
from agentdeck.core.clock import Clock
from agentdeck.core.metrics import Metrics, MetricsObserver, MetricsSampler, MetricsServer
from agentdeck.core.ports import Bus
from agentdeck.core.runtime import Runtime
from agentdeck.core.scheduler import SchedulerObserver
from agentdeck.core.settings import Settings
from agentdeck.core.spanstream import SpanEvents
from agentdeck.core.tracing import Tracing, TracingObserver, enabled_by_env

SAMPLE_INTERVAL = 5.0
"""Seconds between samples of queue depth, agents, breakers, leader and dead letters."""


@dataclass(eq=False)
class Telemetry:
    """One process's metrics (None when ``metrics_port`` is 0) and tracing (None when off)."""

    metrics: Metrics | None
    tracing: Tracing | None
    server: MetricsServer | None

    @classmethod
    def for_settings(
        cls, settings: Settings, service: str, metrics_port: int | None = None
    ) -> Telemetry:
        """What ``settings`` ask for; ``service`` names the process in traces, and
        ``metrics_port`` (when not None) overrides the setting: processes sharing one
        environment on a host each need their own port."""
        port = settings.metrics_port if metrics_port is None else metrics_port
        metrics = Metrics() if port else None
        server = (
            MetricsServer(metrics, port, settings.metrics_address) if metrics is not None else None
        )
        tracing = Tracing(service, settings.node) if settings.tracing and enabled_by_env() else None
        return cls(metrics, tracing, server)

    def observers(self) -> list[SchedulerObserver]:
        """The scheduler observers that feed this process's metrics and tracing (those on)."""
        observers: list[SchedulerObserver] = []
        if self.metrics is not None:
            observers.append(MetricsObserver(self.metrics))
        if self.tracing is not None:
            observers.append(TracingObserver(self.tracing))
        return observers

    def span_events(self, bus: Bus, clock: Clock) -> SpanEvents | None:
        """A publisher of this process's finished spans on ``bus``'s events stream, so every
        control centre sees the cluster's traces (``core.spanstream``); None when tracing is
        off. Run it as a service (it publishes from its ``run``). Its drops are counted in
        ``agentdeck_events_dropped_total{stream="span"}`` when metrics are on."""
        if self.tracing is None:
            return None
        metrics = self.metrics
        publisher = SpanEvents(
            bus,
            clock,
            on_drop=(lambda reason: metrics.event_dropped("span", reason))
            if metrics is not None
            else None,
        )
        self.tracing.provider.add_span_processor(publisher)
        return publisher

    def attach(self, workers: Iterable[object]) -> None:
        """Give every :class:`Worker` among ``workers`` this process's metrics and tracing."""
        for worker in workers:
            if isinstance(worker, Worker):
                worker.metrics = self.metrics
                worker.tracing = self.tracing

    def close(self) -> None:
        """Flush spans still buffered for export and free the metrics port."""
        if self.server is not None:
            self.server.close()
        if self.tracing is not None:
            self.tracing.shutdown()


def instrument_runtime(
    runtime: Runtime, settings: Settings, *, sample_interval: float = SAMPLE_INTERVAL
) -> Telemetry:
    """Metrics and tracing for a daemon: the scheduler and the runtime's workers feed them,
    the spans go on the events stream, and (when metrics are on) ``/metrics`` and the sampler
    run as the runtime's services."""
    telemetry = Telemetry.for_settings(settings, "agentdeck")
    runtime.scheduler.observe(*telemetry.observers())
    telemetry.attach(runtime.services)
    if (publisher := telemetry.span_events(runtime.bus, runtime.clock)) is not None:
        runtime.services.append(publisher)
    if telemetry.metrics is not None and telemetry.server is not None:
        runtime.services.append(
            MetricsSampler(
                telemetry.metrics,
                runtime.clock,
                store=runtime.store,
                registry=runtime.registry,
                bus=runtime.bus,
                blobs=runtime.blobs,
                snapshot_prefix=settings.snapshots.prefix,
                interval=sample_interval,
            )
        )
        runtime.services.append(telemetry.server)
    return telemetry


@contextlib.asynccontextmanager
async def instrumented(runtime: Runtime, settings: Settings) -> AsyncIterator[Telemetry]:
    """:func:`instrument_runtime` for the length of the block; closed (spans flushed, port
    freed) at its end. Enter it before the runtime, so the runtime starts what it adds."""
    telemetry = instrument_runtime(runtime, settings)
    try:
        yield telemetry
    finally:
        telemetry.close()
