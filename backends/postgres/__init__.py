"""The PostgreSQL store: ``PostgresStore`` (``postgresql://user:password@host:5432/db``).

Modules: :mod:`~backends.postgres.store` (the Store's writes and lifecycle; the port itself is
:mod:`backends.sql`, shared with SQLite), :mod:`~backends.postgres.connections` (the pool,
engine errors, reads and writes on a connection), :mod:`~backends.postgres.schema` (tables and
numbered migrations), :mod:`~backends.postgres.transitions` (batched compare-and-set),
:mod:`~backends.postgres.dialect` (how PostgreSQL spells the shared statements),
:mod:`~backends.postgres.url` (URLs and pool options), :mod:`~backends.postgres.watch`
(LISTEN/NOTIFY) and :mod:`~backends.postgres.testing` (scratch databases for tests).
"""

from __future__ import annotations

from agentdeck.backends.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
