"""Workflows: the list (status, progress, age) and one workflow's DAG with its tasks."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from agentdeck.core.actions import Action
from agentdeck.core.dag import levels
from agentdeck.core.models import Task, Workflow
from agentdeck.core.states import TASK_TERMINAL, TaskStatus, WorkflowStatus
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.table import ago, spent
from agentdeck.tui.widgets.dag import DagMap
from agentdeck.tui.widgets.live_table import LiveTable

#: States a failure search stops at ("focus on failures").
TROUBLE = frozenset({TaskStatus.FAILED, TaskStatus.RETRYING, TaskStatus.CANCELLED})
WINDOW = 1000


def progress(done: int, total: int) -> str:
    """``7/10 ███████···`` — terminal tasks out of all, with a 10-cell bar."""
    filled = round(10 * done / total) if total else 0
    return f"{done}/{total} " + "█" * filled + "·" * (10 - filled)


class WorkflowsScreen(DeckScreen):
    """Every workflow, newest first: Enter opens its DAG."""

    crumb: ClassVar[str] = "Workflows"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "retry", "Retry failed"),
        Binding("x", "cancel", "Cancel"),
        Binding("P", "pause_resume", "Pause/resume"),
        Binding("B", "budget", "Budget", show=False),
        Binding("space", "tag", "Tag", show=False),
        Binding("u", "clear_tags", "Untag all", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.workflows: dict[str, Workflow] = {}

    def body(self) -> ComposeResult:
        """The workflow table."""
        yield LiveTable(
            ["id", "name", "status", "progress", "spent", "age"],
            render=self._cell_text,
            window=WINDOW,
            taggable=True,
            id="workflows",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        return self.status_text(value) if column == 2 else str(value)

    async def reload(self) -> None:
        """Read the window of workflows the table shows (newest first), how many there are,
        and their task counts; sorted or ``/``-filtered, the newest ``WINDOW`` whole."""
        store = self.sources.store
        now = self.sources.clock.now()
        table = self.query_one(LiveTable)
        whole = table.sort_column is not None or bool(table.filter_text)
        if whole:
            workflows = await store.list_workflows(limit=WINDOW)
        else:
            offset, limit = table.page
            total = sum((await store.count_workflows()).values())
            offset = max(0, min(offset, total - limit))
            workflows = await store.list_workflows(limit=limit, offset=offset)
        ids = [w.id for w in workflows]
        counts = await store.count_tasks(ids) if workflows else {}
        usage = (
            {u.key: u for u in await store.usage_totals("workflow", workflow_ids=ids)}
            if workflows
            else {}
        )
        self.workflows = {w.id: w for w in workflows}
        rows = []
        for w in workflows:
            done = sum(n for s, n in counts.get(w.id, {}).items() if s in TASK_TERMINAL)
            rows.append(
                (
                    w.id,
                    (
                        w.id,
                        w.name,
                        w.status.value,
                        progress(done, w.task_count),
                        spent(usage.get(w.id)),
                        ago(w.created_at, now),
                    ),
                )
            )
        if whole:
            table.sync(rows)
        else:
            table.sync_page(rows, offset, total)
        self.add_completions(f"wf {w.id}" for w in workflows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter: open the workflow's DAG."""
        if event.row_key.value:
            self.open(WorkflowScreen(event.row_key.value))

    def action_retry(self) -> None:
        """Retry every failed task of the selected workflow(s)."""
        self.request(Action.RETRY, self.selected_keys(), "failed tasks of workflow")

    def action_cancel(self) -> None:
        """Cancel the selected workflow(s)."""
        self.request(Action.CANCEL, self.selected_keys(), "workflow")

    def action_pause_resume(self) -> None:
        """Pause a running workflow, resume a paused one."""
        targets = self.selected_keys()
        paused = [t for t in targets if self._is_paused(t)]
        if paused:
            self.request(Action.RESUME, paused, "workflow")
        else:
            self.request(Action.PAUSE, targets, "workflow")

    def action_budget(self) -> None:
        """Set the budget of the selected workflow(s) (asks for usd=N and/or tokens=N)."""
        self.request(Action.BUDGET, self.selected_keys(), "workflow")

    def _is_paused(self, workflow_id: str) -> bool:
        w = self.workflows.get(workflow_id)
        return w is not None and w.status == WorkflowStatus.PAUSED


class WorkflowScreen(DeckScreen):
    """One workflow: a map of its DAG by level, and its tasks in level order."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "retry", "Retry"),
        Binding("x", "cancel", "Cancel wf"),
        Binding("P", "pause_resume", "Pause/resume"),
        Binding("B", "budget", "Budget", show=False),
        Binding("space", "tag", "Tag", show=False),
        Binding("u", "clear_tags", "Untag all", show=False),
        Binding("f", "failures", "Failures only", show=False),
        Binding("n", "next_failure", "Next failure"),
        Binding("z", "collapse", "Hide done", show=False),
    ]

    def __init__(self, workflow_id: str) -> None:
        super().__init__()
        self.workflow_id = workflow_id
        self.workflow: Workflow | None = None
        self.tasks: list[Task] = []
        self.only_failures = False
        self.hide_done = False
        self._depth: dict[str, int] = {}

    def crumb_text(self) -> str:
        """The workflow's name and short id."""
        name = self.workflow.name if self.workflow else ""
        return f"{name} {self.workflow_id}".strip()

    def body(self) -> ComposeResult:
        """Summary line, DAG map, task table."""
        yield Static(classes="summary", id="wf-summary")
        yield DagMap(id="dag")
        yield LiveTable(
            ["lvl", "task", "capability", "status", "att", "spent", "needs"],
            render=self._cell_text,
            window=WINDOW,
            taggable=True,
            id="wf-tasks",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        return self.status_text(value) if column == 3 else "-" if value is None else str(value)

    async def reload(self) -> None:
        """Read the workflow and all its tasks."""
        store = self.sources.store
        self.workflow = await store.get_workflow(self.workflow_id)
        self.tasks = await store.list_tasks(workflow_id=self.workflow_id, limit=1_000_000)
        usage = {
            u.key: u for u in await store.usage_totals("task", workflow_ids=[self.workflow_id])
        }
        if len(self._depth) != len(self.tasks):
            self._depth = levels({t.key: t.needs for t in self.tasks})
        w = self.workflow
        counts: dict[str, int] = {}
        for t in self.tasks:
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        summary = Text.assemble(
            self.status_text(w.status), f"  {w.name}  {len(self.tasks)} tasks  "
        )
        for status, n in sorted(counts.items()):
            summary.append(f"{status} {n}  ", style=self.deck.status_style(status))
        if usage:
            totals = list(usage.values())
            summary.append(f"spent {spent(sum(totals[1:], totals[0]))}  ")
        if w.hold_reason:
            summary.append(f"held: {w.hold_reason}  ", style=self.deck.status_style("retrying"))
        if self.only_failures or self.hide_done:
            summary.append(
                "[failures only]" if self.only_failures else "[done hidden]", style="bold"
            )
        self.query_one("#wf-summary", Static).update(summary)
        self.query_one(DagMap).show(self.tasks, self._depth, self.deck.status_style)
        shown = self.tasks
        if self.only_failures:
            shown = [t for t in shown if t.status in TROUBLE]
        elif self.hide_done:
            shown = [t for t in shown if t.status != TaskStatus.SUCCEEDED]
        shown = sorted(shown, key=lambda t: (self._depth.get(t.key, 0), t.key))
        self.query_one(LiveTable).sync(
            [
                (
                    t.id,
                    (
                        self._depth.get(t.key, 0),
                        t.key,
                        t.capability,
                        t.status.value,
                        t.attempt,
                        spent(usage.get(t.id)),
                        ",".join(t.needs) or "-",
                    ),
                )
                for t in shown
            ]
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter: open the task."""
        from agentdeck.tui.screens.tasks import TaskScreen

        if event.row_key.value:
            self.open(TaskScreen(event.row_key.value))

    def action_retry(self) -> None:
        """Retry the task under the cursor (or the tagged ones)."""
        self.request(Action.RETRY, self.selected_keys(), "task")

    def action_cancel(self) -> None:
        """Cancel this workflow."""
        self.request(Action.CANCEL, [self.workflow_id], "workflow")

    def action_pause_resume(self) -> None:
        """Pause this workflow, or resume it when paused."""
        paused = self.workflow is not None and self.workflow.status == WorkflowStatus.PAUSED
        self.request(Action.RESUME if paused else Action.PAUSE, [self.workflow_id], "workflow")

    def action_budget(self) -> None:
        """Set this workflow's budget (asks for usd=N and/or tokens=N)."""
        self.request(Action.BUDGET, [self.workflow_id], "workflow")

    async def action_failures(self) -> None:
        """Show only failed, retrying and cancelled tasks (again: show all)."""
        self.only_failures = not self.only_failures
        await self.reload()

    async def action_collapse(self) -> None:
        """Hide succeeded tasks (again: show them)."""
        self.hide_done = not self.hide_done
        await self.reload()

    def action_next_failure(self) -> None:
        """Move the cursor to the next failed, retrying or cancelled task (wrapping round)."""
        table = self.query_one(LiveTable)
        status = {t.id: t.status for t in self.tasks}
        keys = table.all_keys
        start = table.position
        for step in range(1, len(keys) + 1):
            i = (start + step) % len(keys)
            if status.get(keys[i]) in TROUBLE:
                table.goto(i)
                return
        self.notify("no failures in this workflow", timeout=2)
