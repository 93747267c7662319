"""TUI benchmark: what one batch update of the control centre costs with a big, busy fleet.

Builds 10,000 tasks (``--workflows`` x ``--tasks``) in a real embedded SQLite store and 500
agents in the memory registry, then runs the real app headless (``App.run_test``) and, on each
screen measured (``--screens``), drives ``--rate`` events per second for ``--seconds``. Every
event is a real task transition applied to the store (in store batches of ``rate / 50``, as the
scheduler batches) and sent through the app's events stream; ``rate / 40`` agents heartbeat
per interval. The store is real so what the TUI asks of it is real too; it is SQLite rather
than PostgreSQL so the run needs no service and the figures are the TUI's, not the network's.

The run goes one ``--interval`` (the app's refresh interval, 0.25 s) at a time: that
interval's load, the app taking in its events, then the batch update alone on the loop, doing
what the app's timer does (``refresh_now()`` on the visible screen) and then what Textual does
between frames, each timed on its own:

- **update**: ``refresh_now()``: the store queries and the widget changes (wall and CPU time);
- **+paint**: update, plus the table's idle work and the compositor redrawing what changed
  (every changed line of every widget is rendered and cut into the screen's update);
- **+write**: +paint, plus turning the screen update into the terminal's escape sequences,
  which the app does before writing them (a headless app skips that step: the bench does it,
  after +paint is timed, and writes the result nowhere);
- **q/s**: store calls the TUI made per second (a counting proxy around the store);
- **gc**: CPU time the garbage collector took within +paint, and how many collections of the
  middle and oldest generations (``gen1``/``gen2``) fell in the timed batches (the young
  ones, a few a batch, are in the time but not counted): what a batch's tail owes to it.

CPU is ``time.process_time()`` (every thread: the store's reader thread counts, since the TUI
caused it). The load is deterministic (a fixed stride walk over the tasks, a fixed agent
order); the run is bounded (``--seconds`` x screens < 50 s, plus about 2 s of setup).

    .venv/bin/python scripts/bench_tui.py                       # 10,000 tasks, 500 agents, 200 ev/s
    .venv/bin/python scripts/bench_tui.py --seconds 5 --screens tasks   # a quick look
    .venv/bin/python scripts/bench_tui.py --profile --screens agents    # where the time goes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentdeck.backends.memory import MemoryRegistry  # noqa: E402 - after the path is set
from agentdeck.backends.sqlite.store import SqliteStore  # noqa: E402
from agentdeck.core.client import Client  # noqa: E402
from agentdeck.core.clock import SystemClock  # noqa: E402
from agentdeck.core.events import task_event  # noqa: E402
from agentdeck.core.messages import encode  # noqa: E402
from agentdeck.core.models import AgentRecord, AgentState, Change  # noqa: E402
from agentdeck.core.spec import TaskSpec, WorkflowSpec, build  # noqa: E402
from agentdeck.core.states import TaskStatus as T  # noqa: E402
from agentdeck.tui.app import AgentdeckApp  # noqa: E402
from agentdeck.tui.screens.base import Sources  # noqa: E402
from agentdeck.tui.widgets.live_table import LiveTable  # noqa: E402

#: The walk every touched task takes, one event per step.
WALK = (T.DISPATCHED, T.RUNNING, T.SUCCEEDED)
CAPABILITIES = ("echo", "http", "chaos", "sleep", "etl")


def size(text: str) -> tuple[int, int]:
    """``COLUMNSxROWS`` as a pair (argparse checks nothing else)."""
    try:
        cols, rows = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be COLUMNSxROWS, like 80x24; got {text!r}") from None
    if cols < 80 or rows < 24:
        raise SystemExit(f"--size must be at least 80x24; got {text!r}")
    return cols, rows


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workflows", type=int, default=50, help="workflows")
    p.add_argument("--tasks", type=int, default=200, help="tasks per workflow")
    p.add_argument("--agents", type=int, default=500, help="agents in the registry")
    p.add_argument("--rate", type=int, default=200, help="events per second")
    p.add_argument("--seconds", type=float, default=10.0, help="driven time per screen")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between batch updates")
    p.add_argument(
        "--screens", default="overview,tasks,agents,workflows", help="screens to measure"
    )
    p.add_argument(
        "--size", default="160x48", help="terminal COLUMNSxROWS (80x24: the smallest supported)"
    )
    p.add_argument("--sort", type=int, help="sort the tables by this column first")
    p.add_argument("--profile", action="store_true", help="profile the batch updates (slower)")
    p.add_argument("--profile-sort", default="cumulative", help="pstats order: cumulative, tottime")
    p.add_argument("--profile-out", help="also save the profile to this file (for pstats)")
    p.add_argument("--samples", action="store_true", help="print every batch's +paint CPU time")
    args = p.parse_args()
    if args.seconds * len(args.screens.split(",")) > 50:
        p.error("--seconds x screens must stay under 50 s (the run is bounded)")
    return args


class CountingStore:
    """The store, counting the calls made through it (what the TUI costs the store)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


async def build_state(
    path: Path, clock: SystemClock, args: argparse.Namespace
) -> tuple[SqliteStore, MemoryRegistry, list[str]]:
    """The store with every task ready and the registry with every agent up."""
    store = SqliteStore(path, clock=clock)
    await store.migrate()
    registry = MemoryRegistry(clock=clock)
    await registry.start()
    ids: list[str] = []
    for w in range(args.workflows):
        spec = WorkflowSpec(
            name=f"bench-{w}",
            tasks=tuple(
                TaskSpec(key=f"t{i:04d}", capability=CAPABILITIES[i % len(CAPABILITIES)])
                for i in range(args.tasks)
            ),
        )
        workflow, tasks = build(spec, workflow_id=f"wf{w:04d}", now=clock.now() + w)
        await store.create_workflow(workflow, tasks)
        ids += [t.id for t in tasks]
    now = clock.now()
    for a in range(args.agents):
        cap = CAPABILITIES[a % len(CAPABILITIES)]
        await registry.register(
            AgentRecord(
                f"agent-{a:04d}", f"{cap}@node-{a % 7}", (cap,), 8, AgentState.UP, now, now
            ),
            ttl=3600,
        )
    return store, registry, ids


class Driver:
    """Deterministic load: task transitions into the store and the events stream, heartbeats."""

    def __init__(
        self, store: SqliteStore, registry: MemoryRegistry, ids: list[str], rate: int
    ) -> None:
        self.store, self.registry, self.ids, self.rate = store, registry, ids, rate
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.step: dict[str, int] = {}
        self.n = 0
        self.agents = 0
        self.sent = 0

    def _next(self) -> str:
        # A stride walk over every task: changes land all over the list, the top rows included.
        task_id = self.ids[(self.n * 7919) % len(self.ids)]
        self.n += 1
        return task_id

    async def events(self) -> AsyncIterator[bytes]:
        """The app's events stream."""
        while True:
            yield await self.queue.get()

    async def burst(self, events: int) -> None:
        """Apply ``events`` task transitions (in store batches of ``rate / 50``, as the
        scheduler batches) and send their events; heartbeat ``rate / 40`` agents."""
        per_batch = max(1, self.rate // 50)
        for first in range(0, events, per_batch):
            changes = []
            for _ in range(min(per_batch, events - first)):
                task_id = self._next()
                step = self.step.get(task_id, 0)
                if step >= len(WALK):
                    continue
                prev = T.READY if step == 0 else WALK[step - 1]
                values: dict[str, Any] = {"attempt": 1} if step == 0 else {}
                if WALK[step] == T.RUNNING:
                    values["agent_id"] = f"agent-{self.n % 500:04d}"
                changes.append(Change(task_id, WALK[step], frozenset({prev}), values=values))
                self.step[task_id] = step + 1
            now = time.time()
            applied = await self.store.apply(changes, now)
            for task in applied.tasks:
                self.queue.put_nowait(encode(task_event(task, now)))
                self.sent += 1
        await self._heartbeats()

    async def _heartbeats(self) -> None:
        agents = await self.registry.agents()
        for _ in range(max(1, self.rate // 40)):
            a = agents[self.agents % len(agents)]
            self.agents += 1
            await self.registry.heartbeat(
                a.id,
                3600,
                in_flight=self.agents % 9,
                state=a.state,
                succeeded=a.succeeded + 1,
                failed=a.failed,
            )


class Terminal:
    """What a terminal app does with each screen update that a headless one does not: turn it
    into escape sequences (``render_segments``), here written nowhere."""

    def __init__(self, app: AgentdeckApp) -> None:
        self.app = app
        self.pending: list[Any] = []
        display = app._display

        def keep(screen: Any, renderable: Any) -> None:
            if renderable is not None and hasattr(renderable, "render_segments"):
                self.pending.append(renderable)
            display(screen, renderable)

        app._display = keep  # type: ignore[method-assign]

    def write(self) -> int:
        """Encode the updates made since the last call; how many characters they came to."""
        written = sum(len(u.render_segments(self.app.console)) for u in self.pending)
        self.pending.clear()
        return written


class GcTimer:
    """The garbage collector's CPU time and collections per generation while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.seconds = 0.0
        self.collections: Counter[int] = Counter()
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start
            self.collections[info["generation"]] += 1


GC = GcTimer()


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def measure(
    app: AgentdeckApp,
    pilot: Any,
    terminal: Terminal,
    driver: Driver,
    counting: CountingStore,
    screen: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Drive the load on ``screen`` and time every batch update."""
    await app.action_goto(screen)
    await pilot.pause()
    if args.sort is not None and (sorting := app.screen.query(LiveTable)):
        sorting.first().sort_by(args.sort)
        await app.refresh_now()
        await pilot.pause()
    samples: dict[str, list[float]] = {
        k: [] for k in ("wall", "cpu", "paint_wall", "paint_cpu", "write_cpu", "gc")
    }
    GC.collections.clear()
    calls_before = sum(counting.calls.values())
    table = app.screen.table() if hasattr(app.screen, "table") else None
    cells_before = getattr(table, "cell_updates", 0)
    profiler = cProfile.Profile() if args.profile else None
    start = time.perf_counter()
    n = 0
    # One interval at a time: the load of that interval, the app taking in its events, then
    # the batch update alone on the loop, so each is timed without the others.
    while time.perf_counter() - start < args.seconds:
        n += 1
        await driver.burst(round(args.rate * args.interval))
        while not driver.queue.empty():  # the app takes in the interval's events
            await asyncio.sleep(0)
        await asyncio.sleep(max(0.0, start + n * args.interval - time.perf_counter()))
        terminal.pending.clear()  # (updates made outside the batch are not its own)
        if profiler is not None:
            profiler.enable()
        GC.seconds, GC.on = 0.0, True
        w0, c0 = time.perf_counter(), time.process_time()
        await app.refresh_now()
        w1, c1 = time.perf_counter(), time.process_time()
        await pilot._wait_for_screen()  # the table's idle work (measuring new rows)
        app.screen._on_timer_update()  # the compositor redraws what changed
        w2, c2 = time.perf_counter(), time.process_time()
        GC.on = False
        terminal.write()  # what the terminal driver does with the update
        c3 = time.process_time()
        if profiler is not None:
            profiler.disable()
        samples["wall"].append((w1 - w0) * 1000)
        samples["cpu"].append((c1 - c0) * 1000)
        samples["paint_wall"].append((w2 - w0) * 1000)
        samples["paint_cpu"].append((c2 - c0) * 1000)
        samples["write_cpu"].append((c3 - c0) * 1000)
        samples["gc"].append(GC.seconds * 1000)
    if profiler is not None:
        if args.profile_out:
            profiler.dump_stats(args.profile_out)
        pstats.Stats(profiler).sort_stats(args.profile_sort).print_stats(30)
    table = app.screen.table() if hasattr(app.screen, "table") else None
    return {
        "screen": screen,
        "batches": len(samples["wall"]),
        "rows": getattr(table, "row_count", 0),
        "total": getattr(table, "total", 0),
        "cells": getattr(table, "cell_updates", 0) - cells_before,
        "qps": (sum(counting.calls.values()) - calls_before) / (time.perf_counter() - start),
        "events": driver.sent,
        "gen1": GC.collections[1],
        "gen2": GC.collections[2],
        **samples,
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace, setup: float) -> None:
    print(
        f"\n{args.workflows * args.tasks:,} tasks, {args.agents} agents, {args.rate} events/s, "
        f"{args.seconds:g} s per screen, a batch every {args.interval:g} s (setup {setup:.1f} s)\n"
    )
    head = (
        f"{'screen':<8}{'batches':>8}{'rows':>7}{'of':>7}{'cells/b':>8}{'q/s':>6}  "
        f"{'update wall p50/p95/max':>24}  {'update cpu p50/p95/max':>23}  "
        f"{'+paint wall p50/p95/max':>24}  {'+paint cpu p50/p95/max':>23}  "
        f"{'+write cpu p50/p95/max':>23}  {'gc p50/p95/max':>20} {'gen1':>4} {'gen2':>4}"
    )
    print(head)
    print("-" * len(head))

    def trio(xs: list[float]) -> str:
        return f"{statistics.median(xs):6.1f}/{pct(xs, 95):6.1f}/{max(xs):6.1f}"

    for r in results:
        if args.samples:
            print(r["screen"], " ".join(f"{x:.0f}" for x in r["paint_cpu"]))
        print(
            f"{r['screen']:<8}{r['batches']:>8}{r['rows']:>7}{r['total']:>7}"
            f"{r['cells'] / max(1, r['batches']):>8.0f}{r['qps']:>6.1f}  "
            f"{trio(r['wall']):>24}  {trio(r['cpu']):>23}  "
            f"{trio(r['paint_wall']):>24}  {trio(r['paint_cpu']):>23}  "
            f"{trio(r['write_cpu']):>23}  {trio(r['gc']):>20} {r['gen1']:>4} {r['gen2']:>4}"
        )
    print(
        "\n(ms; rows: rows the table holds, of: rows the list has in total; cells/b: cells "
        "updated in place per batch; gc: the collector's CPU time within +paint, gen1/gen2: "
        "its collections of those generations in the timed batches)"
    )


async def main() -> None:
    args = parse_args()
    clock = SystemClock()
    with tempfile.TemporaryDirectory(prefix="agentdeck-bench-tui-") as tmp:
        t0 = time.perf_counter()
        store, registry, ids = await build_state(Path(tmp) / "bench.db", clock, args)
        setup = time.perf_counter() - t0
        counting = CountingStore(store)
        driver = Driver(store, registry, ids, args.rate)
        client = Client(counting, clock, actor="bench")  # type: ignore[arg-type]
        sources = Sources(client, registry, clock, driver.events, "bench")

        @contextlib.asynccontextmanager
        async def connect() -> AsyncIterator[Sources]:
            yield sources

        app = AgentdeckApp(connect, refresh_interval=None, freeze_heap=True)  # as the program
        results = []
        try:
            async with app.run_test(size=size(args.size)) as pilot:
                await asyncio.wait_for(app.connected.wait(), 10)
                terminal = Terminal(app)
                for screen in args.screens.split(","):
                    results.append(
                        await measure(app, pilot, terminal, driver, counting, screen, args)
                    )
        finally:
            await registry.close()
            await store.close()
        report(results, args, setup)


if __name__ == "__main__":
    asyncio.run(main())
