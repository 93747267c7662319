"""The breaker service: the pure machine of :mod:`core.breaker`, shared through the Registry.

Every change is a compare-and-set on the breaker's record version, retried when another node
got there first, so all nodes and the control centre see one breaker. The scheduler leader
uses it to hold the capabilities whose breaker is open, to let one trial through a half-open
one, and to count each attempt's outcome; operators trip and reset through commands. Every
change is published on the events stream (topic ``breaker``); an agent breaker that opens
sends that agent a ``drain`` order, and ``resume`` when it half-opens or closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

import structlog

from agentdeck.core import breaker as machine
from agentdeck.core.ahead import EARLY, Ahead
from agentdeck.core.breaker import BreakerEvent, BreakerPolicy, BreakerState, BreakerStatus
from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError, ConflictError, NotFound
from agentdeck.core.messages import Control, Event, encode
from agentdeck.core.models import Task
from agentdeck.core.ports import Bus, Registry
from agentdeck.core.states import TaskStatus

log = structlog.get_logger(__name__)

CAS_ATTEMPTS = 20
"""Compare-and-set tries before giving up on one breaker change (contention is rare)."""

NOT_COUNTED = frozenset({"cancelled", "malformed", "permanent", "lost"})
"""Error kinds that say nothing about the health of an agent or capability: the operator
cancelled, the message was bad, the input was refused for good, or no report came at all
(``lost``: a host or an engine failing over loses every attempt in flight at once, healthy
agents' included; :data:`core.retry.LOST` has its own bound, ``max_lost``)."""

KINDS = ("capability", "agent")


def capability_breaker(capability: str) -> str:
    """The breaker name of a capability."""
    return f"capability:{capability}"


def agent_breaker(agent_id: str) -> str:
    """The breaker name of an agent."""
    return f"agent:{agent_id}"


def outcomes(tasks: Iterable[Task]) -> list[tuple[str, bool]]:
    """``(breaker name, ok)`` for each finished attempt among ``tasks`` (just moved by the
    scheduler): a success counts for its capability and agent, a failure too unless its kind is
    in :data:`NOT_COUNTED`; other moves (started, promoted) count for nothing."""
    result: list[tuple[str, bool]] = []
    for t in tasks:
        if t.status is TaskStatus.SUCCEEDED:
            ok = True
        elif t.status in (TaskStatus.RETRYING, TaskStatus.FAILED) and t.error is not None:
            if t.error.kind in NOT_COUNTED:
                continue
            ok = False
        else:
            continue
        result.append((capability_breaker(t.capability), ok))
        if t.agent_id:
            result.append((agent_breaker(t.agent_id), ok))
    return result


class Breakers:
    """Breakers per capability and per agent, kept in the Registry.

    ``policies`` maps a capability to its policy; ``default`` serves every other capability
    and every agent. Reads of the whole set are cached for ``refresh`` seconds of ``clock``
    time, so the dispatch loop does not ask the Registry every round; this node's own changes
    update the cache at once. Once three quarters of ``refresh`` have gone by, the next read
    (this node's counts written, then the set read) may start ahead (:meth:`read_ahead`,
    :mod:`core.ahead`), so a round finds the cache fresh instead of waiting for the Registry;
    the cache is never older than ``refresh`` (counted from when its read started), as before.
    """

    def __init__(
        self,
        registry: Registry,
        bus: Bus,
        clock: Clock,
        *,
        default: BreakerPolicy | None = None,
        policies: Mapping[str, BreakerPolicy] | None = None,
        refresh: float = 0.5,
    ) -> None:
        self.registry, self.bus, self.clock = registry, bus, clock
        self.default = default or BreakerPolicy()
        self.policies = dict(policies or {})
        self.refresh = refresh
        self._cache: dict[str, BreakerState] = {}
        self._dirty: set[str] = set()
        self._cached_at: float | None = None
        self._trials: dict[str, tuple[str, float]] = {}
        """The trials the last :meth:`admit` claimed: task id -> (breaker name, trial_at)."""
        self._seq = 0
        self._changed: dict[str, int] = {}
        """Breaker name -> the number (:attr:`_seq`) of this node's last change of it in the
        cache, for those changed since the last read began (see :meth:`_install`)."""
        self._ahead: Ahead[tuple[int, list[BreakerState]]] = Ahead("breakers")

    def __repr__(self) -> str:
        open_ = sum(1 for s in self._cache.values() if s.status is not BreakerStatus.CLOSED)
        return f"<Breakers known={len(self._cache)} not_closed={open_}>"

    def policy(self, name: str) -> BreakerPolicy:
        """The policy of breaker ``name``."""
        kind, _, target = name.partition(":")
        return self.policies.get(target, self.default) if kind == "capability" else self.default

    # ------------------------------------------------------------------------- reads

    async def get(self, name: str) -> BreakerState:
        """Breaker ``name`` as stored (a fresh closed one if it has no record yet)."""
        rec = await self.registry.get_breaker(name)
        return BreakerState.from_record(rec) if rec else BreakerState(name)

    async def all(self) -> list[BreakerState]:
        """Every breaker with a record, sorted by name (this node's counts written first)."""
        now = self.clock.now()
        seq, states = await self._read()
        self._install(now, seq, states)
        return sorted(states, key=lambda s: s.name)

    async def _read(self) -> tuple[int, list[BreakerState]]:
        """This node's counts written, then every record read; with the change number
        (:attr:`_seq`) as the read started."""
        seq = self._seq
        await self._flush()
        return seq, [BreakerState.from_record(r) for r in await self.registry.breakers()]

    def _install(self, read_at: float, seq: int, states: list[BreakerState]) -> None:
        """The cache as read at ``read_at``, but for the breakers this node changed since the
        read started (change number above ``seq``): those it keeps as changed, and writes
        (counts) or wrote (transitions) as ever."""
        fresh = {s.name: s for s in states}
        for name, changed in self._changed.items():
            if changed > seq and name in self._cache:
                fresh[name] = self._cache[name]
        self._changed = {n: c for n, c in self._changed.items() if c > seq}
        self._cache, self._cached_at = fresh, read_at

    def _put(self, name: str, state: BreakerState) -> None:
        """This node's own change of breaker ``name`` in the cache."""
        self._seq += 1
        self._cache[name], self._changed[name] = state, self._seq

    async def _states(self) -> dict[str, BreakerState]:
        now = self.clock.now()
        early = self._ahead.take()
        if early is not None:
            self._install_early(*early)
        if self._cached_at is None or now - self._cached_at >= self.refresh:
            early = await self._ahead.wait()  # the early read, if one runs, is the fresher
            if early is not None:
                self._install_early(*early)
            if self._cached_at is None or now - self._cached_at >= self.refresh:
                await self.all()
        return self._cache

    def read_ahead(self) -> None:
        """Start the next refresh (this node's counts written, then the set read) if
        :data:`~core.ahead.EARLY` of ``refresh`` has gone by since the last one (for a caller
        with nothing else to do now, as the scheduler between rounds): the round that comes
        once the period is over then takes it instead of waiting for the Registry."""
        now = self.clock.now()
        if self._cached_at is not None and now - self._cached_at >= self.refresh * EARLY:
            self._ahead.start(self._read, now)

    async def settle(self) -> None:
        """Wait for a read ahead in flight, if any (it may be writing this node's counts), and
        take it (a scheduler stepping down leaves no Registry call behind it)."""
        early = await self._ahead.wait()
        if early is not None:
            self._install_early(*early)

    def _install_early(self, read_at: float, read: tuple[int, list[BreakerState]]) -> None:
        if self._cached_at is None or read_at >= self._cached_at:
            self._install(read_at, *read)

    # --------------------------------------------------------------------- the loop

    async def hold(self) -> set[str]:
        """Capabilities the scheduler must not dispatch now: their breaker is open, or
        half-open with its trial out. Moves breakers whose cool-down is over to half-open."""
        states = await self._states()
        now = self.clock.now()
        for name, state in list(states.items()):
            policy = self.policy(name)
            if machine.tick(state, now, policy)[0] != state:
                states[name] = await self._change(name, _ticker(policy))
        return {
            s.target for s in states.values() if s.kind == "capability" and not machine.allows(s)
        }

    async def admit(self, ready: Sequence[Task]) -> list[Task]:
        """The ready tasks that may be dispatched: all of those whose capability breaker is
        closed, and one trial per half-open one (claimed in the Registry first, so two nodes
        cannot both send one)."""
        states = await self._states()
        admitted: list[Task] = []
        trials: set[str] = set()
        self._trials = {}
        for t in ready:
            name = capability_breaker(t.capability)
            state = states.get(name)
            if state is None or state.status is BreakerStatus.CLOSED:
                admitted.append(t)
                continue
            if t.capability in trials or not machine.allows(state):
                continue
            claimed = await self._claim_trial(name)
            states[name] = claimed
            if claimed.trial_in_flight and claimed.status is BreakerStatus.HALF_OPEN:
                trials.add(t.capability)
                admitted.append(t)
                if claimed.trial_at is not None:  # always, once begin_trial took it
                    self._trials[t.id] = (name, claimed.trial_at)
                log.info("breaker_trial", breaker=name, task_id=t.id)
        return admitted

    async def give_back(self, tasks: Iterable[Task]) -> None:
        """The tasks the last :meth:`admit` let through were not sent (their publish failed):
        free the trials among them, so the next dispatch may send one at once rather than wait
        for ``trial_timeout``. Best effort: should the Registry fail, the timeout still frees
        them."""
        for t in tasks:
            claim = self._trials.pop(t.id, None)
            if claim is None:
                continue
            name, trial_at = claim

            def step(state: BreakerState, now: float, at: float = trial_at) -> machine.Result:
                return machine.give_back_trial(state, at), []

            try:
                state = await self._change(name, step)
            except AgentdeckError as exc:
                log.warning("breaker_trial_give_back_failed", breaker=name, error=str(exc))
                continue
            if state.status is BreakerStatus.HALF_OPEN and not state.trial_in_flight:
                log.info("breaker_trial_given_back", breaker=name, task_id=t.id)

    async def record(self, tasks: Iterable[Task]) -> list[BreakerEvent]:
        """Count the outcomes of ``tasks`` (just moved by the scheduler).

        A change of state (opened, closed) is written to the Registry at once; mere counts
        are kept here and written at most every ``refresh`` seconds, so the scheduler's hot
        path does not pay a compare-and-set per breaker per round.
        """
        by_name: dict[str, list[bool]] = {}
        for name, ok in outcomes(tasks):
            by_name.setdefault(name, []).append(ok)
        if not by_name:
            return []
        states = await self._states()
        now = self.clock.now()
        events: list[BreakerEvent] = []
        for name, oks in by_name.items():
            policy = self.policy(name)
            before = states.get(name) or BreakerState(name)
            after, found = _recorder(oks, policy)(before, now)
            if found:
                await self._change(name, _recorded(before, after, found, oks, policy), events)
            elif after != before:
                self._put(name, after)
                self._dirty.add(name)
        return events

    # ------------------------------------------------------------------- operators

    async def trip(self, name: str, reason: str = "tripped by an operator") -> BreakerState:
        """Open breaker ``name`` by hand (it stays open until reset)."""
        name = breaker_name(name)
        return await self._change(name, lambda s, n: machine.trip(s, n, reason))

    async def reset(self, name: str, reason: str = "reset by an operator") -> BreakerState:
        """Close breaker ``name`` by hand. Raises NotFound if it has no record."""
        name = breaker_name(name)
        if await self.registry.get_breaker(name) is None:
            raise NotFound(f"breaker {name!r} has no state (it was never opened or used)")
        return await self._change(name, lambda s, n: machine.reset(s, n, reason))

    # --------------------------------------------------------------------- plumbing

    async def _flush(self) -> None:
        """Write the counts recorded since the last flush (the stored state wins if it has
        moved on meanwhile: an operator's trip, another node's transition). It may run beside
        the scheduler's calls (an early read, :mod:`core.ahead`): a breaker they changed
        meanwhile keeps their state in the cache, and is written by the next flush."""
        dirty, self._dirty = self._dirty, set()
        for name in sorted(dirty):
            local = self._cache.get(name)
            if local is not None:
                written = await self._change(name, _counts_of(local), cache=False)
                if self._cache.get(name) is local:
                    self._cache[name] = written

    async def _claim_trial(self, name: str) -> BreakerState:
        def claim(state: BreakerState, now: float) -> machine.Result:
            return machine.begin_trial(state, now), []

        return await self._change(name, claim)

    async def _change(
        self,
        name: str,
        step: Callable[[BreakerState, float], machine.Result],
        events_out: list[BreakerEvent] | None = None,
        *,
        cache: bool = True,
    ) -> BreakerState:
        """Apply ``step`` to the stored state under compare-and-set, retrying on conflict;
        publish its events and send agents their orders. ``cache``: put the result in the
        cache as this node's change (the flush puts its own, see :meth:`_flush`)."""
        for _ in range(CAS_ATTEMPTS):
            rec = await self.registry.get_breaker(name)
            state = BreakerState.from_record(rec) if rec else BreakerState(name)
            now = self.clock.now()
            new, events = step(state, now)
            if new == state:
                if cache:
                    self._put(name, state)
                return state
            version = rec.version if rec else None
            if await self.registry.put_breaker(new.to_record((version or 0) + 1), version):
                if cache:
                    self._put(name, new)
                for event in events:
                    log.info("breaker_changed", breaker=name, kind=event.kind, reason=event.reason)
                await self._announce(new, events)
                if events_out is not None:
                    events_out += events
                return new
        raise ConflictError(f"breaker {name!r} kept changing under us ({CAS_ATTEMPTS} tries)")

    async def _announce(self, state: BreakerState, events: Sequence[BreakerEvent]) -> None:
        for event in events:
            body = Event(
                topic="breaker",
                at=event.at,
                data={
                    "name": state.name,
                    "kind": event.kind,
                    "status": state.status.value,
                    "reason": event.reason,
                },
            )
            try:
                await self.bus.publish_event(encode(body))
                if state.kind == "agent":
                    order = Control(
                        action="drain" if state.status is BreakerStatus.OPEN else "resume",
                        target=state.target,
                        at=event.at,
                    )
                    await self.bus.publish_control(encode(order))
            except AgentdeckError as exc:  # watchers are best effort; the Registry has it
                log.warning("breaker_publish_failed", breaker=state.name, error=str(exc))


def _ticker(policy: BreakerPolicy) -> Callable[[BreakerState, float], machine.Result]:
    def step(state: BreakerState, now: float) -> machine.Result:
        return machine.tick(state, now, policy)

    return step


def _recorder(
    oks: Sequence[bool], policy: BreakerPolicy
) -> Callable[[BreakerState, float], machine.Result]:
    """``oks`` counted one by one by :func:`core.breaker.record`, except that a run of
    successes while closed is counted at once (:func:`_successes`): a round's results come
    in hundreds per breaker, almost all of them successes (issue 16)."""

    def step(state: BreakerState, now: float) -> machine.Result:
        events: list[BreakerEvent] = []
        i, n = 0, len(oks)
        while i < n:
            if oks[i] and state.status is BreakerStatus.CLOSED:
                run = 1
                while i + run < n and oks[i + run]:
                    run += 1
                state = _successes(state, run, now, policy)
                i += run
                continue
            state, found = machine.record(state, oks[i], now, policy)
            events += found
            i += 1
        return state, events

    return step


def _successes(state: BreakerState, count: int, now: float, policy: BreakerPolicy) -> BreakerState:
    """``count`` successes of a closed breaker at ``now``, as ``count`` calls of
    :func:`core.breaker.record` would leave it: a success never opens a closed breaker (no
    event), and each lands in the window's bucket holding ``now``, so the first is recorded
    and the others join its bucket. (A test checks this against the calls one by one.)"""
    state, _ = machine.record(state, True, now, policy)
    if count > 1:
        start, good, bad = state.window[-1]
        state = replace(state, window=(*state.window[:-1], (start, good + count - 1, bad)))
    return state


def _same_phase(a: BreakerState, b: BreakerState) -> bool:
    return (a.status, a.manual, a.opened_at) == (b.status, b.manual, b.opened_at)


def _recorded(
    before: BreakerState,
    after: BreakerState,
    events: list[BreakerEvent],
    oks: Sequence[bool],
    policy: BreakerPolicy,
) -> Callable[[BreakerState, float], machine.Result]:
    """Write ``after`` if the stored state is still in ``before``'s phase, else count ``oks``
    again on top of what is stored."""

    def step(stored: BreakerState, now: float) -> machine.Result:
        if _same_phase(stored, before):
            return after, events
        return _recorder(oks, policy)(stored, now)

    return step


def _counts_of(local: BreakerState) -> Callable[[BreakerState, float], machine.Result]:
    def step(stored: BreakerState, now: float) -> machine.Result:
        return (local if _same_phase(stored, local) else stored), []

    return step


def breaker_name(text: str) -> str:
    """The full breaker name ``text`` means: ``capability:<name>`` or ``agent:<id>`` as given,
    a bare name meaning a capability. Raises AgentdeckError for anything else."""
    kind, sep, target = text.partition(":")
    if not sep:
        kind, target = "capability", text
    if kind not in KINDS or not target or any(c.isspace() for c in target):
        raise AgentdeckError(
            f"breaker name {text!r} is not capability:<name>, agent:<id> or a capability name"
        )
    return f"{kind}:{target}"
