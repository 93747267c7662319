"""What scripts/bench_peers.py measured, summed up: statistics, the Markdown table and the
plot. Pure functions over :class:`Turn` records, except :func:`plot`, which writes a PNG
(matplotlib, imported there: the ``bench`` extra).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEMS = ("agentdeck", "dramatiq", "celery")
"""Every system the benchmark knows, in the order tables and plots show them."""


@dataclass
class Turn:
    """One system's turn in one repetition: its workloads, run back to back, and the
    machine's load (``/proc/loadavg``: 1, 5 and 15 minutes) before and after."""

    system: str
    rep: int
    started: str
    """UTC, ISO 8601, to the second."""
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] | None = None
    latency: list[float] = field(default_factory=list)
    """Lone tasks, one after the other: per task, submit -> done (seconds)."""
    chain_steps: int = 0
    chain_seconds: float | None = None
    """A chain of ``chain_steps`` tasks: submit -> the last one done."""
    saturated_tasks: int = 0
    saturated_seconds: float | None = None
    """``saturated_tasks`` tasks on a full queue: the first one done -> the last one done."""
    wide_tasks: int = 0
    wide_seconds: float | None = None
    """agentdeck only: one workflow of ``wide_tasks`` independent tasks, submit -> finished."""
    layers: tuple[int, int] | None = None
    layers_seconds: float | None = None
    """agentdeck only: one workflow of ``layers`` (layers, tasks a layer), each task needing
    two of the layer before; submit -> finished."""
    stored_tasks: int = 0
    rss_mb: tuple[float, float] | None = None
    """agentdeck only: the daemon's resident memory (``VmRSS``, peak ``VmHWM``, MB) once the
    store holds ``stored_tasks`` tasks, all done."""
    errors: list[str] = field(default_factory=list)
    """What failed or timed out (that workload's figures stay empty)."""
    disturbances: list[str] = field(default_factory=list)
    """What happened to the machine during the turn (a broker restart): its figures include it."""


def turn_from_dict(raw: dict[str, Any]) -> Turn:
    """A :class:`Turn` from its JSON form (``dataclasses.asdict``: tuples became lists)."""
    fields = dict(raw)
    for name in ("load_before", "load_after", "layers", "rss_mb"):
        if fields.get(name) is not None:
            fields[name] = tuple(fields[name])
    return Turn(**fields)


@dataclass(frozen=True)
class Figures:
    """A turn's figures: tasks/s, lone-task latency percentiles (ms), chain ms per step; None
    where the workload did not run or failed."""

    tasks_per_s: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    chain_ms: float | None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q < 100) by linear interpolation between the closest
    ranks (numpy's default, statistics' "inclusive" method). ValueError if ``values`` is
    empty or ``q`` is out of range."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q < 100:
        raise ValueError(f"percentile q must be between 0 and 100 (exclusive), got {q}")
    if len(values) == 1:
        return float(values[0])
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def throughput(tasks: int, seconds: float) -> float:
    """Tasks per second between the first and the last task done: ``tasks - 1`` intervals in
    ``seconds``. ValueError unless there are at least 2 tasks and ``seconds`` > 0."""
    if tasks < 2 or seconds <= 0:
        raise ValueError(
            f"throughput needs 2 tasks or more over a time > 0, got {tasks} in {seconds}"
        )
    return (tasks - 1) / seconds


def figures(turn: Turn) -> Figures:
    ms = [v * 1000 for v in turn.latency]
    rate = None
    if (
        turn.saturated_seconds is not None
        and turn.saturated_tasks >= 2
        and turn.saturated_seconds > 0
    ):
        rate = throughput(turn.saturated_tasks, turn.saturated_seconds)
    chain = None
    if turn.chain_seconds is not None and turn.chain_steps:
        chain = turn.chain_seconds * 1000 / turn.chain_steps
    return Figures(
        tasks_per_s=rate,
        p50=percentile(ms, 50) if ms else None,
        p95=percentile(ms, 95) if ms else None,
        p99=percentile(ms, 99) if ms else None,
        chain_ms=chain,
    )


def median_figures(turns: Sequence[Turn]) -> Figures:
    """Each figure's median over ``turns`` (the repetitions of one system), over the turns
    that have it."""

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    each = [figures(t) for t in turns]
    return Figures(
        tasks_per_s=med([f.tasks_per_s for f in each]),
        p50=med([f.p50 for f in each]),
        p95=med([f.p95 for f in each]),
        p99=med([f.p99 for f in each]),
        chain_ms=med([f.chain_ms for f in each]),
    )


@dataclass(frozen=True)
class Target:
    """One of issue 16's targets for agentdeck: ``figure`` (a name :func:`target_values`
    gives) ``below`` (or, if False, at least) ``limit``, judged only at the issue's size of
    the workload: ``size`` tasks or more, or exactly that (layers, tasks a layer) shape. A
    smaller run's figure is shown, not judged."""

    name: str
    figure: str
    limit: float
    unit: str
    size: int | tuple[int, int]
    below: bool = True


TARGETS = (
    Target("saturated throughput, x Dramatiq 2x8", "ratio", 1.0, "x", below=False, size=20_000),
    Target("lone task p99", "p99", 5.0, "ms", size=200),
    Target("chain step", "chain_ms", 3.0, "ms", size=1000),
    Target("10,000 independent tasks, submit -> finished", "wide", 2.5, "s", size=10_000),
    Target("100 layers x 100 tasks, submit -> finished", "layers", 4.0, "s", size=(100, 100)),
    Target("daemon peak RSS, 100,000 tasks stored", "rss", 250.0, "MB", size=100_000),
)
"""Issue 16's targets, in its order (on a 2-core machine, ratios from one run)."""


def target_values(turns: Sequence[Turn]) -> dict[str, tuple[float, object] | None]:
    """agentdeck's figure for each :data:`TARGETS` entry (median over its turns) and the size
    it was taken at; None where it did not run. The ratio needs Dramatiq's turns too."""

    def med(pairs: list[tuple[float, object]]) -> tuple[float, object] | None:
        if not pairs:
            return None
        sizes = {size for _, size in pairs}
        size = sizes.pop() if len(sizes) == 1 else None
        return statistics.median(v for v, _ in pairs), size

    ours = [t for t in turns if t.system == "agentdeck"]
    theirs = [t for t in turns if t.system == "dramatiq"]
    mine, base = median_figures(ours), median_figures(theirs)
    ratio = None
    if mine.tasks_per_s is not None and base.tasks_per_s:
        saturated = min(t.saturated_tasks for t in ours if t.saturated_seconds is not None)
        ratio = (mine.tasks_per_s / base.tasks_per_s, saturated)
    lone = min((len(t.latency) for t in ours if t.latency), default=0)
    return {
        "ratio": ratio,
        "p99": None if mine.p99 is None else (mine.p99, lone),
        "chain_ms": None if mine.chain_ms is None else (mine.chain_ms, ours[0].chain_steps),
        "wide": med([(t.wide_seconds, t.wide_tasks) for t in ours if t.wide_seconds is not None]),
        "layers": med([(t.layers_seconds, t.layers) for t in ours if t.layers_seconds is not None]),
        "rss": med([(t.rss_mb[1], t.stored_tasks) for t in ours if t.rss_mb is not None]),
    }


def verdict(target: Target, value: tuple[float, object] | None) -> str:
    """``met``, ``not met``, ``not run``, or ``not judged`` (taken at another size)."""
    if value is None:
        return "not run"
    figure, size = value
    if isinstance(target.size, tuple):
        covered = size == target.size
    else:
        covered = isinstance(size, int) and size >= target.size
    if not covered:
        return "not judged (another size)"
    met = figure < target.limit if target.below else figure >= target.limit
    return "met" if met else "not met"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _load(load: tuple[float, float, float] | None) -> str:
    return "—" if load is None else " / ".join(f"{v:.2f}" for v in load)


def by_system(turns: Sequence[Turn]) -> dict[str, list[Turn]]:
    """The turns of each system that ran, in :data:`SYSTEMS` order."""
    return {
        s: [t for t in turns if t.system == s] for s in SYSTEMS if any(t.system == s for t in turns)
    }


def markdown(turns: Sequence[Turn], meta: dict[str, str], plot_name: str | None = None) -> str:
    """The results page: ``meta`` (what ran, where, which versions) as a list, every turn as
    a row with the load before and after it, then each system's medians, with its
    throughput as a multiple of Dramatiq's when Dramatiq ran."""
    out = ["# agentdeck, Dramatiq and Celery side by side", ""]
    out += [
        'How each figure is taken: docs/performance.md, "Side by side with Dramatiq and '
        'Celery". Not like for like: agentdeck writes every transition and result to '
        "PostgreSQL (and uses quorum queues); the peers keep no results. The peers' saturated "
        "queue is filled before their workers start.",
        "",
    ]
    out += [f"- **{key}**: {value}" for key, value in meta.items()]
    out += [
        "",
        "## Every turn, in the order they ran",
        "",
        "Load: `/proc/loadavg` (1 / 5 / 15 min) before and after the turn. Latency: a lone task,"
        " submit -> done, ms. Chain: ms per step.",
        "",
        "| rep | system | started (UTC) | load before | load after | tasks/s "
        "| p50 | p95 | p99 | chain ms/step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in turns:
        f = figures(t)
        out.append(
            f"| {t.rep} | {t.system} | {t.started} | {_load(t.load_before)} "
            f"| {_load(t.load_after)} | {_num(f.tasks_per_s, 0)} | {_num(f.p50)} "
            f"| {_num(f.p95)} | {_num(f.p99)} | {_num(f.chain_ms)} |"
        )
    groups = by_system(turns)
    medians = {s: median_figures(ts) for s, ts in groups.items()}
    base = medians.get("dramatiq")
    out += [
        "",
        "## Each system, the median of its turns",
        "",
        "| system | turns | tasks/s | x Dramatiq | p50 | p95 | p99 | chain ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system, m in medians.items():
        ratio = None
        if base is not None and base.tasks_per_s and m.tasks_per_s is not None:
            ratio = m.tasks_per_s / base.tasks_per_s
        out.append(
            f"| {system} | {len(groups[system])} | {_num(m.tasks_per_s, 0)} | {_num(ratio)} "
            f"| {_num(m.p50)} | {_num(m.p95)} | {_num(m.p99)} | {_num(m.chain_ms)} |"
        )
    ours = [t for t in turns if t.system == "agentdeck"]
    if any(t.wide_seconds or t.layers_seconds or t.rss_mb for t in ours):
        out += [
            "",
            "## agentdeck's workflows and memory, every turn",
            "",
            "| rep | wide: tasks | s | layers | s | tasks stored | daemon RSS MB | peak MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in ours:
            shape = "—" if t.layers is None else f"{t.layers[0]} x {t.layers[1]}"
            rss, peak = t.rss_mb if t.rss_mb is not None else (None, None)
            out.append(
                f"| {t.rep} | {t.wide_tasks:,} | {_num(t.wide_seconds, 3)} | {shape} "
                f"| {_num(t.layers_seconds, 3)} | {t.stored_tasks:,} | {_num(rss, 0)} "
                f"| {_num(peak, 0)} |"
            )
    values = target_values(turns)
    out += [
        "",
        "## Issue 16's targets (agentdeck, the median of its turns)",
        "",
        "| target | limit | this run | verdict |",
        "|---|---|---|---|",
    ]
    for target in TARGETS:
        value = values[target.figure]
        limit = f"{'<' if target.below else '>='} {target.limit:g} {target.unit}"
        # A ratio to three places: 0.996 shown as 1.00 would read as met.
        digits = 3 if target.unit == "x" else 2
        shown = "—" if value is None else f"{value[0]:,.{digits}f} {target.unit}"
        out.append(f"| {target.name} | {limit} | {shown} | {verdict(target, value)} |")
    errors = [f"- rep {t.rep}, {t.system}: {e}" for t in turns for e in t.errors]
    if errors:
        out += ["", "## What failed", "", *errors]
    disturbed = [f"- rep {t.rep}, {t.system}: {d}" for t in turns for d in t.disturbances]
    if disturbed:
        out += ["", "## Disturbed turns (their figures include this)", "", *disturbed]
    if plot_name:
        out += ["", f"![throughput, latency and chain figures]({plot_name})"]
    return "\n".join(out) + "\n"


def plot_title(turns: Sequence[Turn], meta: dict[str, str]) -> str:
    """The plot's title: machine, sizes, and the range of the 1-minute load over the run."""
    loads = [t.load_before[0] for t in turns] + [t.load_after[0] for t in turns if t.load_after]
    span = f"load {min(loads):.1f}-{max(loads):.1f} (1 min)" if loads else "load unknown"
    return f"{meta.get('machine', '')}; {meta.get('sizes', '')}; {span}"


def plot(turns: Sequence[Turn], path: Path, title: str) -> None:
    """Writes a PNG: saturated throughput (a bar per system at its median, a dot per turn),
    the lone-task latency distribution of each system (all its turns), and chain ms/step."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    groups = by_system(turns)
    names = list(groups)
    colours = {"agentdeck": "#1f77b4", "dramatiq": "#ff7f0e", "celery": "#2ca02c"}
    fig, (ax_rate, ax_lat, ax_chain) = plt.subplots(1, 3, figsize=(15, 4.8))
    fig.suptitle(title, fontsize=10)

    def bars(ax: Any, values: dict[str, list[float]], ylabel: str, heading: str) -> None:
        for i, name in enumerate(names):
            vals = values[name]
            if vals:
                middle = statistics.median(vals)
                ax.bar(i, middle, color=colours.get(name), alpha=0.8)
                label = f"{middle:,.0f}" if middle >= 100 else f"{middle:.3g}"
                ax.annotate(label, (i, middle), ha="center", va="bottom")
                ax.plot([i] * len(vals), vals, "k.", markersize=6)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(ylabel)
        ax.set_title(heading)

    each = {name: [figures(t) for t in ts] for name, ts in groups.items()}
    bars(
        ax_rate,
        {n: [f.tasks_per_s for f in fs if f.tasks_per_s is not None] for n, fs in each.items()},
        "tasks/s",
        "Saturated no-op tasks (higher is better)",
    )
    bars(
        ax_chain,
        {n: [f.chain_ms for f in fs if f.chain_ms is not None] for n, fs in each.items()},
        "ms per step",
        "Chain of sequential tasks (lower is better)",
    )
    samples = [[v * 1000 for t in groups[n] for v in t.latency] for n in names]
    shown = [(n, s) for n, s in zip(names, samples, strict=True) if s]
    if shown:
        parts = ax_lat.violinplot(
            [s for _, s in shown], showmedians=True, quantiles=[[0.95, 0.99]] * len(shown)
        )
        for body, (name, _) in zip(parts["bodies"], shown, strict=True):
            body.set_facecolor(colours.get(name, "grey"))
        ax_lat.set_xticks(range(1, len(shown) + 1), [n for n, _ in shown])
        ax_lat.set_yscale("log")
    ax_lat.set_ylabel("ms (log scale)")
    ax_lat.set_title("Lone task, submit -> done (median, p95, p99)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
