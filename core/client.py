"""What a person or script can ask of agentdeck: submit, look, and queue commands.

The CLI, the TUI and tests all go through :class:`Client`. It reads and writes the Store
directly (submitting is one insert), but changes to running work are queued as commands for the
scheduler leader, the one writer of task state; :meth:`Client.command` waits for the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from agentdeck.core.actions import ACTIONS, LEADER, Action, TargetKind, parse_action
from agentdeck.core.breakers import breaker_name
from agentdeck.core.budgets import parse_budget_args
from agentdeck.core.clock import Clock
from agentdeck.core.errors import AgentdeckError, NotFound
from agentdeck.core.holds import check_capability
from agentdeck.core.models import JSON, Command, CommandStatus, Task, TaskEvent, Workflow, new_id
from agentdeck.core.ports import Store
from agentdeck.core.spec import SpecLimits, WorkflowSpec, build, load_spec, parse_spec
from agentdeck.core.states import WORKFLOW_TERMINAL
from agentdeck.core.usage import USAGE_GROUPS, UsageTotal, by_label


class CommandTimeout(AgentdeckError):
    """No scheduler carried out a command in time (is a daemon running?)."""


class Client:
    """A handle on one agentdeck deployment's Store."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        limits: SpecLimits | None = None,
        actor: str = "",
        on_submit: Callable[[], None] | None = None,
        poll: float = 0.05,
    ) -> None:
        self.store, self.clock = store, clock
        self.limits = limits or SpecLimits()
        self.actor = actor
        self._on_submit = on_submit or (lambda: None)
        self._poll = poll

    async def submit(self, spec: WorkflowSpec) -> Workflow:
        """Write a validated workflow and all its tasks in one transaction."""
        workflow, tasks = build(spec, workflow_id=new_id(), now=self.clock.now())
        await self.store.create_workflow(workflow, tasks)
        self._on_submit()
        return workflow

    async def submit_text(self, text: str, fmt: str | None = None) -> Workflow:
        """Parse, validate and submit a spec given as YAML or JSON text (SpecError if invalid)."""
        return await self.submit(parse_spec(text, fmt=fmt, limits=self.limits))  # type: ignore[arg-type]

    async def submit_file(self, path: str | Path) -> Workflow:
        """Parse, validate and submit a spec file (SpecError if invalid, nothing written)."""
        return await self.submit(load_spec(path, self.limits))

    async def wait(self, workflow_id: str, timeout: float | None = None) -> Workflow:
        """Until the workflow has finished (succeeded, failed or cancelled)."""
        async with asyncio.timeout(timeout):
            while True:
                workflow = await self.store.get_workflow(workflow_id)
                if workflow.status in WORKFLOW_TERMINAL:
                    return workflow
                await asyncio.sleep(self._poll)

    async def command(
        self, action: str, target: str, value: str | None = None, *, wait: float | None = 10.0
    ) -> Command:
        """Queue ``action`` on ``target`` (with ``value``, for an action that takes one, such as
        ``budget``'s ``usd=10``) and, unless ``wait`` is None, wait that long for the scheduler
        to carry it out.

        The target is checked by what the action's row of :data:`~agentdeck.core.actions.ACTIONS`
        says it names, and the value by the action, before anything is queued. Raises
        AgentdeckError naming the known actions for an unknown one, NotFound for a workflow or
        task that does not exist, AgentdeckError for a malformed target or value (or a value
        given to an action that takes none), CommandTimeout if nobody carried the command out.
        """
        spec = ACTIONS[parse_action(action)]
        args = self._check_value(spec.action, spec.value, value)
        target = await self._check_target(spec.target, action, target)
        command = Command(new_id(), action, target, self.clock.now(), actor=self.actor, args=args)
        await self.store.add_command(command)
        self._on_submit()
        if wait is None:
            return command
        try:
            async with asyncio.timeout(wait):
                while True:
                    current = await self.store.get_command(command.id)
                    if current.status != CommandStatus.PENDING:
                        return current
                    await asyncio.sleep(self._poll)
        except TimeoutError:
            raise CommandTimeout(
                f"{action} {target} is queued but no scheduler carried it out within "
                f"{wait:g}s; it runs when a daemon starts (agentdeck --daemon)"
            ) from None

    @staticmethod
    def _check_value(action: Action, form: str | None, value: str | None) -> dict[str, JSON]:
        """The command's args for ``value``, or an error naming what the action takes."""
        if form is None:
            if value is not None:
                raise AgentdeckError(f"{action.value} takes no value (got {value!r})")
            return {}
        if value is None:
            raise AgentdeckError(f"{action.value} needs a value: {form}")
        try:
            return parse_budget_args(value)
        except ValueError as exc:
            raise AgentdeckError(str(exc)) from None

    async def _check_target(self, kind: TargetKind, action: str, target: str) -> str:
        """``target`` as the command carries it (a breaker's full name, a workflow's full id),
        or an error saying what is wrong with it."""
        if kind is TargetKind.BREAKER:
            return breaker_name(target)
        if kind is TargetKind.CAPABILITY:
            check_capability(target)
            return target
        if kind is TargetKind.NODE:
            if not target or any(c.isspace() for c in target):
                raise AgentdeckError(
                    f"{action} target {target!r} is not a node name; use {LEADER!r} or the "
                    "leading node's name"
                )
            return target
        if kind in (TargetKind.AGENT, TargetKind.DEAD_LETTER):
            if not target or any(c.isspace() for c in target):
                raise AgentdeckError(f"{action} target {target!r} is not an id")
            return target
        found = await self.resolve(target)
        if kind is TargetKind.WORKFLOW and not isinstance(found, Workflow):
            raise AgentdeckError(f"{action} takes a workflow id, not task {target!r}")
        return found.id

    async def resolve(self, target: str) -> Workflow | Task:
        """The workflow or task a target names; a unique id prefix of a workflow works too."""
        if "/" in target:
            return await self.store.get_task(target)
        try:
            return await self.store.get_workflow(target)
        except NotFound:
            matches = [
                w for w in await self.store.list_workflows(limit=10_000) if w.id.startswith(target)
            ]
            if len(matches) == 1:
                return matches[0]
            raise NotFound(
                f"no workflow or task {target!r}"
                + (f" ({len(matches)} workflows start with it)" if matches else "")
            ) from None

    async def usage(self, by: str = "workflow", *, since: float | None = None) -> list[UsageTotal]:
        """What attempts spent, one total per ``by`` (``workflow``, ``task``, ``capability``,
        ``model`` or ``label``), sorted by key, from ``since`` on when given. A label's total
        sums those of the workflows carrying it. Raises AgentdeckError naming the groupings for
        another ``by``."""
        group = "workflow" if by == "label" else by
        try:
            totals = await self.store.usage_totals(group, since=since)  # type: ignore[arg-type]
        except ValueError:
            raise AgentdeckError(
                f"cannot sum usage by {by!r}; by: {', '.join((*USAGE_GROUPS, 'label'))}"
            ) from None
        if by != "label":
            return totals
        workflows = {}
        for total in totals:
            try:
                workflows[total.key or ""] = await self.store.get_workflow(total.key or "")
            except NotFound:
                continue
        return by_label(totals, workflows)

    async def history(self, task_id: str) -> list[TaskEvent]:
        """A task's event history, oldest first."""
        return await self.store.task_events(task_id)
