"""Budgets: how much a workflow, or all the workflows of a label, may spend.

A budget is ``usd`` and/or ``tokens`` (input + output, see :class:`core.models.Budget`).
A workflow's own comes from its spec (``budget: {usd: 5.0}``) and lives in its Store row; a
label's comes from settings (``[budgets."team=search"]``). When what was spent reaches a
budget, the scheduler pauses the workflow with the reason (:func:`overspent`), so no new
attempt starts; it is never failed. An operator raises the budget (the ``budget`` action,
which resumes a workflow its budget held once it is within it again) or cancels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

from agentdeck.core.models import JSON, Budget
from agentdeck.core.usage import UsageTotal

BUDGET_KEYS = ("usd", "tokens")
HOLD_PREFIX = "budget: "
"""How a workflow's hold reason starts when its budget (or a label's) holds it."""


def budget_from(data: Mapping[str, JSON], where: str = "budget") -> Budget:
    """The budget ``data`` writes (``usd``, ``tokens``, either optional but not both absent).

    Raises ValueError naming ``where``, the bad value and what is allowed: ``usd`` a positive
    finite number, ``tokens`` a positive whole number.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping with usd and/or tokens, got {data!r}")
    unknown = sorted(set(data) - set(BUDGET_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: usd, tokens")
    if not data:
        raise ValueError(f"{where} is empty; give usd and/or tokens")
    usd, tokens = data.get("usd"), data.get("tokens")
    if usd is not None and (
        isinstance(usd, bool)
        or not isinstance(usd, int | float)
        or not math.isfinite(usd)
        or usd <= 0
    ):
        raise ValueError(f"{where}.usd must be a positive number of US dollars, got {usd!r}")
    if tokens is not None and (
        isinstance(tokens, bool) or not _whole(tokens) or float(tokens) <= 0
    ):
        raise ValueError(f"{where}.tokens must be a positive whole number, got {tokens!r}")
    return Budget(
        usd=None if usd is None else float(usd),
        tokens=None if tokens is None else int(tokens),
    )


def _whole(value: object) -> bool:
    return isinstance(value, int) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )


def parse_budget_args(text: str | Iterable[str]) -> dict[str, JSON]:
    """The ``budget`` action's value, ``usd=10`` / ``tokens=3000000`` (several separated by
    spaces or commas), as the command's args; checked by :func:`budget_from`. Raises
    ValueError naming the bad part."""
    parts = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    data: dict[str, JSON] = {}
    for part in parts:
        name, eq, value = part.partition("=")
        if not eq or name not in BUDGET_KEYS:
            raise ValueError(f"budget value {part!r} is not usd=N or tokens=N")
        try:
            data[name] = float(value) if name == "usd" else _int(value)
        except ValueError:
            raise ValueError(f"budget value {part!r}: {value!r} is not a number") from None
    budget_from(data, "budget")
    return data


def _int(text: str) -> int | float:
    number = float(text.replace("_", ""))
    return int(number) if number.is_integer() else number


def raised(current: Budget | None, args: Mapping[str, JSON]) -> Budget:
    """``current`` with the keys of ``args`` (checked) replaced."""
    new = budget_from(args, "budget")
    base = current or Budget()
    return replace(
        base,
        usd=new.usd if "usd" in args else base.usd,
        tokens=new.tokens if "tokens" in args else base.tokens,
    )


def overspent(spent: UsageTotal, budget: Budget | None, whose: str = "") -> str | None:
    """Why ``spent`` has reached ``budget`` (``budget: spent $5.02 of $5.00``), or None while
    it is within it. ``whose`` (``label team=search``) goes in the reason when given."""
    if budget is None:
        return None
    of = f" ({whose})" if whose else ""
    if budget.usd is not None and spent.cost_usd >= budget.usd:
        unpriced = f", {spent.unpriced} attempt(s) unpriced" if spent.unpriced else ""
        return f"{HOLD_PREFIX}spent ${spent.cost_usd:.2f} of ${budget.usd:.2f}{of}{unpriced}"
    if budget.tokens is not None and spent.tokens >= budget.tokens:
        return f"{HOLD_PREFIX}spent {spent.tokens:,} of {budget.tokens:,} tokens{of}"
    return None
