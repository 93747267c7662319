"""Budgets and usage totals as pure functions: parsing a budget, raising one, saying why
spending is over it, and folding per-workflow totals by label."""

from __future__ import annotations

import dataclasses

import pytest

from agentdeck.core.budgets import budget_from, overspent, parse_budget_args, raised
from agentdeck.core.models import Budget, Workflow
from agentdeck.core.states import WorkflowStatus
from agentdeck.core.usage import UsageTotal, by_label, check_group, empty, sum_totals


def spent(
    cost: float = 0.0, tokens_in: int = 0, tokens_out: int = 0, unpriced: int = 0
) -> UsageTotal:
    """A total with the given cost and tokens (cache tokens 1000 each, never counted)."""
    return UsageTotal("w1", 1, tokens_in, tokens_out, 1000, 1000, cost, unpriced)


def workflow(wid: str, **labels: str) -> Workflow:
    return Workflow(wid, wid, WorkflowStatus.RUNNING, 0.0, 0.0, 1, labels=labels)


def test_budget_from_keeps_either_key() -> None:
    """usd alone, tokens alone, or both; whole floats count as token numbers."""
    assert budget_from({"usd": 5}) == Budget(usd=5.0)
    assert budget_from({"tokens": 2e6}) == Budget(tokens=2_000_000)
    assert budget_from({"usd": 0.5, "tokens": 10}) == Budget(0.5, 10)


def test_parse_budget_args_reads_the_actions_value() -> None:
    """``usd=10 tokens=3_000_000`` (spaces or commas) becomes the command's args."""
    assert parse_budget_args("usd=10") == {"usd": 10.0}
    assert parse_budget_args("usd=2.5,tokens=3_000_000") == {"usd": 2.5, "tokens": 3_000_000}
    with pytest.raises(ValueError, match="budget value 'usd=ten': 'ten' is not a number"):
        parse_budget_args("usd=ten")
    with pytest.raises(ValueError, match=r"budget\.tokens must be a positive whole number"):
        parse_budget_args("tokens=0")
    with pytest.raises(ValueError, match="budget is empty"):
        parse_budget_args("")


def test_raised_replaces_only_the_keys_given() -> None:
    """A raise of usd keeps the token budget, and a workflow without one gets one."""
    assert raised(Budget(1.0, 100), {"usd": 2.0}) == Budget(2.0, 100)
    assert raised(None, {"tokens": 5}) == Budget(tokens=5)


def test_overspent_says_why_once_a_budget_is_reached() -> None:
    """At or over usd or tokens (input + output only), the reason; under both, None."""
    budget = Budget(usd=5.0, tokens=100)
    assert overspent(spent(4.99, 50, 49), budget) is None
    assert overspent(spent(5.0), budget) == "budget: spent $5.00 of $5.00"
    assert overspent(spent(5.02, unpriced=2), budget, "label team=a") == (
        "budget: spent $5.02 of $5.00 (label team=a), 2 attempt(s) unpriced"
    )
    assert overspent(spent(0.0, 60, 40), budget) == "budget: spent 100 of 100 tokens"
    assert overspent(spent(99.0), None) is None


def test_by_label_folds_workflow_totals_under_each_label() -> None:
    """Each workflow's total counts under each of its labels; unknown or unlabelled ones
    under none; sorted by label."""
    totals = [
        replace_key(spent(1.0), "w1"),
        replace_key(spent(2.0), "w2"),
        replace_key(spent(4.0), "w3"),
    ]
    workflows = {
        "w1": workflow("w1", team="a", env="prod"),
        "w2": workflow("w2", team="a"),
        "w3": workflow("w3"),
    }
    folded = by_label(totals, workflows)
    assert [(t.key, t.attempts, t.cost_usd) for t in folded] == [
        ("env=prod", 1, 1.0),
        ("team=a", 2, 3.0),
    ]


def test_sum_and_empty_totals() -> None:
    """Summing adds every count under the key given; the empty total adds nothing."""
    total = sum_totals([spent(1.0, 1, 2, unpriced=1), spent(2.0, 3, 4)], "all")
    assert total == UsageTotal("all", 2, 4, 6, 2000, 2000, 3.0, 1)
    assert (total.tokens, total.total_tokens) == (10, 4010)
    assert sum_totals([], "x") == empty("x")


def test_check_group_names_the_allowed_groupings() -> None:
    """Only workflow, task, capability and model are groupings the Store sums."""
    assert check_group("model") == "model"
    with pytest.raises(ValueError, match="allowed: workflow, task, capability, model"):
        check_group("agent")


def replace_key(total: UsageTotal, key: str) -> UsageTotal:
    return dataclasses.replace(total, key=key)
