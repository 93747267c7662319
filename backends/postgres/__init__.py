"""The PostgreSQL store: ``PostgresStore`` (``postgresql://user:password@host:5432/db``).

Modules: :mod:`~backends.postgres.store` (the Store), :mod:`~backends.postgres.schema`
(tables and numbered migrations), :mod:`~backends.postgres.transitions` (batched
compare-and-set), :mod:`~backends.postgres.rows` (records to models),
:mod:`~backends.postgres.url` (URLs and pool options), :mod:`~backends.postgres.watch`
(LISTEN/NOTIFY) and :mod:`~backends.postgres.testing` (scratch databases for tests).
"""

from __future__ import annotations

from agentdeck.backends.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
