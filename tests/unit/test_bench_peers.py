"""scripts/bench_peers.py and scripts/peers/report.py: argument validation, statistics and the
results table. Nothing here starts a process or times anything."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_bench_peers() -> ModuleType:
    """scripts/bench_peers.py imported from its path (scripts/ is not a package); the import
    path it extends for its own imports is put back as it was."""
    path = list(sys.path)
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPTS / "bench_peers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


bench_peers = load_bench_peers()
report = sys.modules["peers.report"]
Turn = report.Turn


def turn(system: str, rep: int = 1, **kw: object) -> object:
    return Turn(system, rep, "2026-12-07 10:00:00", (1.0, 0.5, 0.25), **kw)


# ---------------------------------------------------------------------------- arguments


def test_full_sizes_by_default() -> None:
    """With no size given, the issue's sizes: 200 lone tasks, a chain of 1,000, 20 x 1,000."""
    args = bench_peers.parse_args([])
    assert (args.light, args.chain, args.workflows, args.tasks) == (200, 1000, 20, 1000)
    assert (args.wide, args.layers, args.stored) == (10_000, 100, 100_000)
    assert args.systems == ["agentdeck", "dramatiq", "celery"]


def test_quick_sizes_and_an_override() -> None:
    """--quick picks the small sizes; a size given on the command line wins over them."""
    args = bench_peers.parse_args(["--quick", "--chain", "50", "--stored", "0"])
    assert (args.light, args.chain, args.workflows, args.tasks) == (30, 50, 2, 1000)
    assert (args.wide, args.layers, args.stored) == (1000, 10, 0)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--light", "0"], "--light must be at least 1, got 0"),
        (["--chain", "-5"], "--chain must be at least 1, got -5"),
        (["--reps", "0"], "--reps must be at least 1, got 0"),
        (["--wide", "-1"], "--wide must be 0 (skip) or more, got -1"),
        (["--timeout", "0"], "--timeout must be more than 0 seconds, got 0"),
        (["--systems", "agentdeck,rq"], "unknown 'rq'; choose from agentdeck, dramatiq, celery"),
        (["--systems", ","], "unknown empty; choose from agentdeck, dramatiq, celery"),
    ],
)
def test_bad_arguments_are_named(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value stops the script with one error naming the value and what is allowed."""
    with pytest.raises(SystemExit) as exc:
        bench_peers.parse_args(argv)
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


def test_systems_keep_their_order_once_each() -> None:
    """--systems keeps the order given and drops repeats."""
    args = bench_peers.parse_args(["--systems", "celery, agentdeck,celery"])
    assert args.systems == ["celery", "agentdeck"]


def test_turns_rotate_from_one_repetition_to_the_next() -> None:
    """Each repetition starts with the next system, so none always runs first."""
    systems = ["agentdeck", "dramatiq", "celery"]
    orders = [bench_peers.turn_order(systems, rep) for rep in (1, 2, 3, 4)]
    assert [o[0] for o in orders] == ["agentdeck", "dramatiq", "celery", "agentdeck"]
    assert all(sorted(o) == sorted(systems) for o in orders)


def test_the_chain_needs_the_step_before() -> None:
    """agentdeck's chain is one workflow whose every task needs the one before it."""
    spec = bench_peers.chain_spec(4)
    assert [(t.key, t.needs) for t in spec.tasks] == [
        ("t0", ()),
        ("t1", ("t0",)),
        ("t2", ("t1",)),
        ("t3", ("t2",)),
    ]


# ---------------------------------------------------------------------------- statistics


def test_percentiles_interpolate_between_ranks() -> None:
    """Percentiles interpolate linearly between the closest ranks, as numpy does."""
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert report.percentile(values, 50) == 3.0
    assert report.percentile(values, 95) == pytest.approx(4.8)
    assert report.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert report.percentile([7.0], 99) == 7.0


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], 0), ([1.0], 100)])
def test_percentile_refuses_what_has_none(values: list[float], q: float) -> None:
    """No values, or a q outside (0, 100), is a ValueError."""
    with pytest.raises(ValueError):
        report.percentile(values, q)


def test_throughput_counts_intervals_between_first_and_last() -> None:
    """1,001 tasks done over 2 s, first to last, are 1,000 intervals: 500 tasks/s."""
    assert report.throughput(1001, 2.0) == 500.0
    with pytest.raises(ValueError, match=r"got 1 in 2\.0"):
        report.throughput(1, 2.0)


def test_figures_of_a_turn() -> None:
    """A turn gives tasks/s, latency percentiles in ms and ms per chain step."""
    f = report.figures(
        turn(
            "dramatiq",
            latency=[0.001, 0.002, 0.003],
            chain_steps=1000,
            chain_seconds=3.5,
            saturated_tasks=2001,
            saturated_seconds=0.5,
        )
    )
    assert f.tasks_per_s == 4000.0
    assert f.p50 == pytest.approx(2.0)
    assert f.chain_ms == pytest.approx(3.5)


def test_a_failed_workload_has_no_figure() -> None:
    """A workload that did not finish leaves its figures empty, not zero."""
    f = report.figures(turn("celery", errors=["chain: timed out"]))
    assert (f.tasks_per_s, f.p50, f.p99, f.chain_ms) == (None, None, None, None)


def test_medians_skip_turns_without_the_figure() -> None:
    """A system's median of a figure is taken over the turns that have it."""
    turns = [
        turn("celery", 1, saturated_tasks=101, saturated_seconds=1.0),
        turn("celery", 2, saturated_tasks=101, saturated_seconds=0.5),
        turn("celery", 3, saturated_tasks=101, saturated_seconds=0.25),
        turn("celery", 4),
    ]
    assert report.median_figures(turns).tasks_per_s == 200.0


# ---------------------------------------------------------------------------- the table


def test_the_table_shows_every_turn_its_load_and_the_ratio_to_dramatiq() -> None:
    """One row per turn with the load before and after; each system's median throughput is
    shown as a multiple of Dramatiq's."""
    turns = [
        turn(
            "agentdeck",
            saturated_tasks=1001,
            saturated_seconds=0.5,
            chain_steps=10,
            chain_seconds=0.1,
            latency=[0.005, 0.006],
            load_after=(2.0, 1.0, 0.5),
        ),
        turn("dramatiq", saturated_tasks=1001, saturated_seconds=0.25),
    ]
    page = report.markdown(turns, {"machine": "2 CPUs"}, "plot.png")
    lines = page.splitlines()
    assert "- **machine**: 2 CPUs" in lines
    assert (
        "| 1 | agentdeck | 2026-12-07 10:00:00 | 1.00 / 0.50 / 0.25 | 2.00 / 1.00 / 0.50 "
        "| 2,000 | 5.50 | 5.95 | 5.99 | 10.00 |"
    ) in lines
    assert (
        "| 1 | dramatiq | 2026-12-07 10:00:00 | 1.00 / 0.50 / 0.25 | — | 4,000 | — | — | — | — |"
        in lines
    )
    assert "| agentdeck | 1 | 2,000 | 0.50 | 5.50 | 5.95 | 5.99 | 10.00 |" in lines
    assert "| dramatiq | 1 | 4,000 | 1.00 | — | — | — | — |" in lines
    assert lines[-1] == "![throughput, latency and chain figures](plot.png)"
    assert "What failed" not in page


def test_the_table_lists_what_failed() -> None:
    """Failures are listed under the tables, with the repetition and system they hit; with
    no Dramatiq turn there is no ratio."""
    page = report.markdown([turn("celery", 2, errors=["chain: TimeoutError: 5 of 10"])], {})
    assert "- rep 2, celery: chain: TimeoutError: 5 of 10" in page
    assert "| celery | 1 | — | — | — | — | — | — |" in page


# ---------------------------------------------------------------------------- completions

completions = importlib.import_module("peers.completions")


class FakeRedis:
    """A hash of per-process counters as Redis returns it (bytes); each wait on the wake-up
    list brings the next field in ``arriving``, as a worker's flush would."""

    def __init__(self, fields: dict[bytes, bytes], arriving: list[tuple[bytes, bytes]]) -> None:
        self.fields = dict(fields)
        self.arriving = list(arriving)
        self.waited: list[list[str]] = []

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.fields)

    def blpop(self, keys: list[str], timeout: float) -> None:
        self.waited.append(keys)
        if self.arriving:
            field, value = self.arriving.pop(0)
            self.fields[field] = value


def test_progress_sums_every_process() -> None:
    """The counts of every worker process add up; first is the oldest, last the newest."""
    fake = FakeRedis({b"101": b"3 100.5 102.0", b"102": b"2 100.25 101.5"}, [])
    assert completions.progress(fake, "k") == (5, 100.25, 102.0)
    assert completions.progress(FakeRedis({}, []), "k") == (0, 0.0, 0.0)


def test_wait_for_waits_on_the_wake_up_list_until_all_are_done() -> None:
    """The driver waits on ``key:wake`` until n tasks are counted, then gives first and last."""
    fake = FakeRedis({b"101": b"3 100.5 102.0"}, [(b"102", b"2 100.25 103.0")])
    assert completions.wait_for(fake, "k", 5, timeout=60) == (100.25, 103.0)
    assert fake.waited == [["k:wake"]]


def test_wait_for_says_how_many_were_done_at_its_deadline() -> None:
    """Past its deadline the wait raises TimeoutError with the count it reached."""
    fake = FakeRedis({b"101": b"3 100.5 102.0"}, [])
    with pytest.raises(TimeoutError, match=r"3 of 5 tasks done under k after 0 s"):
        completions.wait_for(fake, "k", 5, timeout=0)


def test_a_turn_survives_its_json_form() -> None:
    """--render reads back what the run wrote: a turn through JSON is the same turn."""
    original = turn(
        "agentdeck",
        2,
        latency=[0.004],
        load_after=(3.0, 2.0, 1.0),
        layers=(100, 100),
        layers_seconds=5.0,
        stored_tasks=100_000,
        rss_mb=(80.5, 90.25),
        errors=["x"],
    )
    raw = json.loads(json.dumps(dataclasses.asdict(original)))
    assert report.turn_from_dict(raw) == original


def test_the_plot_title_gives_the_load_range() -> None:
    """The plot's title carries the lowest and highest 1-minute load seen over the run."""
    turns = [turn("celery", load_after=(7.3, 1.0, 1.0)), turn("dramatiq")]
    title = report.plot_title(turns, {"machine": "2 CPUs", "sizes": "quick"})
    assert title == "2 CPUs; quick; load 1.0-7.3 (1 min)"


def test_disturbed_turns_are_listed_apart_from_failures() -> None:
    """A broker restart during a turn is listed under its own heading, with the turn named."""
    page = report.markdown([turn("agentdeck", 2, disturbances=["RabbitMQ restarted"])], {})
    assert "## Disturbed turns (their figures include this)" in page
    assert "- rep 2, agentdeck: RabbitMQ restarted" in page
    assert "What failed" not in page


# ---------------------------------------------------------------------------- issue 16's targets


def issue_sized_run(**agentdeck: object) -> list[object]:
    """An agentdeck turn at the issue's sizes (figures overridable) and a Dramatiq turn."""
    figures: dict[str, object] = {
        "saturated_tasks": 20_001,
        "saturated_seconds": 3.0,
        "latency": [0.004] * 199 + [0.0045],
        "chain_steps": 1000,
        "chain_seconds": 2.9,
        "wide_tasks": 10_000,
        "wide_seconds": 2.4,
        "layers": (100, 100),
        "layers_seconds": 3.9,
        "stored_tasks": 100_000,
        "rss_mb": (80.0, 120.0),
    }
    figures.update(agentdeck)
    return [
        turn("agentdeck", **figures),
        turn("dramatiq", saturated_tasks=20_001, saturated_seconds=3.0),
    ]


def verdicts(turns: list[object]) -> dict[str, str]:
    values = report.target_values(turns)
    return {t.figure: report.verdict(t, values[t.figure]) for t in report.TARGETS}


def test_every_target_is_met_by_a_run_under_every_limit() -> None:
    """At the issue's sizes, a run under each limit (at or above Dramatiq's throughput) meets
    all six targets."""
    assert set(verdicts(issue_sized_run()).values()) == {"met"}


@pytest.mark.parametrize(
    ("figure", "override"),
    [
        ("ratio", {"saturated_seconds": 3.03}),
        ("p99", {"latency": [0.004, 0.006] * 100}),
        ("chain_ms", {"chain_seconds": 3.0}),
        ("wide", {"wide_seconds": 2.5}),
        ("layers", {"layers_seconds": 4.2}),
        ("rss", {"rss_mb": (80.0, 250.0)}),
    ],
)
def test_a_figure_at_or_past_its_limit_is_not_met(figure: str, override: object) -> None:
    """A limit is strict (below 5 ms means below), and throughput must reach Dramatiq's; the
    memory target is judged on the daemon's peak, not its RSS at the end."""
    result = verdicts(issue_sized_run(**override))  # type: ignore[arg-type]
    assert result[figure] == "not met"
    assert [f for f, v in result.items() if v != "met"] == [figure]


def test_a_smaller_run_is_shown_but_not_judged() -> None:
    """A --quick run's workflows are not issue 16's: their figures are shown, not judged; a
    workload that did not run says so."""
    turns = issue_sized_run(wide_tasks=1000, layers=(10, 100), rss_mb=None)
    result = verdicts(turns)
    assert result["wide"] == result["layers"] == "not judged (another size)"
    assert result["rss"] == "not run"
    page = report.markdown(turns, {})
    assert "| 10,000 independent tasks, submit -> finished | < 2.5 s | 2.40 s " in page
    assert "| 1 | 1,000 | 2.400 | 10 x 100 | 3.900 | 100,000 | — | — |" in page


def test_the_page_ends_with_the_targets_and_their_verdicts() -> None:
    """The page has a row per target: its limit, this run's figure, and the verdict."""
    page = report.markdown(issue_sized_run(layers_seconds=5.86), {})
    lines = page.splitlines()
    assert "## Issue 16's targets (agentdeck, the median of its turns)" in lines
    assert "| saturated throughput, x Dramatiq 2x8 | >= 1 x | 1.000 x | met |" in lines
    assert "| 100 layers x 100 tasks, submit -> finished | < 4 s | 5.86 s | not met |" in lines
    assert "| daemon peak RSS, 100,000 tasks stored | < 250 MB | 120.00 MB | met |" in lines


def test_a_quick_run_judges_nothing() -> None:
    """Throughput over 2,000 tasks, p99 of 30 lone tasks and a chain of 100 are shown but not
    judged against the issue's targets."""
    turns = issue_sized_run(saturated_tasks=2000, latency=[0.004] * 30, chain_steps=100)
    turns[1].saturated_tasks = 2000  # type: ignore[attr-defined]
    result = verdicts(turns)
    assert {result[f] for f in ("ratio", "p99", "chain_ms")} == {"not judged (another size)"}
