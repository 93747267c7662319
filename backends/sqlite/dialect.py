"""How SQLite spells the shared statements (:data:`SQLITE`), and its own statements.

Lists travel as one JSON text parameter, read as ``IN (SELECT value FROM json_each(?))``: one
statement text for any length keeps the statement cache useful and avoids the bound-variable
limit. ``needs`` is stored as a JSON list.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from agentdeck.backends.sql.codec import (
    COMMAND_COLUMNS,
    EVENT_COLUMNS,
    EVENT_INSERT_COLUMNS,
    TASK_COLUMNS,
    USAGE_COLUMNS,
    WORKFLOW_COLUMNS,
    TaskCodec,
    columns,
    dumps,
)
from agentdeck.backends.sql.dialect import Dialect

__all__ = [
    "INSERT_COMMAND",
    "INSERT_EVENT",
    "INSERT_EVENT_WITH_SEQ",
    "INSERT_TASK",
    "INSERT_USAGE",
    "INSERT_USAGE_AS_GIVEN",
    "INSERT_WORKFLOW",
    "SQLITE",
    "TASKS",
    "in_list",
    "json_list",
]


def json_list(values: Iterable[str]) -> str:
    """A list as the one JSON parameter :func:`in_list` reads."""
    return json.dumps(list(values))


def in_list(column: str, placeholder: str) -> str:
    """``column`` is one of the JSON list bound to ``placeholder``."""
    return f"{column} IN (SELECT value FROM json_each({placeholder}))"


def _decode_needs(text: str) -> tuple[str, ...]:
    return () if text == "[]" else tuple(json.loads(text))  # hot: most tasks need nothing


TASKS = TaskCodec(
    encode_needs=lambda needs: dumps(list(needs), "needs"), decode_needs=_decode_needs
)
"""Tasks to and from SQLite rows."""


def _has_label(column: str, name: str, value: str) -> str:
    # json_each compares the key itself: no JSON path to quote.
    return (
        f"EXISTS (SELECT 1 FROM json_each({column}) AS l "
        f"WHERE l.key = {name} AND l.value = {value})"
    )


SQLITE = Dialect(
    placeholder=lambda n: f"?{n}",
    any_of=in_list,
    list_value=json_list,
    insertion_order="rowid",
    byte_order="",  # SQLite compares text by bytes (BINARY) unless told otherwise
    tasks=TASKS,
    has_label=_has_label,
)
"""The SQLite dialect of :mod:`backends.sql.reads`."""


def _insert(table: str, names: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({columns(names)}) VALUES ({', '.join('?' * len(names))})"


INSERT_TASK = _insert("tasks", TASK_COLUMNS)
INSERT_WORKFLOW = _insert("workflows", WORKFLOW_COLUMNS)
INSERT_COMMAND = _insert("commands", COMMAND_COLUMNS)
INSERT_EVENT = _insert("task_events", EVENT_INSERT_COLUMNS)
INSERT_EVENT_WITH_SEQ = _insert("task_events", EVENT_COLUMNS)
INSERT_USAGE_AS_GIVEN = _insert("attempt_usage", USAGE_COLUMNS)
"""One usage row; a second for the same task and attempt is an IntegrityError (load)."""
INSERT_USAGE = INSERT_USAGE_AS_GIVEN + " ON CONFLICT DO NOTHING"
"""One usage row; a second for the same task and attempt is ignored."""
