"""Budgets enforced: a workflow whose spending (or its label's) reached its budget is held.

The hold is the workflow's own ``paused`` status with a ``hold_reason`` (``budget: spent $5.02
of $5.00``): a paused workflow's ready tasks are never dispatched (the Store's ready query reads
only running workflows), it is kept across leader changes because it is in the Store, the
events feed announces it like an operator's pause, and ``show`` and the control centre show the
reason with the status. Attempts already in flight finish and their usage still counts; the
workflow is never failed. It ends by an operator: the ``budget`` action raising the budget
(which resumes the workflow once it is within every budget again), ``cancel``, or ``resume``,
which is refused while the workflow is still over a budget (raise it first).

Where it is checked: after reports are applied, for the workflows whose attempts reported
usage in that round (one summing query for them, one per label with a budget that they carry),
and before dispatch, for ready tasks of workflows carrying a label already over its budget
(a workflow submitted after its label ran out starts nothing). A workflow with no budget and
no label costs one lookup, the first time it spends.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace

import structlog

from agentdeck.core.budgets import overspent
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.limits import CapabilityLimits
from agentdeck.core.models import Budget, Task, Workflow
from agentdeck.core.scheduler.followups import FollowUps
from agentdeck.core.states import WorkflowStatus
from agentdeck.core.usage import empty, label_key, sum_totals

log = structlog.get_logger(__name__)

W = WorkflowStatus
RELOADED = ""
"""Stands in :attr:`_budget_due` for "label budgets were reloaded: look at every label" (no
workflow id is empty), so the loop's next look holds what a lowered budget puts over."""
WORKFLOWS_SEEN = 10_000
"""Workflows whose labels and budget the checks remember (then they forget them all and read
again): one lookup per workflow, not one per round."""


class Budgets(FollowUps):
    """Checking spending against workflows' and labels' budgets, and holding what is over."""

    def reconfigure(
        self, limits: Mapping[str, CapabilityLimits], label_budgets: Mapping[str, Budget]
    ) -> list[str]:
        """Enforce new capability limits and label budgets from the next round on (a reload of
        the config file); what changed, one line per name (``capability_limits.llm``,
        ``budgets."team=search"``), empty when nothing did.

        A label now over its (lowered) budget holds its workflows at the next look, as at
        start; workflows a label held stay held when its budget is raised, until an operator
        resumes them (``resume`` checks the new budget)."""
        changes = _changes("capability_limits", "{}", self.config.limits, limits)
        changes += _changes("budgets", '"{}"', self.config.label_budgets, label_budgets)
        if not changes:
            return []
        self.config = replace(self.config, limits=dict(limits), label_budgets=dict(label_budgets))
        self.limiter.set_limits(limits)
        self._labels_over = None  # read every label with a budget again at the next look
        self._budget_due.add(RELOADED)
        self._maybe_ready = True  # a raised limit may let ready tasks go now
        self.wake()
        log.info("limits_reloaded", changes=changes)
        return changes

    async def _check_budgets(self, workflow_ids: Iterable[str]) -> list[str]:
        """Hold the running workflows of ``workflow_ids`` (and of any checked before that a
        failed round left) whose spending reached their budget or a label's; the ids held.
        A label found over its budget holds every running workflow carrying it."""
        self._budget_due.update(workflow_ids)
        if not self._budget_due:
            return []
        if RELOADED in self._budget_due:  # every label again, then the workflows over one
            self._budget_due.discard(RELOADED)
            if self.config.label_budgets:
                self._labels_over = None  # all of them, even if a dispatch read some since
                reloaded = await self._hold_labelled(await self._labels_now_over([]))
                return reloaded + await self._check_budgets(())
        # Labels and budgets from the cache: statuses may be stale, but a hold is a
        # compare-and-set from running, so a workflow no longer running is left alone.
        workflows = [await self._workflow(w) for w in sorted(self._budget_due)]
        if not any(w.budget is not None or w.labels for w in workflows):
            self._budget_due.clear()
            return []
        held = await self._hold_over_budget(workflows)
        newly_over = await self._labels_now_over(workflows)
        if newly_over:
            held += await self._hold_labelled(newly_over)
        self._budget_due.clear()
        return held

    async def _workflow(self, workflow_id: str) -> Workflow:
        """The workflow as last read, for its labels and budget (labels never change; this
        leader is the one that changes budgets, and forgets what it changes)."""
        workflow = self._workflows_seen.get(workflow_id)
        if workflow is None:
            if len(self._workflows_seen) >= WORKFLOWS_SEEN:
                self._workflows_seen.clear()  # bounded: read again what is still needed
            workflow = await self.store.get_workflow(workflow_id)
            self._workflows_seen[workflow_id] = workflow
        return workflow

    async def _hold_over_budget(self, workflows: Sequence[Workflow]) -> list[str]:
        """Hold those of ``workflows`` over their own budget or a label's known to be over."""
        with_budget = [w.id for w in workflows if w.budget is not None]
        spent = (
            {t.key: t for t in await self.store.usage_totals("workflow", workflow_ids=with_budget)}
            if with_budget
            else {}
        )
        held = []
        for w in workflows:
            reason = overspent(spent.get(w.id, empty(w.id)), w.budget) or self._label_reason(w)
            if reason and await self._hold_workflow(w.id, reason):
                held.append(w.id)
        return held

    def _label_reason(self, workflow: Workflow) -> str | None:
        """Why a label of ``workflow`` holds it, from the labels known to be over."""
        for name, value in sorted(workflow.labels.items()):
            reason = (self._labels_over or {}).get(label_key(name, value))
            if reason:
                return reason
        return None

    async def _labels_now_over(self, workflows: Sequence[Workflow]) -> dict[str, str]:
        """The labels with a budget that ``workflows`` carry which are over it now and were not
        before (all labels with a budget, on a new leader's first look)."""
        budgets = self.config.label_budgets
        if not budgets:
            return {}
        if self._labels_over is None:
            keys: Collection[str] = set(budgets)
            self._labels_over = {}
        else:
            keys = {label_key(n, v) for w in workflows for n, v in w.labels.items()} & set(budgets)
        found: dict[str, str] = {}
        for key in sorted(keys):
            total = sum_totals(await self.store.usage_totals("workflow", label=key), key)
            reason = overspent(total, budgets[key], f"label {key}")
            if reason is None:
                self._labels_over.pop(key, None)
            elif key not in self._labels_over:
                found[key] = reason
        self._labels_over.update(found)
        return found

    async def _hold_labelled(self, labels: dict[str, str]) -> list[str]:
        """Hold every running workflow carrying one of ``labels`` (label key -> reason)."""
        held = []
        for w in await self.store.list_workflows(status=[W.RUNNING], limit=1_000_000):
            reason = self._label_reason(w)
            if reason and await self._hold_workflow(w.id, reason):
                held.append(w.id)
        return held

    async def _hold_workflow(self, workflow_id: str, reason: str) -> bool:
        """Pause a running workflow with ``reason``; False if it was not running any more."""
        now = self.clock.now()
        if not await self.store.set_workflow_status(
            workflow_id, {W.RUNNING}, W.PAUSED, now, fence=self._fence, reason=reason
        ):
            return False
        log.warning("workflow_over_budget", workflow_id=workflow_id, reason=reason)
        await self.observers.workflow_changed(await self.store.get_workflow(workflow_id), now)
        return True

    async def _budget_admit(self, ready: Sequence[Task]) -> list[Task]:
        """``ready`` without the tasks of workflows a label over its budget holds (those
        workflows are held now). Reads labels only while some label is over; the caller
        calls it only when some label has a budget."""
        if self._labels_over is None:
            await self._labels_now_over([])
        if not self._labels_over:
            return list(ready)
        blocked: set[str] = set()
        for workflow_id in sorted({t.workflow_id for t in ready}):
            reason = self._label_reason(await self._workflow(workflow_id))
            if reason:
                blocked.add(workflow_id)
                await self._hold_workflow(workflow_id, reason)
        return [t for t in ready if t.workflow_id not in blocked]

    async def _over_budget(self, workflow: Workflow) -> str | None:
        """Why ``workflow`` is over its own budget or one of its labels', read from the Store
        now; None when it is within every budget."""
        if workflow.budget is not None:
            spent = await self.store.usage_totals("workflow", workflow_ids=[workflow.id])
            reason = overspent(sum_totals(spent, workflow.id), workflow.budget)
            if reason:
                return reason
        for name, value in sorted(workflow.labels.items()):
            key = label_key(name, value)
            budget = self.config.label_budgets.get(key)
            if budget is None:
                continue
            total = sum_totals(await self.store.usage_totals("workflow", label=key), key)
            reason = overspent(total, budget, f"label {key}")
            if reason:
                return reason
        return None

    def _must_be_within_budget(self, workflow: Workflow, reason: str | None) -> None:
        """Raise, saying why and what to do, when ``reason`` says ``workflow`` is over."""
        if reason is not None:
            raise AgentdeckError(
                f"workflow {workflow.id} is over its budget ({reason}); raise it first "
                f"(budget {workflow.id} usd=N or tokens=N)"
            )


def _changes(
    section: str, key: str, old: Mapping[str, object], new: Mapping[str, object]
) -> list[str]:
    """``section.<name>: old -> new`` for each name whose value differs (``-``: none)."""
    return [
        f"{section}.{key.format(name)}: {_shown(old.get(name))} -> {_shown(new.get(name))}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Budget):
        return " ".join(f"{k}={v}" for k, v in value.to_dict().items())
    if isinstance(value, CapabilityLimits):
        fields = ("requests_per_minute", "tokens_per_minute", "max_concurrency")
        return " ".join(f"{f}={getattr(value, f)}" for f in fields if getattr(value, f))
    return str(value)
