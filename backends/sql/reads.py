"""The read half of the Store port, written once for every SQL store.

A store subclasses :class:`SqlReads`, names its :class:`~backends.sql.dialect.Dialect` and
gives two primitives: :meth:`SqlReads._rows` (run a query, return its rows) and
:meth:`SqlReads._tasks` (run a query over :data:`~backends.sql.codec.TASK_COLUMNS`, return
Tasks). Every statement here is plain SQL both engines run; what they spell differently comes
from the dialect. The listings' orders, ties included, are part of the contract: both engines
return the same rows in the same order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import Any, ClassVar

from agentdeck.backends._checks import check_page, task_order
from agentdeck.backends.sql.codec import (
    COMMAND_COLUMNS,
    EVENT_COLUMNS,
    TASK_COLUMNS,
    USAGE_COLUMNS,
    WORKFLOW_COLUMNS,
    Row,
    columns,
    command_from_row,
    event_from_row,
    loads_or_none,
    usage_from_row,
    workflow_from_row,
)
from agentdeck.backends.sql.dialect import Dialect, Params, task_filter
from agentdeck.core.errors import NotFound
from agentdeck.core.models import JSON, AttemptUsage, Command, Task, TaskEvent, Workflow
from agentdeck.core.states import TaskStatus, WorkflowStatus
from agentdeck.core.usage import UsageGroup, UsageTotal, check_group

__all__ = ["OPEN_STATUSES_SQL", "SqlReads"]

#: The statuses of a task not yet final, as SQL: the predicate of the partial index
#: ``tasks_open`` in both stores' schemas, written there as the same literal text (a test
#: holds them equal), since a partial index serves only a query whose condition matches it.
OPEN_STATUSES_SQL = "('blocked', 'ready', 'dispatched', 'running', 'retrying')"

_TASKS = columns(TASK_COLUMNS)
_T_TASKS = columns(TASK_COLUMNS, "t.")
_WORKFLOWS = columns(WORKFLOW_COLUMNS)
_EVENTS = columns(EVENT_COLUMNS)
_COMMANDS = columns(COMMAND_COLUMNS)


_USAGE_KEYS: dict[str, str] = {
    "workflow": "u.workflow_id",
    "task": "u.task_id",
    "capability": "t.capability",
    "model": "u.model",
}


class SqlReads(ABC):
    """The Store port's reads over :meth:`_rows` and :meth:`_tasks`."""

    _dialect: ClassVar[Dialect]

    @abstractmethod
    async def _rows(self, op: str, sql: str, params: Sequence[Any]) -> list[Row]:
        """The rows of one query (``op`` names the port method, for error messages)."""

    @abstractmethod
    async def _tasks(self, op: str, sql: str, params: Sequence[Any]) -> list[Task]:
        """The rows of one query over :data:`TASK_COLUMNS`, as Tasks."""

    def _params(self) -> Params:
        return Params(self._dialect)

    # ---------------------------------------------------------------------- workflows

    async def _by_id(self, table: str, select: str, record_id: str) -> Row:
        """The row of ``table`` with id ``record_id``. Raises NotFound naming the record."""
        p = self._params()
        sql = f"SELECT {select} FROM {table}s WHERE id = {p(record_id)}"
        rows = await self._rows(f"get_{table}", sql, p.values)
        if not rows:
            raise NotFound(f"{table} {record_id!r} not found")
        return rows[0]

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """One workflow. Raises NotFound."""
        return workflow_from_row(await self._by_id("workflow", _WORKFLOWS, workflow_id))

    async def list_workflows(
        self,
        *,
        status: Collection[WorkflowStatus] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Workflow]:
        """Workflows, newest first (ties: last written first)."""
        check_page(limit, offset)
        p = self._params()
        where = ""
        if status is not None:
            where = "WHERE " + p.any_of("status", [WorkflowStatus(s).value for s in status])
        sql = (
            f"SELECT {_WORKFLOWS} FROM workflows {where} "
            f"ORDER BY created_at DESC, {self._dialect.insertion_order} DESC "
            f"LIMIT {p(limit)} OFFSET {p(offset)}"
        )
        return [workflow_from_row(r) for r in await self._rows("list_workflows", sql, p.values)]

    async def count_workflows(self) -> dict[WorkflowStatus, int]:
        """How many workflows are in each status (absent: none)."""
        sql = "SELECT status, COUNT(*) FROM workflows GROUP BY status"
        return {WorkflowStatus(s): n for s, n in await self._rows("count_workflows", sql, ())}

    # -------------------------------------------------------------------------- tasks

    async def get_task(self, task_id: str) -> Task:
        """One task. Raises NotFound."""
        p = self._params()
        tasks = await self._tasks(
            "get_task", f"SELECT {_TASKS} FROM tasks WHERE id = {p(task_id)}", p.values
        )
        if not tasks:
            raise NotFound(f"task {task_id!r} not found")
        return tasks[0]

    async def list_tasks(
        self,
        *,
        workflow_id: str | None = None,
        status: Collection[TaskStatus] | None = None,
        capability: str | None = None,
        agent_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str | None = None,
        descending: bool = False,
    ) -> list[Task]:
        """Tasks matching every filter given, oldest first (by creation, then key), or by
        ``sort`` first (see :meth:`core.ports.Store.list_tasks`)."""
        check_page(limit, offset)
        order = task_order(sort, descending)
        p = self._params()
        where = task_filter(p, workflow_id, status, capability, agent_id)
        sql = (
            f"SELECT {_TASKS} FROM tasks {where} ORDER BY {order} "
            f"LIMIT {p(limit)} OFFSET {p(offset)}"
        )
        return await self._tasks("list_tasks", sql, p.values)

    async def total_tasks(
        self,
        *,
        workflow_id: str | None = None,
        status: Collection[TaskStatus] | None = None,
        capability: str | None = None,
        agent_id: str | None = None,
    ) -> int:
        """How many tasks match every filter given (what :meth:`list_tasks` pages through)."""
        p = self._params()
        where = task_filter(p, workflow_id, status, capability, agent_id)
        rows = await self._rows("total_tasks", f"SELECT COUNT(*) FROM tasks {where}", p.values)
        return int(rows[0][0])

    async def count_by_capability(
        self, status: Collection[TaskStatus]
    ) -> dict[str, dict[TaskStatus, int]]:
        """For each capability with tasks in one of ``status``, how many are in each."""
        p = self._params()
        where = p.any_of("status", [TaskStatus(s).value for s in status])
        sql = (
            f"SELECT capability, status, COUNT(*) FROM tasks WHERE {where} "
            "GROUP BY capability, status"
        )
        counts: dict[str, dict[TaskStatus, int]] = {}
        for capability, state, n in await self._rows("count_by_capability", sql, p.values):
            counts.setdefault(capability, {})[TaskStatus(state)] = n
        return counts

    async def count_tasks(self, workflow_ids: Collection[str]) -> dict[str, dict[TaskStatus, int]]:
        """For each given workflow that exists, how many of its tasks are in each status
        (statuses with none are absent; a workflow without tasks maps to ``{}``)."""
        if not workflow_ids:
            return {}
        p = self._params()
        sql = (
            "SELECT w.id, t.status, COUNT(t.id) FROM workflows AS w "
            "LEFT JOIN tasks AS t ON t.workflow_id = w.id "
            f"WHERE {p.any_of('w.id', workflow_ids)} GROUP BY w.id, t.status"
        )
        counts: dict[str, dict[TaskStatus, int]] = {}
        for workflow_id, status, n in await self._rows("count_tasks", sql, p.values):
            by_status = counts.setdefault(workflow_id, {})
            if status is not None:
                by_status[TaskStatus(status)] = n
        return counts

    async def with_open_tasks(self, workflow_ids: Collection[str]) -> set[str]:
        """Those of ``workflow_ids`` that have a task not yet final (blocked, ready, in
        flight or retrying): the workflows that cannot have finished.

        One probe of the partial index ``tasks_open`` per workflow, which holds only open
        tasks: the cost does not grow with the workflow's finished tasks, as a count would."""
        if not workflow_ids:
            return set()
        p = self._params()
        # The literal list (not a parameter) is the index's predicate, so the planner uses it.
        sql = (
            "SELECT w.id FROM workflows AS w "
            f"WHERE {p.any_of('w.id', workflow_ids)} AND EXISTS ("
            "SELECT 1 FROM tasks AS t WHERE t.workflow_id = w.id "
            f"AND t.status IN {OPEN_STATUSES_SQL})"
        )
        return {
            workflow_id for (workflow_id,) in await self._rows("with_open_tasks", sql, p.values)
        }

    async def ready_tasks(self, *, limit: int, hold: Collection[str] = ()) -> list[Task]:
        """Up to ``limit`` ``ready`` tasks of ``running`` workflows whose capability is not in
        ``hold``, oldest first (by creation, then id)."""
        check_page(limit)
        p = self._params()
        # The literal 'ready' (not a parameter) lets the planner use the partial tasks_ready.
        sql = (
            f"SELECT {_T_TASKS} FROM tasks AS t JOIN workflows AS w ON w.id = t.workflow_id "
            "WHERE t.status = 'ready' AND w.status = 'running' "
            f"AND NOT ({p.any_of('t.capability', hold)}) "
            f"ORDER BY t.created_at, t.id LIMIT {p(limit)}"
        )
        return await self._tasks("ready_tasks", sql, p.values)

    async def due_tasks(self, now: float, *, limit: int = 500) -> list[Task]:
        """Tasks whose time has come, soonest due first: ``retrying`` with ``not_before <=
        now``, and ``dispatched``/``running`` with ``deadline <= now``."""
        check_page(limit)
        p = self._params()
        # Two branches, each served by its own partial index, rather than one OR.
        sql = (
            f"SELECT {_TASKS} FROM ("
            f"SELECT {_TASKS}, not_before AS due FROM tasks "
            f"WHERE status = 'retrying' AND not_before <= {p(now)} "
            "UNION ALL "
            f"SELECT {_TASKS}, deadline AS due FROM tasks "
            f"WHERE status IN ('dispatched', 'running') AND deadline <= {p(now)}"
            f") AS due_tasks ORDER BY due, id LIMIT {p(limit)}"
        )
        return await self._tasks("due_tasks", sql, p.values)

    async def outputs(self, task_ids: Collection[str]) -> dict[str, JSON]:
        """The outputs of the given tasks that exist (None for a task without one)."""
        if not task_ids:
            return {}
        p = self._params()
        sql = f"SELECT id, output FROM tasks WHERE {p.any_of('id', task_ids)}"
        rows = await self._rows("outputs", sql, p.values)
        return {task_id: loads_or_none(output) for task_id, output in rows}

    # -------------------------------------------------------------------------- usage

    async def usage_totals(
        self,
        group_by: UsageGroup,
        *,
        since: float | None = None,
        workflow_ids: Collection[str] | None = None,
        label: str | None = None,
    ) -> list[UsageTotal]:
        """What attempts spent, one total per group, sorted by key (None last); see
        :meth:`core.ports.Store.usage_totals`."""
        key = _USAGE_KEYS[check_group(group_by)]
        p = self._params()
        joins, clauses = "", []
        if group_by == "capability":
            joins += " JOIN tasks AS t ON t.id = u.task_id"
        if since is not None:
            clauses.append(f"u.at >= {p(float(since))}")
        if workflow_ids is not None:
            clauses.append(p.any_of("u.workflow_id", list(workflow_ids)))
        if label is not None:
            name, eq, value = label.partition("=")
            if not eq or not name:
                raise ValueError(f"label {label!r} is not name=value")
            joins += " JOIN workflows AS w ON w.id = u.workflow_id"
            clauses.append(p.has_label("w.labels", name, value))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # SUM of no known cost is NULL (read as 0); the unknown ones are counted apart.
        sql = (
            f"SELECT {key}, COUNT(*), SUM(u.input_tokens), SUM(u.output_tokens), "
            "SUM(u.cache_creation_input_tokens), SUM(u.cache_read_input_tokens), "
            "SUM(u.cost_usd), SUM(CASE WHEN u.cost_usd IS NULL THEN 1 ELSE 0 END) "
            f"FROM attempt_usage AS u{joins} {where} GROUP BY {key}"
        )
        rows = await self._rows("usage_totals", sql, p.values)
        totals = [
            UsageTotal(
                key=r[0],
                attempts=int(r[1]),
                input_tokens=int(r[2]),
                output_tokens=int(r[3]),
                cache_creation_input_tokens=int(r[4]),
                cache_read_input_tokens=int(r[5]),
                cost_usd=float(r[6] or 0.0),
                unpriced=int(r[7]),
            )
            for r in rows
        ]
        # Sorted here: the engines place NULL differently.
        return sorted(totals, key=lambda t: (t.key is None, t.key or ""))

    async def dump_usage(
        self, *, after: tuple[str, int] = ("", 0), limit: int = 1000
    ) -> list[AttemptUsage]:
        """Up to ``limit`` usage records after ``after`` (task id by bytes, then attempt)."""
        check_page(limit)
        p, collate = self._params(), self._dialect.byte_order
        task_id, attempt = after
        sql = (
            f"SELECT {columns(USAGE_COLUMNS)} FROM attempt_usage "
            f"WHERE task_id > {p(task_id)}{collate} "
            f"OR (task_id = {p(task_id)} AND attempt > {p(attempt)}) "
            f"ORDER BY task_id{collate}, attempt LIMIT {p(limit)}"
        )
        return [usage_from_row(r) for r in await self._rows("dump_usage", sql, p.values)]

    # ------------------------------------------------------------------------- events

    async def task_events(self, task_id: str) -> list[TaskEvent]:
        """A task's history, oldest first (empty for an unknown task)."""
        p = self._params()
        sql = f"SELECT {_EVENTS} FROM task_events WHERE task_id = {p(task_id)} ORDER BY seq"
        return [event_from_row(r) for r in await self._rows("task_events", sql, p.values)]

    async def events_since(
        self, seq: int, *, workflow_id: str | None = None, limit: int = 1000
    ) -> list[TaskEvent]:
        """Events with ``seq`` greater than the one given, in order; they commit in this
        order, so polling from the last seq seen misses nothing.

        With ``workflow_id`` the events after ``seq`` are read in order and the other
        workflows' skipped: no index by workflow (each event would pay an entry in it, and
        nothing in agentdeck asks by workflow), so a poller reads what it would read anyway."""
        check_page(limit)
        p = self._params()
        where = f"seq > {p(seq)}"
        if workflow_id is not None:
            where += f" AND workflow_id = {p(workflow_id)}"
        sql = f"SELECT {_EVENTS} FROM task_events WHERE {where} ORDER BY seq LIMIT {p(limit)}"
        return [event_from_row(r) for r in await self._rows("events_since", sql, p.values)]

    # ----------------------------------------------------------------------- commands

    async def pending_commands(self, limit: int = 100) -> list[Command]:
        """Commands not yet carried out, oldest first (ties: first queued first)."""
        check_page(limit)
        p = self._params()
        sql = (
            f"SELECT {_COMMANDS} FROM commands WHERE status = 'pending' "
            f"ORDER BY created_at, seq LIMIT {p(limit)}"
        )
        return [command_from_row(r) for r in await self._rows("pending_commands", sql, p.values)]

    async def get_command(self, command_id: str) -> Command:
        """One command. Raises NotFound."""
        return command_from_row(await self._by_id("command", _COMMANDS, command_id))

    async def list_commands(self, limit: int = 100, offset: int = 0) -> list[Command]:
        """The action log, newest first (ties: last queued first), a page at a time."""
        check_page(limit, offset)
        p = self._params()
        sql = (
            f"SELECT {_COMMANDS} FROM commands ORDER BY created_at DESC, seq DESC "
            f"LIMIT {p(limit)} OFFSET {p(offset)}"
        )
        return [command_from_row(r) for r in await self._rows("list_commands", sql, p.values)]

    async def count_commands(self) -> int:
        """How many commands the action log holds."""
        rows = await self._rows("count_commands", "SELECT count(*) FROM commands", ())
        return int(rows[0][0])

    # ---------------------------------------------------------------------- snapshots

    def _page(self, table: str, select: str, after: str, limit: int) -> tuple[str, list[Any]]:
        """One snapshot page of ``table``: rows whose id sorts after ``after``, by bytes."""
        check_page(limit)
        p, collate = self._params(), self._dialect.byte_order
        sql = (
            f"SELECT {select} FROM {table} WHERE id > {p(after)}{collate} "
            f"ORDER BY id{collate} LIMIT {p(limit)}"
        )
        return sql, p.values

    async def dump_workflows(self, *, after: str = "", limit: int = 1000) -> list[Workflow]:
        """Workflows whose id sorts after ``after``, by id (byte order)."""
        sql, params = self._page("workflows", _WORKFLOWS, after, limit)
        return [workflow_from_row(r) for r in await self._rows("dump_workflows", sql, params)]

    async def dump_tasks(self, *, after: str = "", limit: int = 1000) -> list[Task]:
        """Tasks whose id sorts after ``after``, by id (byte order)."""
        sql, params = self._page("tasks", _TASKS, after, limit)
        return await self._tasks("dump_tasks", sql, params)

    async def dump_commands(self, *, after: str = "", limit: int = 1000) -> list[Command]:
        """Commands whose id sorts after ``after``, by id (byte order)."""
        sql, params = self._page("commands", _COMMANDS, after, limit)
        return [command_from_row(r) for r in await self._rows("dump_commands", sql, params)]
