"""Usage totals: what attempts spent, summed by workflow, task, capability, model or label.

The Store keeps one row per attempt that reported usage (written with the attempt's result);
every total is a query over those rows (:meth:`core.ports.Store.usage_totals`), never a counter
kept by hand. A label's total is folded here from per-workflow totals and the workflows' labels.

Costs: a model missing from a price table reports tokens but no cost. A total sums the costs
that are known (``cost_usd``) and counts the attempts whose cost is not (``unpriced``): a
total of None would hide every known dollar behind one unknown attempt, and a bare sum would
hide that it is a lower bound. Readers show ``unpriced`` next to the cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from agentdeck.core.models import Workflow

UsageGroup = Literal["workflow", "task", "capability", "model"]
"""What :meth:`core.ports.Store.usage_totals` groups by."""
USAGE_GROUPS: tuple[str, ...] = get_args(UsageGroup)


def check_group(group_by: str) -> UsageGroup:
    """``group_by`` if the Store can group by it; ValueError naming the allowed ones."""
    if group_by not in USAGE_GROUPS:
        raise ValueError(
            f"cannot group usage by {group_by!r}; allowed: {', '.join(USAGE_GROUPS)} "
            "(by label: fold per-workflow totals with core.usage.by_label)"
        )
    return group_by  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """What the attempts of one group spent.

    ``key``: the workflow id, task id, capability, model or ``label=value`` (None: attempts
    whose model was not said). ``cost_usd`` sums the known costs; ``unpriced`` counts the
    attempts whose cost is unknown (so ``cost_usd`` is a lower bound when it is not 0).
    """

    key: str | None
    attempts: int
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cost_usd: float
    unpriced: int

    @property
    def tokens(self) -> int:
        """Input plus output tokens: what a token budget and ``tokens_per_minute`` count."""
        return self.input_tokens + self.output_tokens

    @property
    def total_tokens(self) -> int:
        """Every token counted, cache tokens included."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )

    def __add__(self, other: UsageTotal) -> UsageTotal:
        """Both summed, under this one's key."""
        if not isinstance(other, UsageTotal):
            return NotImplemented
        return UsageTotal(
            key=self.key,
            attempts=self.attempts + other.attempts,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=(
                self.cache_creation_input_tokens + other.cache_creation_input_tokens
            ),
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced=self.unpriced + other.unpriced,
        )


def empty(key: str | None) -> UsageTotal:
    """A total of nothing under ``key``."""
    return UsageTotal(key, 0, 0, 0, 0, 0, 0.0, 0)


def label_key(name: str, value: str) -> str:
    """How a label is written as a key: ``name=value``."""
    return f"{name}={value}"


def sum_totals(totals: Iterable[UsageTotal], key: str | None = None) -> UsageTotal:
    """Every total of ``totals`` summed under ``key``."""
    result = empty(key)
    for total in totals:
        result = result + total
    return result


def by_label(
    per_workflow: Iterable[UsageTotal], workflows: Mapping[str, Workflow]
) -> list[UsageTotal]:
    """Per-workflow totals folded by label, sorted by key: a workflow's total counts under each
    of its labels (``name=value``); workflows missing from ``workflows`` or without labels
    count under none."""
    folded: dict[str, UsageTotal] = {}
    for total in per_workflow:
        workflow = workflows.get(total.key or "")
        if workflow is None:
            continue
        for name, value in workflow.labels.items():
            key = label_key(name, value)
            folded[key] = folded.get(key, empty(key)) + total
    return [folded[k] for k in sorted(folded)]
