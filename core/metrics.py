"""Prometheus metrics: what a node counts, and the ``/metrics`` endpoint that shows it.

Every metric lives in the :class:`Metrics` object's own ``CollectorRegistry`` (never the
process-wide default), so a process, or a test, can hold several side by side. The scheduler
(through :class:`MetricsObserver`, one of its observers) and the worker call a few cheap methods
on it as work moves (a dictionary lookup and an add each); what is cheaper to read than to track
(queue depth, agents, breakers, the leader, dead letters) is sampled from the ports every few
seconds by :class:`MetricsSampler`.

Names follow the Prometheus conventions: units in the name (``_seconds``), ``_total`` on
counters, and label values drawn from small sets (capabilities, outcomes, states, node names),
never task or workflow ids. docs/observability.md lists them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from agentdeck.core.clock import Clock
from agentdeck.core.errors import ConfigError
from agentdeck.core.models import AgentState, Task, Usage, Workflow
from agentdeck.core.ports import BlobStore, Bus, Registry, Store
from agentdeck.core.scheduler.config import LEASE_NAME
from agentdeck.core.scheduler.observer import SchedulerObserver
from agentdeck.core.states import TaskStatus

log = structlog.get_logger(__name__)

T = TaskStatus
#: Histogram buckets (seconds) for latencies: from a millisecond to ten minutes.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)
#: States a breaker can be in (core/breaker.py); each breaker exposes one series per state.
BREAKER_STATES = ("closed", "open", "half_open")
#: Task outcomes counted by ``agentdeck_tasks_total``.
_OUTCOMES = {T.SUCCEEDED: "succeeded", T.FAILED: "failed", T.CANCELLED: "cancelled"}
_OUTCOMES[T.SKIPPED] = "skipped"
#: Statuses that end an attempt that ran (or may have run) on an agent.
_ATTEMPT_ENDS = frozenset({T.SUCCEEDED, T.FAILED, T.RETRYING})
#: Most tasks read from the Store per status by one sample (a gauge at the cap means "at least").
SAMPLE_LIMIT = 10_000
MANIFEST = "/manifest.json"
"""The object that completes a snapshot folder (core/snapshot.py)."""


class Metrics:
    """Every agentdeck metric, registered in one private ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._seen: dict[int, set[str]] = {}
        _LIVE.add(self)
        r = self.registry
        # --------------------------------------------------------------- scheduler side
        self.tasks = Counter(
            "agentdeck_tasks",
            "Tasks that reached a final state, by capability and outcome.",
            ["capability", "outcome"],
            registry=r,
        )
        self.dispatched = Counter(
            "agentdeck_tasks_dispatched",
            "Task attempts dispatched to the bus (redeliveries included).",
            ["capability"],
            registry=r,
        )
        self.retries = Counter(
            "agentdeck_task_retries",
            "Failed attempts that will be retried after a delay.",
            ["capability"],
            registry=r,
        )
        self.rate_limited = Counter(
            "agentdeck_task_rate_limited",
            "Attempts their provider rate-limited: held and retried, no attempt spent.",
            ["capability"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "agentdeck_llm_tokens",
            "Tokens attempts spent with model providers, by kind (input, output, "
            "cache_creation, cache_read), model and capability.",
            ["kind", "model", "capability"],
            registry=r,
        )
        self.llm_cost = Counter(
            "agentdeck_llm_cost_usd",
            "US dollars attempts spent with model providers (known costs only), by model and "
            "capability.",
            ["model", "capability"],
            registry=r,
        )
        self.workflows = Counter(
            "agentdeck_workflows",
            "Workflows that finished, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "agentdeck_task_dispatch_latency_seconds",
            "Time from a task becoming ready to its dispatch by the scheduler.",
            ["capability"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "agentdeck_task_run_seconds",
            "Time from an attempt's start on an agent to its result, seen by the scheduler.",
            ["capability", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rounds = Counter(
            "agentdeck_scheduler_rounds", "Scheduler rounds run while leading.", registry=r
        )
        self.is_leader = Gauge(
            "agentdeck_scheduler_is_leader",
            "1 while this process holds the scheduler lease, else 0.",
            registry=r,
        )
        self.lease_renewals = Counter(
            "agentdeck_scheduler_lease_renewals",
            "Scheduler lease acquisitions and renewals by this process.",
            registry=r,
        )
        self.leader_changes = Counter(
            "agentdeck_scheduler_leader_changes",
            "Times this process became leader or lost the lease.",
            ["change"],
            registry=r,
        )
        # -------------------------------------------------------------------- sampled
        self.ready = Gauge(
            "agentdeck_tasks_ready",
            "Ready tasks waiting for dispatch (queue depth), by capability; sampled.",
            ["capability"],
            registry=r,
        )
        self.in_flight = Gauge(
            "agentdeck_tasks_in_flight",
            "Tasks dispatched or running, by capability; sampled from the Store.",
            ["capability"],
            registry=r,
        )
        self.agents = Gauge(
            "agentdeck_agents",
            "Live agents in the registry, by state; sampled.",
            ["state"],
            registry=r,
        )
        self.agent_slots = Gauge(
            "agentdeck_agent_slots",
            "Concurrency of live agents serving a capability; sampled.",
            ["capability"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "agentdeck_breaker_state",
            "1 for the state each circuit breaker is in, 0 for the others; sampled.",
            ["breaker", "state"],
            registry=r,
        )
        self.leader = Gauge(
            "agentdeck_scheduler_leader",
            "1 for the node holding the scheduler lease (as the registry says); sampled.",
            ["node"],
            registry=r,
        )
        self.fencing_token = Gauge(
            "agentdeck_scheduler_fencing_token",
            "The current scheduler lease's fencing token; sampled.",
            registry=r,
        )
        self.dead_letters = Gauge(
            "agentdeck_dead_letters",
            "Messages in the dead-letter queue; sampled.",
            registry=r,
        )
        self.snapshot_time = Gauge(
            "agentdeck_snapshot_last_timestamp_seconds",
            "Unix time of the newest complete snapshot in the BlobStore (0: none); sampled. "
            "Its age is time() - this.",
            registry=r,
        )
        self.sample_errors = Counter(
            "agentdeck_metrics_sample_errors",
            "Samples that failed because a backend did not answer.",
            registry=r,
        )
        # ------------------------------------------------------------------ agent side
        self.runs = Counter(
            "agentdeck_agent_runs",
            "Task attempts run by agents of this process, by capability and outcome.",
            ["capability", "outcome"],
            registry=r,
        )
        self.handler_time = Histogram(
            "agentdeck_agent_run_seconds",
            "Time a handler ran in an agent of this process, by capability and outcome.",
            ["capability", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pickup_latency = Histogram(
            "agentdeck_agent_pickup_latency_seconds",
            "Time from dispatch to an agent starting the task (crosses hosts: clock skew adds).",
            ["capability"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.running = Gauge(
            "agentdeck_agent_tasks_running",
            "Task handlers running in this process, by capability.",
            ["capability"],
            registry=r,
        )
        self.rejected = Counter(
            "agentdeck_agent_messages_dead_lettered",
            "Task messages an agent of this process rejected to the dead-letter queue.",
            registry=r,
        )
        self.log_lines_dropped = Counter(
            "agentdeck_agent_log_lines_dropped",
            "Agent log lines not put on the events stream, by reason (rate, queue, publish).",
            ["reason"],
            registry=r,
        )
        self.events_dropped = Counter(
            "agentdeck_events_dropped",
            "Events this process did not put on the events stream, by stream (log, feed, "
            "span) and reason (rate, queue, publish, invalid); spans left out by the sample "
            "rate are not counted.",
            ["stream", "reason"],
            registry=r,
        )
        self.reconnects = Counter(
            "agentdeck_backend_reconnects",
            "Reconnections to a backend after it was lost, by backend.",
            ["backend"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text exposition format, as ``/metrics`` serves it."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ scheduler hooks

    def tasks_changed(self, tasks: Iterable[Task], now: float) -> None:
        """Count the transitions the scheduler just applied (``tasks`` in their new state)."""
        for t in tasks:
            status = t.status
            if status is T.DISPATCHED:
                self.dispatched.labels(t.capability).inc()
                continue
            if status in _ATTEMPT_ENDS and t.started_at is not None:
                end = t.finished_at if t.finished_at is not None else now
                outcome = "succeeded" if status is T.SUCCEEDED else "failed"
                self.run_time.labels(t.capability, outcome).observe(max(0.0, end - t.started_at))
            if status is T.RETRYING:
                self.retries.labels(t.capability).inc()
            final = _OUTCOMES.get(status)
            if final is not None:
                self.tasks.labels(t.capability, final).inc()

    def usage_recorded(self, used: Iterable[tuple[Task, Usage]]) -> None:
        """Count what attempts spent, as the Store recorded it (a model not said counts as
        ``unknown``; an unknown cost adds no dollars)."""
        for t, u in used:
            model = u.model or "unknown"
            for kind, tokens in (
                ("input", u.input_tokens),
                ("output", u.output_tokens),
                ("cache_creation", u.cache_creation_input_tokens),
                ("cache_read", u.cache_read_input_tokens),
            ):
                if tokens:
                    self.llm_tokens.labels(kind, model, t.capability).inc(tokens)
            if u.cost_usd:
                self.llm_cost.labels(model, t.capability).inc(u.cost_usd)

    def tasks_dispatched(self, ready: Sequence[Task], now: float) -> None:
        """Observe ready-to-dispatch latency of ``ready`` tasks (their last change made them
        ready) dispatched at ``now``."""
        children: dict[str, Histogram] = {}
        for t in ready:
            child = children.get(t.capability)
            if child is None:
                child = children[t.capability] = self.dispatch_latency.labels(t.capability)
            child.observe(max(0.0, now - t.updated_at))

    def workflow_finished(self, outcome: str) -> None:
        """Count a finished workflow."""
        self.workflows.labels(outcome).inc()

    def lease_renewed(self) -> None:
        """The lease was acquired or renewed."""
        self.lease_renewals.inc()

    def leadership(self, leading: bool) -> None:
        """This process became leader (True) or stepped down (False)."""
        self.is_leader.set(1 if leading else 0)
        self.leader_changes.labels("elected" if leading else "lost").inc()

    # ---------------------------------------------------------------------- agent hooks

    def run_started(self, capability: str, pickup_latency: float) -> None:
        """An agent of this process started a task ``pickup_latency`` s after its dispatch."""
        self.running.labels(capability).inc()
        self.pickup_latency.labels(capability).observe(max(0.0, pickup_latency))

    def run_finished(self, capability: str, outcome: str, seconds: float) -> None:
        """An agent's handler ended with ``outcome`` (succeeded, failed, timeout, cancelled)."""
        self.running.labels(capability).dec()
        self.runs.labels(capability, outcome).inc()
        self.handler_time.labels(capability, outcome).observe(max(0.0, seconds))

    def message_rejected(self) -> None:
        """An agent dead-lettered a task message it could not run."""
        self.rejected.inc()

    def log_line_dropped(self, reason: str) -> None:
        """An agent's log line did not reach the events stream (``reason``: rate, queue...).

        Counted twice: ``agentdeck_agent_log_lines_dropped_total`` (kept for dashboards
        that use it) and ``agentdeck_events_dropped_total{stream="log"}``."""
        self.log_lines_dropped.labels(reason).inc()
        self.event_dropped("log", reason)

    def event_dropped(self, stream: str, reason: str) -> None:
        """An event of ``stream`` (``log``, ``feed``: an agent's progress and output,
        ``span``) did not reach the events stream, for ``reason`` (rate, queue, publish,
        invalid). A span left out by the sample rate (``sampled``) is a choice, not a loss:
        not counted."""
        if reason != "sampled":
            self.events_dropped.labels(stream, reason).inc()

    def reconnected(self, backend: str) -> None:
        """A backend connection was restored (``backend``: rabbitmq, postgres, redis, ...)."""
        self.reconnects.labels(backend).inc()

    # ---------------------------------------------------------------------- sampling

    async def sample(
        self,
        *,
        store: Store | None = None,
        registry: Registry | None = None,
        bus: Bus | None = None,
        blobs: BlobStore | None = None,
        snapshot_prefix: str = "snapshots/",
    ) -> None:
        """Refresh the sampled gauges from whichever ports are given.

        A port that fails leaves its gauges as they were and counts a sample error.
        """
        if store is not None:
            await self._guarded(self._sample_store(store))
        if registry is not None:
            await self._guarded(self._sample_registry(registry))
        if bus is not None:
            await self._guarded(self._sample_bus(bus))
        if blobs is not None:
            await self._guarded(self._sample_snapshots(blobs, snapshot_prefix))

    async def _guarded(self, sample: Awaitable[None]) -> None:
        try:
            await sample
        except Exception as exc:  # metrics must never take the node down with them
            self.sample_errors.inc()
            log.warning("metrics_sample_failed", error=str(exc), kind=type(exc).__name__)

    async def _sample_store(self, store: Store) -> None:
        ready = await store.list_tasks(status=[T.READY], limit=SAMPLE_LIMIT)
        flying = await store.list_tasks(status=[T.DISPATCHED, T.RUNNING], limit=SAMPLE_LIMIT)
        self._set_counts(self.ready, _count_by_capability(ready))
        self._set_counts(self.in_flight, _count_by_capability(flying))

    async def _sample_registry(self, registry: Registry) -> None:
        agents = await registry.agents()
        for agent_state in AgentState:
            count = sum(1 for a in agents if a.state is agent_state)
            self.agents.labels(agent_state.value).set(count)
        slots: dict[str, int] = {}
        for agent in agents:
            for capability in agent.capabilities:
                slots[capability] = slots.get(capability, 0) + agent.concurrency
        self._set_counts(self.agent_slots, slots)
        breakers = await registry.breakers()
        self.breaker_state.clear()
        for breaker in breakers:
            for state in BREAKER_STATES:
                self.breaker_state.labels(breaker.name, state).set(
                    1 if breaker.state == state else 0
                )
        lease = await registry.get_lease(LEASE_NAME)
        self.leader.clear()
        if lease is not None:
            self.leader.labels(lease.holder).set(1)
            self.fencing_token.set(lease.token)

    def _set_counts(self, gauge: Gauge, counts: dict[str, int]) -> None:
        """One series per key; a key seen before and absent now drops to 0 rather than
        vanishing, so a queue that empties reads 0."""
        seen = self._seen.setdefault(id(gauge), set())
        for key in seen - counts.keys():
            gauge.labels(key).set(0)
        for key, count in counts.items():
            gauge.labels(key).set(count)
        seen.update(counts)

    async def _sample_snapshots(self, blobs: BlobStore, prefix: str) -> None:
        # One listing, no reads: a snapshot's manifest is written last, so its time is the
        # snapshot's completion (see core/snapshot.py).
        manifests = [b.modified for b in await blobs.list(prefix) if b.key.endswith(MANIFEST)]
        self.snapshot_time.set(max(manifests, default=0.0))

    async def _sample_bus(self, bus: Bus) -> None:
        letters = await bus.dead_letters(limit=SAMPLE_LIMIT)
        self.dead_letters.set(len(letters))


class MetricsObserver(SchedulerObserver):
    """The scheduler's moments counted in ``metrics``: transitions, dispatch latency, usage
    (tokens and cost), finished workflows, rounds, the lease and leadership."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __repr__(self) -> str:
        return "<MetricsObserver>"

    async def lease_acquired(self, token: int) -> None:
        self.metrics.leadership(True)

    async def lease_renewed(self) -> None:
        self.metrics.lease_renewed()

    async def lease_lost(self) -> None:
        self.metrics.leadership(False)

    async def round_finished(self, busy: bool) -> None:
        self.metrics.rounds.inc()

    async def tasks_dispatched(self, ready: Sequence[Task], now: float) -> None:
        self.metrics.tasks_dispatched(ready, now)

    async def tasks_changed(
        self,
        tasks: Sequence[Task],
        released: Sequence[Task],
        kinds: Mapping[str, str | None],
        now: float,
    ) -> None:
        # A dispatched attempt told to wait longer (its capability is busy) was not sent again;
        # a rate-limited one is no failed attempt.
        counted = [t for t in tasks if kinds.get(t.id) not in ("waiting", "rate_limited")]
        self.metrics.tasks_changed(counted, now)
        for t in tasks:
            if kinds.get(t.id) == "rate_limited":
                self.metrics.rate_limited.labels(t.capability).inc()

    async def usage_recorded(self, used: Sequence[tuple[Task, Usage]], now: float) -> None:
        self.metrics.usage_recorded(used)

    async def workflow_finished(self, workflow: Workflow, now: float) -> None:
        self.metrics.workflow_finished(workflow.status.value)


_LIVE: weakref.WeakSet[Metrics] = weakref.WeakSet()


def backend_reconnected(backend: str) -> None:
    """Count a restored backend connection in every live :class:`Metrics` of this process.

    Backends call it from their reconnect hooks; they hold no Metrics of their own, and
    ``backend`` is the engine's name (``rabbitmq``, ``postgres``, ``redis``).
    """
    for metrics in list(_LIVE):
        metrics.reconnected(backend)


def _count_by_capability(tasks: Iterable[Task]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.capability] = counts.get(t.capability, 0) + 1
    return counts


class MetricsSampler:
    """A service that refreshes the sampled gauges every ``interval`` seconds until stopped."""

    def __init__(
        self,
        metrics: Metrics,
        clock: Clock,
        *,
        store: Store | None = None,
        registry: Registry | None = None,
        bus: Bus | None = None,
        blobs: BlobStore | None = None,
        snapshot_prefix: str = "snapshots/",
        interval: float = 5.0,
    ) -> None:
        self.metrics, self.clock, self.interval = metrics, clock, interval
        self.store, self.registry, self.bus = store, registry, bus
        self.blobs, self.snapshot_prefix = blobs, snapshot_prefix
        self._stopped = asyncio.Event()

    def __repr__(self) -> str:
        return f"<MetricsSampler interval={self.interval:g}s>"

    async def run(self) -> None:
        """Sample at once, then every ``interval`` seconds, until :meth:`stop`."""
        while not self._stopped.is_set():
            await self.metrics.sample(
                store=self.store,
                registry=self.registry,
                bus=self.bus,
                blobs=self.blobs,
                snapshot_prefix=self.snapshot_prefix,
            )
            sleeper = asyncio.ensure_future(self.clock.sleep(self.interval))
            stopper = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                stopper.cancel()

    async def stop(self, grace: float = 0.0) -> None:
        """Make :meth:`run` return."""
        self._stopped.set()


class MetricsServer:
    """``/metrics`` over HTTP on ``address:port`` in a background thread, as a service.

    ``run()`` starts serving and waits for :meth:`stop`; the port is bound when ``run()``
    starts (or by :meth:`start`). Raises ConfigError when the port cannot be bound.
    """

    def __init__(self, metrics: Metrics, port: int, address: str = "127.0.0.1") -> None:
        self.metrics, self.port, self.address = metrics, port, address
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = asyncio.Event()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.address}:{self.port}>"

    def start(self) -> None:
        """Bind and serve in a daemon thread (idempotent)."""
        if self._server is not None:
            return
        try:
            self._server, self._thread = start_http_server(
                self.port, self.address, registry=self.metrics.registry
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.address}:{self.port}: {exc.strerror or exc}; "
                "set metrics_port to a free port, or 0 to turn metrics off"
            ) from None
        self.port = self._server.server_port
        log.info("metrics_serving", address=self.address, port=self.port)

    def close(self) -> None:
        """Stop serving and free the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    async def run(self) -> None:
        """Serve until :meth:`stop`."""
        self.start()
        try:
            await self._stopped.wait()
        finally:
            with contextlib.suppress(Exception):
                self.close()

    async def stop(self, grace: float = 0.0) -> None:
        """Make :meth:`run` return (and close the port)."""
        self._stopped.set()
        self.close()
