"""How PostgreSQL spells the shared statements (:data:`POSTGRES`).

Parameters are numbered (``$1``); a list travels as one ``text[]`` parameter, read as
``column = ANY($1::text[])``; ``needs`` is stored as ``text[]``. ``jsonb`` values travel as
JSON text both ways (asyncpg's default), encoded by :mod:`backends.sql.codec`.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentdeck.backends.sql.codec import TaskCodec
from agentdeck.backends.sql.dialect import Dialect

__all__ = ["POSTGRES", "TASKS", "any_text"]


def any_text(column: str, placeholder: str) -> str:
    """``column`` is one of the ``text[]`` bound to ``placeholder``."""
    return f"{column} = ANY({placeholder}::text[])"


def _text_list(values: Iterable[str]) -> list[str]:
    return list(values)


TASKS = TaskCodec(encode_needs=list, decode_needs=tuple)
"""Tasks to and from PostgreSQL rows."""


def _has_label(column: str, name: str, value: str) -> str:
    return f"{column} ->> {name}::text = {value}::text"


POSTGRES = Dialect(
    placeholder=lambda n: f"${n}",
    any_of=any_text,
    list_value=_text_list,
    insertion_order="seq",
    # By bytes, as SQLite compares: a snapshot taken on one engine pages the same on the other.
    byte_order=' COLLATE "C"',
    tasks=TASKS,
    has_label=_has_label,
)
"""The PostgreSQL dialect of :mod:`backends.sql.reads`."""
