"""How an SQL engine spells what the shared statements need, and the parameters of one
statement.

The statements of :mod:`backends.sql.reads` are plain SQL both engines run; only three things
differ, and a :class:`Dialect` names them: how the n-th parameter is written, how "this column
is one of a list" is written (and how the list is passed), and two orderings.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from agentdeck.backends.sql.codec import TaskCodec
from agentdeck.core.states import TaskStatus

__all__ = ["Dialect", "Params", "task_filter"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one engine's SQL spells its own way."""

    placeholder: Callable[[int], str]
    """The n-th parameter (from 1): ``?1`` on SQLite, ``$1`` on PostgreSQL."""
    any_of: Callable[[str, str], str]
    """A condition true when ``column`` (first) is in the list bound to ``placeholder``."""
    list_value: Callable[[Iterable[str]], Any]
    """A list of strings as the one parameter :attr:`any_of` reads."""
    insertion_order: str
    """A column that grows as rows are written (ties of the newest-first listings)."""
    byte_order: str
    """What makes a text comparison or sort go by bytes (the snapshot pages), or ``""``."""
    tasks: TaskCodec
    """Tasks to and from this engine's rows."""
    has_label: Callable[[str, str, str], str]
    """A condition true when the JSON labels ``column`` (first) map the key bound to the
    second placeholder to the value bound to the third."""


class Params:
    """The parameters of one statement: each value added gives its placeholder, numbered in
    the order added, so the SQL text and the values cannot fall out of step."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        """Add ``value``; its placeholder."""
        self.values.append(value)
        return self._dialect.placeholder(len(self.values))

    def has_label(self, column: str, name: str, value: str) -> str:
        """A condition true when the labels ``column`` holds ``name`` = ``value``."""
        return self._dialect.has_label(column, self(name), self(value))

    def any_of(self, column: str, values: Iterable[str]) -> str:
        """A condition true when ``column`` is one of ``values`` (one parameter, any length)."""
        return self._dialect.any_of(column, self(self._dialect.list_value(values)))


def task_filter(
    p: Params,
    workflow_id: str | None,
    status: Collection[TaskStatus] | None,
    capability: str | None,
    agent_id: str | None,
) -> str:
    """The WHERE clause of the task list filters (``""`` for none), their values added to
    ``p``. Raises ValueError for a status that is not a TaskStatus."""
    clauses: list[str] = []
    for column, value in (
        ("workflow_id", workflow_id),
        ("capability", capability),
        ("agent_id", agent_id),
    ):
        if value is not None:
            clauses.append(f"{column} = {p(value)}")
    if status is not None:
        clauses.append(p.any_of("status", [TaskStatus(s).value for s in status]))
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""
