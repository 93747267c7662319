"""Workflow specs: parsing YAML/JSON, reporting every problem at once, and building records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentdeck.core.errors import SpecError
from agentdeck.core.models import Budget
from agentdeck.core.retry import RetryPolicy
from agentdeck.core.spec import SpecLimits, WorkflowSpec, build, load_spec, parse_spec
from agentdeck.core.states import TaskStatus, WorkflowStatus

GOOD = """
name: a-to-b
labels: {team: search}
tasks:
  - key: fetch
    capability: echo
    input: {text: hi}
  - key: parse
    capability: python.v2
    needs: [fetch]
    timeout: 30
    retry: {max_attempts: 5, initial_delay: 0.1}
  - key: store
    capability: echo
    needs: [fetch, parse]
"""


def problems(text: str, **kwargs: object) -> list[str]:
    """The problems parse_spec reports for ``text``."""
    with pytest.raises(SpecError) as info:
        parse_spec(text, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def yaml_tasks(*tasks: str) -> str:
    return "name: w\ntasks:\n" + "".join(f"  - {t}\n" for t in tasks)


# --------------------------------------------------------------------------------- parsing


def test_good_yaml_spec_parses_with_defaults() -> None:
    """A valid spec gives typed tasks; absent fields take their defaults."""
    spec = parse_spec(GOOD)
    assert spec.name == "a-to-b"
    assert spec.labels == {"team": "search"}
    fetch, parse, store = spec.tasks
    assert (fetch.key, fetch.capability, fetch.input) == ("fetch", "echo", {"text": "hi"})
    assert (fetch.needs, fetch.timeout, fetch.retry) == ((), 60.0, None)
    assert (parse.needs, parse.timeout) == (("fetch",), 30.0)
    assert parse.retry == {"max_attempts": 5, "initial_delay": 0.1}
    assert store.input == {}
    assert spec.graph() == {"fetch": (), "parse": ("fetch",), "store": ("fetch", "parse")}


def test_json_spec_parses_in_either_mode() -> None:
    """JSON text parses with fmt='json' and with the default YAML reader."""
    text = json.dumps({"name": "j", "tasks": [{"key": "a", "capability": "echo"}]})
    assert parse_spec(text, fmt="json") == parse_spec(text)


def test_yaml_syntax_error_names_the_line() -> None:
    """A YAML syntax error is reported with its line and column."""
    (problem,) = problems("name: x\ntasks:\n  - key: [a\n")
    assert problem.startswith("YAML syntax error at line 4")


def test_json_syntax_error_names_the_line() -> None:
    """A JSON syntax error is reported with its line and column."""
    (problem,) = problems('{\n  "name": "x",\n  oops\n}', fmt="json")
    assert problem.startswith("JSON syntax error at line 3, column 3")


def test_yaml_reader_error_is_a_syntax_error() -> None:
    """Characters YAML cannot read at all are reported as a syntax error."""
    (problem,) = problems("name: \x07\n")
    assert problem.startswith("YAML syntax error: ")


def test_a_non_mapping_document_is_refused() -> None:
    """A list or an empty document is not a spec."""
    assert problems("- a\n- b\n") == ["a spec is a mapping with 'name' and 'tasks', got list"]
    assert problems("") == ["a spec is a mapping with 'name' and 'tasks', got NoneType"]


def test_unknown_format_is_a_programming_error() -> None:
    """Only yaml and json are formats."""
    with pytest.raises(ValueError, match="unknown spec format 'toml'"):
        parse_spec("name: x", fmt="toml")  # type: ignore[arg-type]


def test_missing_and_unknown_top_level_fields() -> None:
    """Missing name/tasks and unknown top-level keys are all named."""
    assert problems("labels: {}\ncolour: red\n") == [
        "missing required field 'name'",
        "missing required field 'tasks'",
        "unknown field 'colour' (allowed: name, labels, budget, tasks)",
    ]


def test_tasks_must_be_a_non_empty_list() -> None:
    """tasks given as a mapping or as an empty list is reported."""
    (problem,) = problems("name: x\ntasks: {a: 1}\n")
    assert problem.startswith("tasks: Input should be a valid list")
    assert problems("name: x\ntasks: []\n") == ["tasks: a workflow needs at least one task"]


def test_name_length_is_checked() -> None:
    """An empty or over-long name is refused."""
    (problem,) = problems(yaml_tasks("{key: a, capability: echo}").replace("w", "''", 1))
    assert problem.startswith("name: String should have at least 1 character")
    long_name = "x" * 201
    (problem,) = problems(f"name: {long_name}\ntasks: [{{key: a, capability: echo}}]\n")
    assert problem.startswith("name: String should have at most 200 characters")


# ---------------------------------------------------------------------------------- tasks


def test_task_field_problems_name_the_task() -> None:
    """Missing and unknown task fields are named with the task's index and key."""
    assert problems(yaml_tasks("{key: a, timout: 5}")) == [
        "tasks[0] 'a': missing required field 'capability'",
        "tasks[0] 'a': unknown field 'timout' "
        "(allowed: key, capability, input, needs, timeout, retry)",
    ]
    assert problems(yaml_tasks("{capability: echo}")) == ["tasks[0]: missing required field 'key'"]


def test_a_task_that_is_not_a_mapping_is_refused() -> None:
    """A scalar in the task list is reported by index."""
    assert problems(yaml_tasks("{key: a, capability: echo}", "7")) == [
        "tasks[1]: a task is a mapping with 'key' and 'capability'"
    ]


def test_bad_key_and_capability_names_show_value_and_pattern() -> None:
    """Names outside their pattern are shown with the allowed pattern."""
    assert problems(yaml_tasks("{key: a/b, capability: Echo}")) == [
        "tasks[0] 'a/b': key 'a/b' is not allowed; "
        "use 1 to 100 characters matching [A-Za-z0-9_.-]+",
        "tasks[0] 'a/b': capability 'Echo' is not allowed; "
        "use 1 to 100 characters matching [a-z0-9_.-]+",
    ]


def test_over_long_key_is_refused_and_shortened_in_the_message() -> None:
    """A 101-character key is refused; the message shows a shortened value."""
    key = "k" * 101
    (problem,) = problems(yaml_tasks(f"{{key: {key}, capability: echo}}"))
    assert "key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...' is not allowed" in problem


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        ("0", "timeout: Input should be greater than 0 (got 0)"),
        ("86401", "timeout: Input should be less than or equal to 86400 (got 86401)"),
        (
            "soon",
            "timeout: Input should be a valid number, "
            "unable to parse string as a number (got 'soon')",
        ),
    ],
)
def test_timeout_range(timeout: str, message: str) -> None:
    """timeout must be over 0 and at most a day; the value is shown."""
    text = yaml_tasks(f"{{key: a, capability: echo, timeout: {timeout}}}")
    assert problems(text) == [f"tasks[0] 'a': {message}"]


def test_needs_must_be_a_list() -> None:
    """needs written as a single string is refused with the value."""
    (problem,) = problems(
        yaml_tasks("{key: a, capability: echo}", "{key: b, capability: echo, needs: a}")
    )
    assert problem == "tasks[1] 'b': needs: Input should be a valid tuple (got 'a')"


def test_duplicate_keys_name_the_first_use() -> None:
    """A repeated key is reported with the index that first used it."""
    assert problems(yaml_tasks("{key: a, capability: echo}", "{key: a, capability: echo}")) == [
        "tasks[1] 'a': duplicate key 'a' (first used by tasks[0])"
    ]


def test_unknown_self_and_repeated_needs() -> None:
    """Unknown needs, self-needs and repeated needs are each named."""
    text = yaml_tasks(
        "{key: a, capability: echo}",
        "{key: b, capability: echo, needs: [a, a, b, ghost]}",
    )
    assert problems(text) == [
        "tasks[1] 'b': needs 'a' more than once",
        "tasks[1] 'b': needs itself",
        "tasks[1] 'b': needs 'ghost', which is not a task in this workflow",
    ]


def test_cycle_is_named_by_its_keys() -> None:
    """A cycle is reported as a -> b -> c -> a."""
    text = yaml_tasks(
        "{key: c, capability: echo, needs: [a]}",
        "{key: a, capability: echo, needs: [b]}",
        "{key: b, capability: echo, needs: [c]}",
    )
    assert problems(text) == ["cycle: a -> b -> c -> a"]


def test_cycle_through_an_invalid_task_is_still_found() -> None:
    """A task with another problem still counts for cycles and known needs."""
    text = yaml_tasks(
        "{key: a, capability: echo, needs: [b]}",
        "{key: b, capability: BAD, needs: [a]}",
    )
    assert problems(text) == [
        "tasks[1] 'b': capability 'BAD' is not allowed; "
        "use 1 to 100 characters matching [a-z0-9_.-]+",
        "cycle: a -> b -> a",
    ]


def test_too_many_tasks() -> None:
    """More tasks than max_tasks is reported with the count and the limit."""
    text = yaml_tasks(*(f"{{key: t{i}, capability: echo}}" for i in range(3)))
    assert problems(text, limits=SpecLimits(max_tasks=2)) == ["too many tasks: 3 (the limit is 2)"]


def test_payload_limit_uses_compact_json_size() -> None:
    """An input over max_payload_bytes (compact UTF-8 JSON) is reported with size and limit."""
    # {"t":"xxxxxxxxxx"} is 18 bytes.
    text = yaml_tasks("{key: a, capability: echo, input: {t: xxxxxxxxxx}}")
    assert parse_spec(text, limits=SpecLimits(max_payload_bytes=18)).tasks[0].input
    assert problems(text, limits=SpecLimits(max_payload_bytes=17)) == [
        "tasks[0] 'a': input is 18 bytes; the limit is 17 bytes"
    ]


def test_input_must_be_json() -> None:
    """A YAML value JSON cannot hold (a date, a NaN) is refused."""
    (date_problem,) = problems(yaml_tasks("{key: a, capability: echo, input: {d: 2024-01-01}}"))
    assert date_problem.startswith("tasks[0] 'a': input.")
    (nan_problem,) = problems(yaml_tasks("{key: a, capability: echo, input: {n: .nan}}"))
    assert nan_problem.startswith("tasks[0] 'a': input is not JSON")


def test_null_retry_means_no_retry_settings() -> None:
    """retry: null is the same as leaving retry out."""
    spec = parse_spec(yaml_tasks("{key: a, capability: echo, retry: null}"))
    assert spec.tasks[0].retry is None


def test_bad_retry_settings_reuse_the_policy_messages() -> None:
    """Retry settings are checked by RetryPolicy and its message is collected."""
    assert problems(
        yaml_tasks(
            "{key: a, capability: echo, retry: {max_attempts: 0}}",
            "{key: b, capability: echo, retry: {tries: 2}}",
        )
    ) == [
        "tasks[0] 'a': retry: max_attempts must be an integer from 1 to 100, got 0",
        "tasks[1] 'b': retry: unknown key(s) 'tries'; allowed: max_attempts, initial_delay, "
        "max_delay, multiplier, jitter, retry_on, never_on, max_lost",
    ]


def test_every_problem_is_reported_at_once() -> None:
    """Problems in the header, in tasks and in the graph all come in one SpecError."""
    text = """
name: ''
tasks:
  - {key: a, capability: echo, needs: [ghost]}
  - {key: a, capability: echo}
  - {key: c, capability: Nope, timeout: -1}
"""
    found = problems(text, limits=SpecLimits(max_tasks=2))
    assert found[0].startswith("name: ")
    assert found[1:] == [
        "too many tasks: 3 (the limit is 2)",
        "tasks[0] 'a': needs 'ghost', which is not a task in this workflow",
        "tasks[1] 'a': duplicate key 'a' (first used by tasks[0])",
        "tasks[2] 'c': capability 'Nope' is not allowed; "
        "use 1 to 100 characters matching [a-z0-9_.-]+",
        "tasks[2] 'c': timeout: Input should be greater than 0 (got -1)",
    ]


def test_spec_error_message_lists_problems() -> None:
    """The error's text counts the problems and lists each on its own line."""
    text = yaml_tasks(
        "{key: a, capability: echo, needs: [b]}", "{key: b, capability: echo, needs: [a]}"
    )
    with pytest.raises(SpecError, match=r"\(1 problem\(s\)\):\n  - cycle: a -> b -> a$"):
        parse_spec(text)


# ------------------------------------------------------------------------------ retry merge


def test_task_retry_policy_lays_written_keys_over_a_base() -> None:
    """retry_policy keeps the spec's keys and takes the rest from the base policy."""
    spec = parse_spec(GOOD)
    base = RetryPolicy(max_attempts=9, jitter=0.0)
    assert spec.tasks[1].retry_policy(base) == RetryPolicy(
        max_attempts=5, initial_delay=0.1, jitter=0.0
    )
    assert spec.tasks[1].retry_policy() == RetryPolicy(max_attempts=5, initial_delay=0.1)
    assert spec.tasks[0].retry_policy(base) is None


# ------------------------------------------------------------------------------ load_spec


def test_load_spec_reads_yaml_and_json_files(tmp_path: Path) -> None:
    """Files load by suffix: .json as JSON, others as YAML."""
    (tmp_path / "w.yaml").write_text(GOOD)
    (tmp_path / "w.json").write_text(
        json.dumps({"name": "j", "tasks": [{"key": "a", "capability": "e"}]})
    )
    assert load_spec(tmp_path / "w.yaml").name == "a-to-b"
    assert load_spec(str(tmp_path / "w.json"), SpecLimits()).name == "j"


def test_load_spec_json_file_is_parsed_as_strict_json(tmp_path: Path) -> None:
    """A .json file with YAML syntax gets a JSON syntax error."""
    path = tmp_path / "w.json"
    path.write_text("name: x\n")
    with pytest.raises(SpecError, match="JSON syntax error at line 1"):
        load_spec(path)


def test_load_spec_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read is one problem naming it."""
    with pytest.raises(SpecError, match=r"cannot read .*nope\.yaml"):
        load_spec(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------- build


def test_build_makes_a_running_workflow_with_ready_and_blocked_tasks() -> None:
    """Tasks with no needs are ready; the others blocked with pending = number of needs."""
    workflow, tasks = build(parse_spec(GOOD), workflow_id="wf1", now=100.0)
    assert workflow.id == "wf1"
    assert workflow.status is WorkflowStatus.RUNNING
    assert (workflow.created_at, workflow.updated_at, workflow.task_count) == (100.0, 100.0, 3)
    assert workflow.labels == {"team": "search"}
    by_key = {t.key: t for t in tasks}
    assert [t.id for t in tasks] == ["wf1/fetch", "wf1/parse", "wf1/store"]
    assert (by_key["fetch"].status, by_key["fetch"].pending) == (TaskStatus.READY, 0)
    assert (by_key["parse"].status, by_key["parse"].pending) == (TaskStatus.BLOCKED, 1)
    assert (by_key["store"].status, by_key["store"].pending) == (TaskStatus.BLOCKED, 2)


def test_build_copies_task_fields() -> None:
    """Capability, input, needs, timeout and retry (as a dict, or None) reach the Task."""
    _, tasks = build(parse_spec(GOOD), workflow_id="wf1", now=1.0)
    fetch, parse, _ = tasks
    assert (fetch.capability, fetch.input, fetch.retry) == ("echo", {"text": "hi"}, None)
    assert (parse.needs, parse.timeout) == (("fetch",), 30.0)
    assert parse.retry == {"max_attempts": 5, "initial_delay": 0.1}
    assert (parse.attempt, parse.workflow_id, parse.created_at) == (0, "wf1", 1.0)


def test_spec_is_immutable() -> None:
    """A parsed spec cannot be changed by accident."""
    spec = parse_spec(GOOD)
    assert isinstance(spec, WorkflowSpec)
    with pytest.raises(ValueError):
        spec.name = "other"  # type: ignore[misc]


def test_a_budget_is_kept_on_the_spec_and_the_workflow() -> None:
    """``budget: {usd, tokens}`` is parsed (either key optional) and built into the workflow."""
    text = "name: w\nbudget: {usd: 5, tokens: 2000000}\ntasks:\n  - {key: a, capability: c}\n"
    spec = parse_spec(text)
    assert spec.budget == Budget(usd=5.0, tokens=2_000_000)
    workflow, _ = build(spec, workflow_id="w1", now=1.0)
    assert workflow.budget == Budget(usd=5.0, tokens=2_000_000)
    assert parse_spec(yaml_tasks("{key: a, capability: c}")).budget is None


@pytest.mark.parametrize(
    ("budget", "problem"),
    [
        ("{usd: 0}", "budget.usd must be a positive number of US dollars, got 0"),
        ("{usd: -5}", "budget.usd must be a positive number of US dollars, got -5"),
        ("{usd: .nan}", "budget.usd must be a positive number of US dollars, got nan"),
        ("{usd: five}", "budget.usd must be a positive number of US dollars, got 'five'"),
        ("{tokens: 1.5}", "budget.tokens must be a positive whole number, got 1.5"),
        ("{tokens: 0}", "budget.tokens must be a positive whole number, got 0"),
        ("{tokens: true}", "budget.tokens must be a positive whole number, got True"),
        ("{}", "budget is empty; give usd and/or tokens"),
        ("{usd: 1, euros: 2}", "budget: unknown key(s) euros; allowed: usd, tokens"),
        ("5", "budget must be a mapping with usd and/or tokens, got 5"),
    ],
)
def test_a_budget_that_is_not_positive_is_one_clear_problem(budget: str, problem: str) -> None:
    """A bad budget is reported with the other problems, naming the value and what is allowed."""
    text = f"name: w\nbudget: {budget}\ntasks:\n  - {{key: a, capability: BAD}}\n"
    found = problems(text)
    assert problem in found
    assert any("capability 'BAD'" in p for p in found)
