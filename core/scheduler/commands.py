"""Operator commands: queued by the client in the Store, carried out here by the leader.

:data:`HANDLERS` maps every :class:`~agentdeck.core.actions.Action` of the one table of actions
(core/actions.py) to the method that carries it out; a test walks the table. A command whose
action is unknown fails with the error :func:`~agentdeck.core.actions.parse_action` gives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from dataclasses import replace
from typing import Any

import structlog

from agentdeck.core.actions import LEADER, Action, parse_action
from agentdeck.core.budgets import HOLD_PREFIX, raised
from agentdeck.core.dag import descendants
from agentdeck.core.errors import AgentdeckError, ConfigError, LeaseLost, NotFound
from agentdeck.core.messages import Control, encode
from agentdeck.core.models import Change, Command, CommandStatus, Task
from agentdeck.core.scheduler.budgets import Budgets
from agentdeck.core.scheduler.config import OPEN_WORKFLOWS
from agentdeck.core.states import TaskStatus, WorkflowStatus

log = structlog.get_logger(__name__)

T = TaskStatus
W = WorkflowStatus
RETRYABLE = (T.FAILED, T.CANCELLED)
"""Task statuses an operator may retry."""
STANDBYS = "standbys read their own file when they lead, or at once on SIGHUP"
"""What the ``reload`` reply says of the other nodes (only the leader carries it out)."""


def retry_changes(tasks: Sequence[Task], keys: Set[str]) -> list[Change]:
    """The changes that retry the tasks ``keys`` of a workflow whose tasks are ``tasks``: each
    gets a fresh retry budget, and their dependents that were skipped or cancelled wait for
    them again (``ready`` when nothing they need is left unfinished, else ``blocked``)."""
    by_key = {t.key: t for t in tasks}
    graph = {t.key: t.needs for t in tasks}
    revived: set[str] = set(keys)
    for key in keys:
        revived |= {
            k for k in descendants(graph, key) if by_key[k].status in (T.SKIPPED, T.CANCELLED)
        }
    changes = []
    for key in sorted(revived):
        t = by_key[key]
        pending = sum(1 for n in t.needs if n in revived or by_key[n].status != T.SUCCEEDED)
        values: dict[str, Any] = {
            "pending": pending,
            "error": None,
            "output": None,
            "finished_at": None,
            "not_before": None,
        }
        if key in keys:
            values["first_attempt"] = t.attempt + 1
        changes.append(
            Change(
                t.id,
                T.READY if pending == 0 else T.BLOCKED,
                frozenset({t.status}),
                attempt=t.attempt,
                values=values,
                event="retried" if key in keys else None,
                detail={"by": "operator"},
            )
        )
    return changes


class Commands(Budgets):
    """Carrying out the operators' commands, one handler per action."""

    async def _run_commands(self) -> bool:
        commands = await self.store.pending_commands(limit=100)
        for command in commands:
            try:
                result = await self.execute(command)
                status = CommandStatus.DONE
            except LeaseLost:
                raise  # not this command's failure: it stays pending for the new leader
            except AgentdeckError as exc:
                result, status = str(exc), CommandStatus.FAILED
            finished = replace(command, status=status, result=result, finished_at=self.clock.now())
            await self.store.finish_command(finished)
            log.info(
                "command_done",
                action=command.action,
                target=command.target,
                status=status.value,
                result=result,
                actor=command.actor,
            )
            await self.observers.command_finished(finished)
        return bool(commands)

    async def execute(self, command: Command) -> str:
        """Carry out one operator command; returns what happened, raises AgentdeckError if it
        cannot be done (unknown action or target, wrong state, breakers off)."""
        return await HANDLERS[parse_action(command.action)](self, command)

    # ------------------------------------------------------------------ workflows

    async def _cancel(self, command: Command) -> str:
        return await self._cancel_workflow(command.target)

    async def _pause(self, command: Command) -> str:
        return await self._pause_workflow(command.target, pause=True)

    async def _resume(self, command: Command) -> str:
        return await self._pause_workflow(command.target, pause=False)

    async def _cancel_workflow(self, workflow_id: str) -> str:
        workflow = await self.store.get_workflow(workflow_id)
        now = self.clock.now()
        if not await self.store.set_workflow_status(
            workflow.id, OPEN_WORKFLOWS, W.CANCELLED, now, fence=self._fence
        ):
            raise AgentdeckError(
                f"workflow {workflow_id} is {workflow.status.value}; only running or paused "
                "workflows can be cancelled"
            )
        try:
            cancelled = await self._close_cancelled(workflow.id, now)
        except AgentdeckError:
            # The workflow is cancelled, its tasks maybe not: the next sweep, at once, does it.
            self._repair_cancelled, self._repair_due = True, now
            raise
        return f"cancelled workflow {workflow_id} ({cancelled} unfinished task(s) cancelled)"

    async def _pause_workflow(self, workflow_id: str, *, pause: bool) -> str:
        workflow = await self.store.get_workflow(workflow_id)
        if not pause and workflow.status == W.PAUSED:
            # Resumed over its budget it would start new attempts the budget forbids.
            self._must_be_within_budget(workflow, await self._over_budget(workflow))
        src, dst = (W.RUNNING, W.PAUSED) if pause else (W.PAUSED, W.RUNNING)
        if not await self.store.set_workflow_status(
            workflow.id, {src}, dst, self.clock.now(), fence=self._fence
        ):
            raise AgentdeckError(
                f"workflow {workflow_id} is {workflow.status.value}; only a {src.value} "
                f"workflow can be {'paused' if pause else 'resumed'}"
            )
        updated = await self.store.get_workflow(workflow_id)
        await self.observers.workflow_changed(updated, self.clock.now())
        self.wake()
        return f"{'paused' if pause else 'resumed'} workflow {workflow_id}"

    async def _budget(self, command: Command) -> str:
        """Set a workflow's budget (the keys given replace those it had); a workflow its budget
        held is resumed once it is within every budget, and stays held, saying why, if not."""
        workflow = await self.store.get_workflow(command.target)
        try:
            budget = raised(workflow.budget, command.args)
        except ValueError as exc:
            raise AgentdeckError(str(exc)) from None
        now = self.clock.now()
        await self.store.set_workflow_budget(workflow.id, budget, now, fence=self._fence)
        self._workflows_seen.pop(workflow.id, None)  # the budget checks read the new one
        shown = ", ".join(f"{k}={v}" for k, v in budget.to_dict().items())
        done = f"budget of workflow {workflow.id} set to {shown}"
        held = workflow.status == W.PAUSED and (workflow.hold_reason or "").startswith(HOLD_PREFIX)
        if not held:
            return done
        reason = await self._over_budget(await self.store.get_workflow(workflow.id))
        if reason is not None:
            return f"{done}; still held ({reason})"
        await self.store.set_workflow_status(
            workflow.id, {W.PAUSED}, W.RUNNING, now, fence=self._fence
        )
        await self.observers.workflow_changed(await self.store.get_workflow(workflow.id), now)
        self.wake()
        return f"{done}; resumed"

    # ---------------------------------------------------------------------- tasks

    async def _retry(self, command: Command) -> str:
        """Retry a failed/cancelled task, or every failed task of a workflow, with a fresh
        retry budget; dependents that were skipped wait for it again."""
        target = command.target
        if "/" in target:
            task = await self.store.get_task(target)
            workflow_id, keys = task.workflow_id, {task.key}
        else:
            workflow_id = (await self.store.get_workflow(target)).id
            keys = set()
        tasks = await self.store.list_tasks(workflow_id=workflow_id, limit=1_000_000)
        by_key = {t.key: t for t in tasks}
        if not keys:
            keys = {t.key for t in tasks if t.status in RETRYABLE}
            if not keys:
                raise AgentdeckError(f"workflow {workflow_id} has no failed or cancelled task")
        for key in keys:
            if by_key[key].status not in RETRYABLE:
                raise AgentdeckError(
                    f"task {by_key[key].id} is {by_key[key].status.value}; only failed or "
                    "cancelled tasks can be retried"
                )
        changes = retry_changes(tasks, keys)
        now = self.clock.now()
        await self.store.set_workflow_status(
            workflow_id, {W.FAILED, W.CANCELLED}, W.RUNNING, now, fence=self._fence
        )
        moved, _ = await self._apply(changes)
        self.wake()
        return f"retrying {len(keys)} task(s) of workflow {workflow_id} ({len(moved)} reset)"

    # ------------------------------------------------------------------- breakers

    async def _trip(self, command: Command) -> str:
        return await self._breaker(command, trip=True)

    async def _reset(self, command: Command) -> str:
        return await self._breaker(command, trip=False)

    async def _breaker(self, command: Command, *, trip: bool) -> str:
        if self.breakers is None:
            raise AgentdeckError(
                f"cannot {command.action} breaker {command.target}: circuit breakers are off "
                "on this scheduler node"
            )
        breakers = self.breakers
        state = await (breakers.trip if trip else breakers.reset)(command.target)
        return f"breaker {state.name} is {state.status.value}"

    # --------------------------------------------------------------------- agents

    async def _drain(self, command: Command) -> str:
        return await self._drain_agent(command.target, drain=True)

    async def _undrain(self, command: Command) -> str:
        return await self._drain_agent(command.target, drain=False)

    async def _drain_agent(self, agent_id: str, *, drain: bool) -> str:
        # The agent carries it out (agents/worker.py obeys drain/resume control messages); the
        # registry shows it as draining from its next heartbeat.
        if agent_id != "*" and agent_id not in {a.id for a in await self.registry.agents()}:
            raise NotFound(f"no live agent {agent_id!r}")
        order = Control(action="drain" if drain else "resume", target=agent_id, at=self.clock.now())
        await self.bus.publish_control(encode(order))  # a failure fails the command, visibly
        return f"{'drain' if drain else 'resume'} sent to agent {agent_id}"

    # --------------------------------------------------------- capabilities, queues

    async def _pause_capability(self, command: Command) -> str:
        return await self._hold_capability(command, pause=True)

    async def _resume_capability(self, command: Command) -> str:
        return await self._hold_capability(command, pause=False)

    async def _hold_capability(self, command: Command, *, pause: bool) -> str:
        changed = await self.holds.set(command.target, paused=pause, actor=command.actor)
        self._maybe_ready = True  # resuming may release ready tasks at once
        done = "paused" if pause else "resumed"
        return f"capability {command.target} {done}" + ("" if changed else " already")

    # --------------------------------------------------------------------- config

    async def _reload(self, command: Command) -> str:
        """Re-read this node's config file as SIGHUP does (the leader carries out commands, so
        a command naming another node fails, saying which one leads). A file that does not
        load fails the command with its error, the limits in force unchanged. The reply says
        that standbys read their own file when they take the lease (leadership.py)."""
        if command.target not in (LEADER, self.node):
            raise AgentdeckError(
                f"node {command.target!r} does not lead ({self.node} does) and only the leader "
                f"carries out commands: reload {LEADER}, or send SIGHUP to {command.target!r}"
            )
        if self.reload_config is None:
            raise AgentdeckError(
                f"node {self.node} has no config file to reload (it was not started by "
                "agentdeck --daemon or the control centre)"
            )
        try:
            changes = self.reload_config()
        except ConfigError as exc:
            raise AgentdeckError(f"{exc}; the limits in force on {self.node} are kept") from None
        done = f"reloaded the limits on {self.node} ({STANDBYS})"
        return f"{done}: " + ("; ".join(changes) or "nothing changed")

    async def _requeue(self, command: Command) -> str:
        await self.bus.requeue_dead_letter(command.target)
        return f"dead letter {command.target} requeued"


Handler = Callable[[Commands, Command], Awaitable[str]]
HANDLERS: Mapping[Action, Handler] = {
    Action.CANCEL: Commands._cancel,
    Action.PAUSE: Commands._pause,
    Action.RESUME: Commands._resume,
    Action.RETRY: Commands._retry,
    Action.TRIP: Commands._trip,
    Action.RESET: Commands._reset,
    Action.DRAIN: Commands._drain,
    Action.UNDRAIN: Commands._undrain,
    Action.PAUSE_CAPABILITY: Commands._pause_capability,
    Action.RESUME_CAPABILITY: Commands._resume_capability,
    Action.REQUEUE: Commands._requeue,
    Action.BUDGET: Commands._budget,
    Action.RELOAD: Commands._reload,
}
"""The method that carries out each action (every Action has one: tests walk the table)."""
