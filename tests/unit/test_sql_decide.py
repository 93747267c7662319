"""The decisions of ``Store.apply`` (backends.sql.decide), tested once, with no database: both
SQL stores write exactly what these decide."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from agentdeck.backends.sql.decide import (
    SCALARS,
    WRITE_COLUMNS,
    TaskState,
    applied,
    decide,
    plan,
    succeeding,
    to_read,
    value,
    waiting_on,
    write_row,
)
from agentdeck.core.errors import InvalidTransition
from agentdeck.core.models import Change, ErrorInfo, Task, Usage
from agentdeck.core.states import TaskStatus as T

AT = 100.0


def state(
    task_id: str, status: T, *, attempt: int = 1, pending: int = 0, **values: object
) -> TaskState:
    """A task as a batch reads it: workflow ``wf``, key = the id's last part."""
    base = TaskState(
        id=task_id,
        workflow_id="wf",
        key=task_id.rsplit("/", 1)[-1],
        status=status.value,
        attempt=attempt,
        first_attempt=1,
        agent_id=None,
        not_before=None,
        deadline=None,
        started_at=None,
        finished_at=None,
        pending=pending,
    )
    return replace(base, **values)  # type: ignore[arg-type]


def states(*items: TaskState) -> dict[str, TaskState]:
    return {s.id: s for s in items}


def change(task_id: str, to: T, *expect: T, attempt: int | None = None, **values: object) -> Change:
    return Change(task_id, to, frozenset(expect), attempt=attempt, values=values)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- plan


def test_plan_refuses_unknown_value_names_naming_them_and_the_allowed_ones() -> None:
    """A value that is not a column is a ValueError naming it and every allowed name."""
    with pytest.raises(
        ValueError, match=r"'wf/a' sets unknown value\(s\) colour; allowed: .*pending"
    ):
        plan(change("wf/a", T.DISPATCHED, T.READY, colour="red"))


def test_plan_refuses_an_expected_status_that_cannot_reach_the_target() -> None:
    """``expect`` holding a status the transition table forbids is InvalidTransition."""
    with pytest.raises(InvalidTransition):
        plan(change("wf/a", T.RUNNING, T.READY, T.SUCCEEDED))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), object()])
def test_plan_refuses_an_output_that_is_not_json(bad: object) -> None:
    """NaN, infinities and objects are not JSON: ValueError naming the change's task."""
    with pytest.raises(ValueError, match=r"output of the change for task 'wf/a'"):
        plan(change("wf/a", T.SUCCEEDED, T.RUNNING, output=bad))


def test_plan_refuses_an_error_that_is_not_an_error_info() -> None:
    """``error`` takes an ErrorInfo or None, nothing else."""
    with pytest.raises(ValueError, match="must be an ErrorInfo or None, got str"):
        plan(change("wf/a", T.FAILED, T.RUNNING, error="boom"))


def test_plan_names_its_event_after_the_target_unless_told() -> None:
    """The event kind is the new status, or the change's ``event``; detail is JSON text."""
    assert plan(change("wf/a", T.DISPATCHED, T.READY)).kind == "dispatched"
    named = Change("wf/a", T.RETRYING, frozenset({T.RUNNING}), event="lost", detail={"n": 1})
    assert (plan(named).kind, plan(named).detail) == ("lost", '{"n":1}')


@pytest.mark.parametrize(
    "detail",
    [
        {"node": "n1"},
        {"x": 1},
        {"x": True},
        {"x": 1.0},
        {"x": "1"},
        {"x": [1, "é"]},
        {"agent": "é\n"},
        {"a": "b", "c": "d"},
        {"c": "d", "a": "b"},
    ],
)
def test_plan_encodes_a_detail_as_dumps_does_cached_or_not(detail: dict[str, object]) -> None:
    """Details the scheduler sends over and over are encoded once; equal details of other
    types (1, 1.0, True) are never taken for each other."""
    first = Change("wf/a", T.DISPATCHED, frozenset({T.READY}), detail=detail)  # type: ignore[arg-type]
    expected = json.dumps(detail, separators=(",", ":"), allow_nan=False)
    assert plan(first).detail == expected
    assert plan(replace(first, task_id="wf/b")).detail == expected


def test_plans_detail_cache_stays_bounded() -> None:
    from agentdeck.backends.sql import decide as module

    for n in range(module._DETAILS_MOST + 5):
        plan(Change(f"wf/{n}", T.DISPATCHED, frozenset({T.READY}), detail={"n": str(n)}))
    assert 0 < len(module._DETAILS) <= module._DETAILS_MOST


@pytest.mark.parametrize("to", ["bogus", ["ready"]])
def test_plan_refuses_a_target_that_is_not_a_status(to: object) -> None:
    with pytest.raises(ValueError, match="is not a valid TaskStatus"):
        plan(Change("wf/a", to, frozenset({T.READY})))  # type: ignore[arg-type]


def test_plan_takes_a_status_given_as_its_string() -> None:
    """A Change whose statuses are plain strings plans as one with the members."""
    given = Change("wf/a", "dispatched", frozenset({"ready"}), values={"attempt": 1})  # type: ignore[arg-type]
    members = Change("wf/a", T.DISPATCHED, frozenset({T.READY}), values={"attempt": 1})
    assert plan(given) == plan(members)


def test_plan_keeps_the_scalars_in_column_order() -> None:
    values = {"deadline": 5.0, "agent_id": None, "attempt": 2}
    p = plan(Change("wf/a", T.DISPATCHED, frozenset({T.READY}), values=values))
    assert p.scalars == (("attempt", 2), ("agent_id", None), ("deadline", 5.0))
    assert p.columns == frozenset({"attempt", "agent_id", "deadline"})


# ----------------------------------------------------------------------------- decide


def test_a_matching_change_moves_the_task_and_records_an_event() -> None:
    """Status and attempt match: the state takes the target and values; one event says so."""
    dispatch = change("wf/a", T.DISPATCHED, T.READY, attempt=1, agent_id="ag", deadline=160.0)
    decision = decide([plan(dispatch)], states(state("wf/a", T.READY)), {}, AT)
    assert decision.moved == ["wf/a"]
    [written] = decision.writes
    assert (written.status, written.agent_id, written.deadline) == ("dispatched", "ag", 160.0)
    assert decision.events == [
        ("wf/a", "wf", AT, "dispatched", 1, "ready", "dispatched", "ag", "{}")
    ]


@pytest.mark.parametrize(
    "the_change",
    [
        change("wf/a", T.CANCELLED, T.BLOCKED),  # status not expected
        change("wf/a", T.DISPATCHED, T.READY, attempt=2),  # another attempt
        change("wf/zz", T.DISPATCHED, T.READY),  # no such task
    ],
)
def test_a_change_that_does_not_match_does_nothing(the_change: Change) -> None:
    """A compare-and-set that fails writes nothing and records no event."""
    decision = decide([plan(the_change)], states(state("wf/a", T.READY)), {}, AT)
    assert (decision.moved, decision.writes, decision.events) == ([], [], [])


def test_later_changes_see_earlier_ones() -> None:
    """The same task may move twice in one batch; a duplicate of the first then fails."""
    dispatch = Change("wf/a", T.DISPATCHED, frozenset({T.READY}), attempt=1, values={"attempt": 2})
    run = change("wf/a", T.RUNNING, T.DISPATCHED, attempt=2)
    plans = [plan(dispatch), plan(run), plan(dispatch)]
    decision = decide(plans, states(state("wf/a", T.READY)), {}, AT)
    assert decision.moved == ["wf/a"]
    assert [(e[5], e[6], e[4]) for e in decision.events] == [
        ("ready", "dispatched", 2),
        ("dispatched", "running", 2),
    ]
    assert decision.writes[0].status == "running"


def test_the_event_names_the_agent_a_change_clears() -> None:
    """Clearing ``agent_id`` still names the agent that was involved."""
    decision = decide(
        [plan(change("wf/a", T.RETRYING, T.RUNNING, agent_id=None))],
        states(state("wf/a", T.RUNNING, agent_id="ag")),
        {},
        AT,
    )
    assert decision.writes[0].agent_id is None
    assert decision.events[0][7] == "ag"


def test_success_counts_dependents_down_and_releases_those_reaching_zero() -> None:
    """Each blocked dependent at zero becomes ready with an event naming the key released it;
    one still waiting is counted down only; the count never goes below zero."""
    before = states(
        state("wf/a", T.RUNNING),
        state("wf/b", T.BLOCKED, pending=1),
        state("wf/c", T.BLOCKED, pending=2),
        state("wf/d", T.CANCELLED, pending=0),
    )
    waiting = waiting_on([("wf/a", "wf/b"), ("wf/a", "wf/c"), ("wf/a", "wf/d")])
    decision = decide([plan(change("wf/a", T.SUCCEEDED, T.RUNNING))], before, waiting, AT)
    assert decision.released == ["wf/b"]
    final = {s.id: (s.status, s.pending) for s in decision.writes}
    assert final == {
        "wf/a": ("succeeded", 0),
        "wf/b": ("ready", 0),
        "wf/c": ("blocked", 1),
        "wf/d": ("cancelled", 0),
    }
    ready = decision.events[1]
    assert ready == ("wf/b", "wf", AT, "ready", 1, "blocked", "ready", None, '{"released_by":"a"}')
    assert len(decision.events) == 2


def test_a_dependent_released_in_a_batch_can_move_again_in_it() -> None:
    """A later change of the same call sees the release (ready, then dispatched)."""
    before = states(state("wf/a", T.RUNNING), state("wf/b", T.BLOCKED, pending=1))
    plans = [
        plan(change("wf/a", T.SUCCEEDED, T.RUNNING)),
        plan(change("wf/b", T.DISPATCHED, T.READY)),
    ]
    decision = decide(plans, before, {"wf/a": ["wf/b"]}, AT)
    assert (decision.moved, decision.released) == (["wf/a", "wf/b"], ["wf/b"])
    assert [e[3] for e in decision.events] == ["succeeded", "ready", "dispatched"]


def test_a_dependent_missing_from_the_states_is_passed_over() -> None:
    """A dependency row whose task was not read releases nothing and fails nothing."""
    decision = decide(
        [plan(change("wf/a", T.SUCCEEDED, T.RUNNING))],
        states(state("wf/a", T.RUNNING)),
        {"wf/a": ["wf/gone"]},
        AT,
    )
    assert (decision.moved, decision.released) == (["wf/a"], [])


def test_a_state_copies_every_field() -> None:
    """``TaskState.copy`` is equal to its original, field for field, and separate from it."""
    original = TaskState(*(f"v{i}" for i in range(len(fields(TaskState)))))  # type: ignore[arg-type]
    twin = original.copy()
    assert twin == original and twin is not original


def test_decide_leaves_the_states_it_is_given_alone() -> None:
    """The decision works on copies: the caller's states are as they were."""
    given = states(state("wf/a", T.READY))
    decide([plan(change("wf/a", T.DISPATCHED, T.READY))], given, {}, AT)
    assert given["wf/a"].status == "ready"


def test_decide_given_its_states_decides_the_same_in_place() -> None:
    """``own=True``: the same decision, the states changed in place instead of copied."""
    changes = [
        plan(change("wf/a", T.SUCCEEDED, T.RUNNING)),
        plan(change("wf/c", T.DISPATCHED, T.READY)),
    ]

    def given() -> dict[str, TaskState]:
        return states(
            state("wf/a", T.RUNNING), state("wf/b", T.BLOCKED, pending=1), state("wf/c", T.READY)
        )

    waiting = waiting_on([("wf/a", "wf/b")])
    owned = given()
    assert decide(changes, owned, waiting, AT, own=True) == decide(changes, given(), waiting, AT)
    assert (owned["wf/a"].status, owned["wf/b"].status) == ("succeeded", "ready")


# ---------------------------------------------------------------------- around decide


def test_write_row_gives_every_write_column_of_the_state() -> None:
    """In WRITE_COLUMNS order: the scalars as the state holds them (in SCALARS order)."""
    s = TaskState("wf/a", "wf", "a", "running", 3, 2, "ag", 1.5, 2.5, 3.5, 4.5, 7, ("{}",), None)
    row = dict(zip(WRITE_COLUMNS, write_row(s), strict=True))
    assert row == {
        "id": "wf/a",
        "status": "running",
        **{name: getattr(s, name) for name in SCALARS},
        "set_output": True,
        "output": "{}",
        "set_error": False,
        "error": None,
    }
    assert [row[name] for name in SCALARS] == [3, 2, "ag", 1.5, 2.5, 3.5, 4.5, 7]


def test_write_row_writes_output_and_error_only_when_a_change_set_them() -> None:
    """``set_output``/``set_error`` are False unless the batch set them (even to null)."""
    error = ErrorInfo("boom", "it broke")
    decision = decide(
        [
            plan(change("wf/a", T.SUCCEEDED, T.RUNNING, output=None)),
            plan(change("wf/b", T.FAILED, T.RUNNING, error=error)),
        ],
        states(state("wf/a", T.RUNNING), state("wf/b", T.RUNNING)),
        {},
        AT,
    )
    rows = [dict(zip(WRITE_COLUMNS, write_row(s), strict=True)) for s in decision.writes]
    assert [(r["set_output"], r["output"], r["set_error"]) for r in rows] == [
        (True, None, False),
        (False, None, True),
    ]
    assert json.loads(rows[1]["error"]) == error.to_dict()


def test_only_the_dependents_of_succeeding_tasks_are_read() -> None:
    """``succeeding`` names the tasks that may succeed; ``to_read`` adds their dependents."""
    plans = [
        plan(change("wf/b", T.SUCCEEDED, T.RUNNING)),
        plan(change("wf/a", T.FAILED, T.RUNNING)),
    ]
    assert succeeding(plans) == ["wf/b"]
    assert to_read(plans, {"wf/b": ["wf/c", "wf/a"]}) == ["wf/a", "wf/b", "wf/c"]


def test_applied_answers_with_the_tasks_in_the_order_they_moved() -> None:
    """The answer lists each moved and each released task once, in decision order."""
    decision = decide(
        [plan(change("wf/b", T.DISPATCHED, T.READY)), plan(change("wf/a", T.DISPATCHED, T.READY))],
        states(state("wf/a", T.READY), state("wf/b", T.READY)),
        {},
        AT,
    )
    tasks = [Task(i, "wf", i[-1], "c", T.DISPATCHED, {}, (), 0, 1.0, AT) for i in ("wf/a", "wf/b")]
    assert [t.id for t in applied(decision, tasks).tasks] == ["wf/b", "wf/a"]


def test_the_decision_names_the_columns_each_write_sets() -> None:
    """A moved task lists the values its changes set; a counted-down dependent ``pending``."""
    before = states(state("wf/a", T.RUNNING), state("wf/b", T.BLOCKED, pending=2))
    plans = [plan(change("wf/a", T.SUCCEEDED, T.RUNNING, output=1, finished_at=5.0))]
    decision = decide(plans, before, {"wf/a": ["wf/b"]}, AT)
    assert decision.changed == {"wf/a": ("finished_at", "output"), "wf/b": ("pending",)}
    assert [value(s, "output") for s in decision.writes] == ["1", None]


# ------------------------------------------------------------------------------ usage


def ends(task_id: str, usage: Usage, attempt: int = 1) -> Change:
    """An in-flight attempt succeeds having spent ``usage``."""
    return Change(task_id, T.SUCCEEDED, frozenset({T.RUNNING}), attempt=attempt, usage=usage)


def test_an_applied_change_with_usage_gives_one_usage_row() -> None:
    """The row names the task, its workflow, the attempt, the usage's columns and the time."""
    decision = decide(
        [plan(ends("wf/a", Usage(10, 2, 3, 4, 0.25, "m")))],
        states(state("wf/a", T.RUNNING)),
        {},
        AT,
    )
    assert decision.usage == [("wf/a", "wf", 1, "m", 10, 2, 3, 4, 0.25, AT)]


def test_a_skipped_change_gives_no_usage_row_and_a_second_end_gives_none() -> None:
    """Usage goes only with a change that applies: a stale attempt, or a second end of the same
    attempt in the batch, writes nothing."""
    plans = [
        plan(ends("wf/a", Usage(1), attempt=2)),  # stale attempt
        plan(ends("wf/a", Usage(2))),
        plan(ends("wf/a", Usage(3))),  # no longer running
    ]
    decision = decide(plans, states(state("wf/a", T.RUNNING)), {}, AT)
    assert [row[4] for row in decision.usage] == [2]


def test_a_change_without_usage_gives_no_row() -> None:
    """Most changes carry no usage and write no usage row."""
    decision = decide(
        [plan(change("wf/a", T.DISPATCHED, T.READY))], states(state("wf/a", T.READY)), {}, AT
    )
    assert decision.usage == []


@pytest.mark.parametrize(
    ("usage", "problem"),
    [
        (Usage(input_tokens=-1), "token counts must be whole numbers >= 0, got -1"),
        (Usage(output_tokens=1.5), "token counts must be whole numbers >= 0, got 1.5"),  # type: ignore[arg-type]
        (Usage(cost_usd=float("inf")), "cost_usd must be a finite number, got inf"),
        (Usage(cost_usd=-1.0), "cost_usd must be >= 0, got -1.0"),
    ],
)
def test_plan_refuses_a_usage_that_cannot_be_spending(usage: Usage, problem: str) -> None:
    """Negative or fractional tokens and a cost that is negative or not finite are refused,
    naming the task and the value."""
    with pytest.raises(ValueError, match=f"usage of the change for task 'wf/a': {problem}"):
        plan(ends("wf/a", usage))


def test_plan_refuses_usage_that_is_not_a_usage() -> None:
    """A usage given as a dict (not the domain object) is refused by type."""
    with pytest.raises(ValueError, match="must be a Usage, got dict"):
        plan(ends("wf/a", {"input_tokens": 1}))  # type: ignore[arg-type]
