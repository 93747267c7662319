"""The row codec and the dialect helpers both SQL stores share (backends.sql.codec,
backends.sql.dialect), with no database."""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentdeck.backends.postgres.dialect import POSTGRES
from agentdeck.backends.sql.codec import (
    TASK_COLUMNS,
    _loads,
    command_from_row,
    command_to_row,
    dumps,
    error_or_null,
    event_from_row,
    event_to_row,
    workflow_from_row,
    workflow_to_row,
)
from agentdeck.backends.sql.dialect import Dialect, Params, task_filter
from agentdeck.backends.sqlite.dialect import SQLITE
from agentdeck.core.models import Command, CommandStatus, ErrorInfo, Task, TaskEvent, Workflow
from agentdeck.core.states import TaskStatus as T
from agentdeck.core.states import WorkflowStatus

DIALECTS = pytest.mark.parametrize("dialect", [SQLITE, POSTGRES], ids=["sqlite", "postgres"])

TASK = Task(
    id="wf/b",
    workflow_id="wf",
    key="b",
    capability="echo",
    status=T.FAILED,
    input={"x": [1, 2.5, None], "s": "é"},
    needs=("a", "c"),
    pending=0,
    created_at=1.0,
    updated_at=2.25,
    timeout=30.0,
    attempt=3,
    first_attempt=2,
    retry={"attempts": 5},
    output=None,
    error=ErrorInfo("timeout", "too slow", retryable=False, retry_after=1.5),
    agent_id="ag-1",
    not_before=None,
    deadline=99.5,
    started_at=3.0,
    finished_at=4.0,
)


@DIALECTS
def test_a_task_round_trips_through_each_engines_rows(dialect: Dialect) -> None:
    """Every field, needs and error included, comes back equal from a row."""
    row = dialect.tasks.to_row(TASK)
    assert len(row) == len(TASK_COLUMNS)
    assert dialect.tasks.from_row(row) == TASK
    no_needs = replace(TASK, needs=(), error=None, retry=None, output=[1])
    assert dialect.tasks.from_row(dialect.tasks.to_row(no_needs)) == no_needs


def test_the_engines_store_needs_their_own_way() -> None:
    """SQLite keeps ``needs`` as JSON text, PostgreSQL as a list (``text[]``)."""
    position = TASK_COLUMNS.index("needs")
    assert SQLITE.tasks.to_row(TASK)[position] == '["a","c"]'
    assert POSTGRES.tasks.to_row(TASK)[position] == ["a", "c"]


def test_workflows_events_and_commands_round_trip() -> None:
    """The other records come back equal from their rows."""
    workflow = Workflow("wf", "nightly", WorkflowStatus.PAUSED, 1.0, 2.0, 3, None, {"team": "x"})
    event = TaskEvent("wf/a", "wf", 5.0, "ready", 1, T.BLOCKED, T.READY, None, {"by": "a"}, 7)
    command = Command("c1", "retry", "wf/a", 1.0, "ann", {"n": 1}, CommandStatus.DONE, "ok", 2.0)
    assert workflow_from_row(workflow_to_row(workflow)) == workflow
    assert event_from_row(event_to_row(event)) == event
    assert command_from_row(command_to_row(command)) == command


@pytest.mark.parametrize("bad", [math.nan, math.inf, {1j}])
def test_dumps_refuses_what_is_not_json_naming_the_field(bad: object) -> None:
    """NaN and infinities are refused like any other non-JSON value, on every engine."""
    with pytest.raises(ValueError, match="input of task 'x' is not JSON-serialisable"):
        dumps(bad, "input of task 'x'")  # type: ignore[arg-type]


def test_dumps_is_compact() -> None:
    """No spaces: the text stored is the same whichever engine writes it."""
    assert dumps({"a": [1, "b"]}, "x") == '{"a":[1,"b"]}'


def test_error_or_null_takes_an_error_info_or_none_only() -> None:
    """None stays NULL; anything but an ErrorInfo is a ValueError naming its type."""
    assert error_or_null(None, "e") is None
    with pytest.raises(ValueError, match="e must be an ErrorInfo or None, got dict"):
        error_or_null({"kind": "x"}, "e")


def test_params_number_placeholders_in_the_order_values_are_added() -> None:
    """Each engine gets its own spelling; the values keep the order of the text."""
    for dialect, expected in ((SQLITE, "?1 ?2"), (POSTGRES, "$1 $2")):
        p = Params(dialect)
        assert f"{p('a')} {p(7)}" == expected
        assert p.values == ["a", 7]


def test_task_filter_builds_one_clause_per_filter_given() -> None:
    """Filters left as None add nothing; statuses become one list parameter."""
    p = Params(POSTGRES)
    p(100)  # a parameter added before the filter keeps its number
    where = task_filter(p, "wf", [T.READY, T.FAILED], None, "ag")
    assert where == "WHERE workflow_id = $2 AND agent_id = $3 AND status = ANY($4::text[])"
    assert p.values == [100, "wf", "ag", ["ready", "failed"]]
    assert task_filter(Params(SQLITE), None, None, None, None) == ""
    q = Params(SQLITE)
    assert task_filter(q, None, [T.READY], None, None) == (
        "WHERE status IN (SELECT value FROM json_each(?1))"
    )
    assert q.values == ['["ready"]']


def test_task_filter_refuses_a_status_that_is_not_one() -> None:
    """A bad status is a ValueError before any SQL runs."""
    with pytest.raises(ValueError, match="'nope'"):
        task_filter(Params(SQLITE), None, ["nope"], None, None)  # type: ignore[list-item]


def test_task_columns_are_tasks_fields_in_order() -> None:
    """``TaskCodec.from_row`` builds a Task by position, in TASK_COLUMNS order."""
    assert tuple(f.name for f in fields(Task)) == TASK_COLUMNS


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(JSON_VALUES, st.sampled_from([(", ", ": "), (",", ":")]), st.text(" \t\n"))
def test_loads_reads_every_json_text_as_json_loads_does(
    value: object, separators: tuple[str, str], space: str
) -> None:
    """jsonb's spacing, compact text, whitespace around the document alike."""
    for text in (json.dumps(value, separators=separators), space + json.dumps(value) + space):
        assert _loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "nul", "{", '{"a": 1} x', "[1,]", "\ufeff1", "1 2"])
def test_loads_refuses_what_json_loads_refuses_with_its_error(text: str) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(text)
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        _loads(text)
