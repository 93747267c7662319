"""Tasks: the filtered list (status, capability, workflow, agent) and one task's whole story."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from agentdeck.core.actions import Action
from agentdeck.core.errors import AgentdeckError
from agentdeck.core.holds import CapabilityHolds, Hold
from agentdeck.core.models import JSON, Task, TaskEvent
from agentdeck.core.ports import TASK_SORTS
from agentdeck.core.states import TaskStatus
from agentdeck.tui.holds import hold_line
from agentdeck.tui.screens.base import DeckScreen
from agentdeck.tui.screens.logs import LogsScreen
from agentdeck.tui.screens.traces import TraceScreen, task_trace_id
from agentdeck.tui.table import ago, spent, when
from agentdeck.tui.widgets.live_table import LiveTable

#: The most tasks read for a ``/``-filtered list (the table filters and sorts them itself).
SORT_LIMIT = 20_000
#: Lines of a running task's streamed output the task page shows (the newest).
OUTPUT_LINES = 40


def _row(t: Task, now: float) -> tuple[str, tuple[Any, ...]]:
    return (
        t.id,
        (t.id, t.capability, t.status.value, t.attempt, t.agent_id, ago(t.updated_at, now)),
    )


class TasksScreen(DeckScreen):
    """Tasks matching the filters, oldest first: Enter opens one, ``r`` retries."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "retry", "Retry"),
        Binding("space", "tag", "Tag"),
        Binding("u", "clear_tags", "Untag all", show=False),
        Binding("l", "logs", "Logs"),
        Binding("T", "trace", "Trace"),
    ]

    def __init__(
        self,
        status: Sequence[TaskStatus] = (),
        capability: str | None = None,
        workflow_id: str | None = None,
        agent_id: str | None = None,
    ) -> None:
        super().__init__()
        self.status, self.capability, self.workflow_id = list(status), capability, workflow_id
        self.agent_id = agent_id

    @classmethod
    def from_args(cls, args: Sequence[str]) -> Self:
        """``:tasks failed cap=echo wf=<id> agent=<id>``: statuses and filters, any order."""
        statuses: list[TaskStatus] = []
        capability = workflow = agent = None
        for arg in args:
            key, eq, value = arg.partition("=")
            if eq and key in ("cap", "capability"):
                capability = value
            elif eq and key in ("wf", "workflow"):
                workflow = value
            elif eq and key == "agent":
                agent = value
            elif arg in TaskStatus.__members__.values():
                statuses.append(TaskStatus(arg))
            else:
                raise AgentdeckError(
                    f"tasks: {arg!r} is not a filter; use a status "
                    f"({', '.join(TaskStatus)}), cap=<capability>, wf=<workflow id> or agent=<id>"
                )
        return cls(statuses, capability, workflow, agent)

    def crumb_text(self) -> str:
        """``Tasks failed cap=echo``."""
        parts = ["Tasks", *(s.value for s in self.status)]
        if self.capability:
            parts.append(f"cap={self.capability}")
        if self.workflow_id:
            parts.append(f"wf={self.workflow_id}")
        if self.agent_id:
            parts.append(f"agent={self.agent_id}")
        return " ".join(parts)

    def body(self) -> ComposeResult:
        """The task table (its columns are the Store's TASK_SORTS, in order)."""
        yield LiveTable(
            ["task", "capability", "status", "att", "agent", "updated"],
            render=self._cell_text,
            taggable=True,
            id="tasks",
        )

    def _cell_text(self, column: int, value: Any) -> str | Text:
        return self.status_text(value) if column == 2 else "-" if value is None else str(value)

    async def reload(self) -> None:
        """Read the window of matching tasks the table shows, and how many match in all.

        The list can hold every task there is, so the table holds only the rows on screen and
        the Store is asked for those (and a count), sorted by the Store too: two small queries
        whatever the size. A ``/`` filter (any cell containing the text) needs the whole list:
        then it is read (up to ``SORT_LIMIT``) and the table filters and sorts it."""
        now = self.sources.clock.now()
        store = self.sources.store
        table = self.query_one(LiveTable)
        filters: dict[str, Any] = {
            "status": self.status or None,
            "capability": self.capability,
            "workflow_id": self.workflow_id,
            "agent_id": self.agent_id,
        }
        if table.filter_text:
            table.sync([_row(t, now) for t in await store.list_tasks(**filters, limit=SORT_LIMIT)])
            return
        offset, limit = table.page
        total = await store.total_tasks(**filters)
        offset = max(0, min(offset, total - limit))
        sort: dict[str, Any] = {}
        if table.sort_column is not None:
            # The newest update is the smallest age: "updated" ascending is updated_at DESC.
            newest_first = table.sort_column == len(TASK_SORTS) - 1
            sort = {
                "sort": TASK_SORTS[table.sort_column],
                "descending": table.sort_reverse ^ newest_first,
            }
        tasks = await store.list_tasks(**filters, limit=limit, offset=offset, **sort)
        table.sync_page([_row(t, now) for t in tasks], offset, total)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter: open the task."""
        if event.row_key.value:
            self.open(TaskScreen(event.row_key.value))

    def action_retry(self) -> None:
        """Retry the tagged tasks, or the one under the cursor."""
        self.request(Action.RETRY, self.selected_keys(), "task")

    def action_logs(self) -> None:
        """Open the logs narrowed to the task under the cursor."""
        if task_id := self.query_one(LiveTable).cursor_key:
            self.open(LogsScreen(task=task_id))

    def action_trace(self) -> None:
        """Open the trace of the task under the cursor."""
        if task_id := self.query_one(LiveTable).cursor_key:
            self.open(TraceScreen(task_trace_id(task_id), task_id=task_id))


def _json(value: JSON) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def attempts(events: Sequence[TaskEvent]) -> list[dict[str, Any]]:
    """One entry per attempt from a task's history: agent, dispatched, started, ended, outcome,
    and the retry delay chosen after it."""
    out: dict[int, dict[str, Any]] = {}
    for e in events:
        if e.attempt < 1:
            continue
        a = out.setdefault(
            e.attempt,
            {
                "attempt": e.attempt,
                "agent": None,
                "dispatched": None,
                "started": None,
                "ended": None,
                "outcome": "",
                "delay": None,
            },
        )
        a["agent"] = e.agent_id or a["agent"]
        if e.kind == "dispatched":
            a["dispatched"] = e.at
        elif e.kind == "running":
            a["started"] = e.at
        elif e.kind in ("succeeded", "failed", "retrying", "cancelled"):
            a["ended"], a["outcome"] = e.at, e.kind
            if e.kind == "retrying" and e.detail.get("delay") is not None:
                a["delay"] = e.detail.get("delay")
    return [out[k] for k in sorted(out)]


class TaskScreen(DeckScreen):
    """One task: its input, its live progress and streamed output while it runs, its output or
    error, every attempt, its history."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "retry", "Retry"),
        Binding("l", "logs", "Logs"),
        Binding("T", "trace", "Trace"),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up", show=False),
        Binding("g", "scroll('home')", "Top", show=False),
        Binding("G", "scroll('end')", "Bottom", show=False),
    ]

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.task_record: Task | None = None

    def crumb_text(self) -> str:
        """The task's key."""
        return self.task_id.rpartition("/")[2]

    def body(self) -> ComposeResult:
        """A scrolling page of sections."""
        with VerticalScroll(id="task-detail"):
            yield Static(id="task-text")

    async def reload(self) -> None:
        """Read the task and its history."""
        store = self.sources.store
        task = self.task_record = await store.get_task(self.task_id)
        events = await store.task_events(self.task_id)
        now = self.sources.clock.now()
        held: list[Hold] = []
        if task.status in (TaskStatus.READY, TaskStatus.RETRYING):
            holds = CapabilityHolds(
                self.sources.registry,
                self.sources.clock,
                refresh=0,
                breakers=self.sources.breakers,
            )
            held = [h for h in await holds.holds() if h.capability == task.capability]
        text = Text()
        text.append(f"{task.id}  ", style="bold")
        text.append_text(self.status_text(task.status))
        text.append(
            f"\ncapability {task.capability}  attempt {task.attempt} "
            f"({task.attempts_used} in this budget)  timeout {task.timeout:g}s  "
            f"agent {task.agent_id or '-'}\n"
            f"needs {', '.join(task.needs) or '-'}  updated {ago(task.updated_at, now)} ago\n"
        )
        usage = [
            u
            for u in await store.usage_totals("task", workflow_ids=[task.workflow_id])
            if u.key == task.id
        ]
        if usage:
            u = usage[0]
            text.append(
                f"spent {spent(u)}: {u.input_tokens:,} in / {u.output_tokens:,} out tokens, "
                f"cache {u.cache_creation_input_tokens:,} written / "
                f"{u.cache_read_input_tokens:,} read, over {u.attempts} attempt(s)\n"
            )
        for hold in held:  # (the same sentence as `agentdeck show`)
            text.append(f"held {hold_line(hold, now)}\n", style=self.deck.status_style("paused"))
        self._live(text, task)
        if task.error is not None:
            text.append("\nError\n", style="bold")
            text.append(
                f"{task.error.kind}: {task.error.message}"
                f"{'' if task.error.retryable else ' (not retryable)'}\n",
                style=self.deck.status_style("failed"),
            )
        text.append("\nInput\n", style="bold")
        text.append(_json(task.input) + "\n")
        if task.output is not None:
            text.append("\nOutput\n", style="bold")
            text.append(_json(task.output) + "\n")
        text.append("\nAttempts\n", style="bold")
        rows = attempts(events)
        if not rows:
            text.append("none yet\n", style="dim")
        for a in rows:
            took = (
                f"{a['ended'] - (a['started'] or a['dispatched']):.2f}s"
                if a["ended"] is not None and (a["started"] or a["dispatched"]) is not None
                else "-"
            )
            delay = f"  then wait {a['delay']:.2f}s" if a["delay"] is not None else ""
            text.append(
                f"#{a['attempt']:<3} {a['agent'] or '-':<18} {when(a['dispatched'])}  "
                f"took {took:<8} {a['outcome'] or 'in flight'}{delay}\n"
            )
        text.append("\nHistory\n", style="bold")
        for e in events:
            move = f"{e.from_status or '-'} → {e.to_status or '-'}"
            detail = f"  {json.dumps(dict(e.detail), default=str)}" if e.detail else ""
            text.append(f"{when(e.at)}  #{e.attempt:<2} {e.kind:<11} {move:<24}{detail}\n")
        self.query_one("#task-text", Static).update(text)

    def _live(self, text: Text, task: Task) -> None:
        """What the task's current attempt reported while running: its newest progress (a bar,
        a percentage and its message) and the tail of its streamed output."""
        live = self.deck.feed.live.of(task.id)
        if live is None or live.attempt != task.attempt:
            return
        text.append(f"\nProgress (attempt {live.attempt}", style="bold")
        text.append(f", {live.agent_id})\n" if live.agent_id else ")\n", style="bold")
        text.append(live.bar())
        if live.message:
            text.append(f"  {live.message}")
        text.append("\n")
        if live.text:
            lines = live.lines(OUTPUT_LINES)
            cut = live.dropped or len(live.text.splitlines()) > len(lines)
            text.append("\nStreamed output", style="bold")
            text.append(" (the newest lines)\n" if cut else "\n", style="dim" if cut else "bold")
            text.append("\n".join(lines) + "\n")

    def action_retry(self) -> None:
        """Retry this task."""
        self.request(Action.RETRY, [self.task_id], "task")

    def action_logs(self) -> None:
        """Open the logs narrowed to this task."""
        self.open(LogsScreen(task=self.task_id))

    def action_trace(self) -> None:
        """Open this task's trace (its workflow's, with this task's spans marked)."""
        self.open(TraceScreen(task_trace_id(self.task_id), task_id=self.task_id))
