"""The SQLite store's schema: numbered migrations and the routine that applies them.

``MIGRATIONS[n - 1]`` upgrades schema version ``n - 1`` to ``n``; the versions applied are
recorded in the ``schema_version`` table. Append new migrations; never edit one that shipped.
"""

from __future__ import annotations

import sqlite3

from agentdeck.core.errors import ConfigError

__all__ = ["MIGRATIONS", "latest_version", "migrate"]

#: Each migration is a list of single statements, not a script: ``executescript`` would commit
#: the transaction that makes a migration atomic.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE workflows (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            status      TEXT NOT NULL,
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL,
            task_count  INTEGER NOT NULL,
            finished_at REAL,
            labels      TEXT NOT NULL             -- JSON object
        )
        """,
        "CREATE INDEX workflows_created ON workflows (created_at)",
        "CREATE INDEX workflows_status ON workflows (status)",
        """
        CREATE TABLE tasks (
            id            TEXT PRIMARY KEY,
            workflow_id   TEXT NOT NULL REFERENCES workflows (id),
            key           TEXT NOT NULL,
            capability    TEXT NOT NULL,
            status        TEXT NOT NULL,
            input         TEXT NOT NULL,          -- JSON
            needs         TEXT NOT NULL,          -- JSON list of task keys
            pending       INTEGER NOT NULL,
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            timeout       REAL NOT NULL,
            attempt       INTEGER NOT NULL,
            first_attempt INTEGER NOT NULL,
            retry         TEXT,                   -- JSON object or NULL
            output        TEXT,                   -- JSON or NULL
            error         TEXT,                   -- JSON (ErrorInfo.to_dict) or NULL
            agent_id      TEXT,
            not_before    REAL,
            deadline      REAL,
            started_at    REAL,
            finished_at   REAL,
            UNIQUE (workflow_id, key)
        )
        """,
        "CREATE INDEX tasks_status ON tasks (status)",
        "CREATE INDEX tasks_workflow ON tasks (workflow_id, status)",
        "CREATE INDEX tasks_capability ON tasks (capability, status)",
        "CREATE INDEX tasks_agent ON tasks (agent_id) WHERE agent_id IS NOT NULL",
        # Partial indexes keep the scheduler's hot queries proportional to the rows they
        # return, however many finished tasks the table holds.
        "CREATE INDEX tasks_ready ON tasks (created_at, id) WHERE status = 'ready'",
        "CREATE INDEX tasks_retry_due ON tasks (not_before) WHERE status = 'retrying'",
        """
        CREATE INDEX tasks_deadline_due ON tasks (deadline)
            WHERE status IN ('dispatched', 'running')
        """,
        """
        CREATE TABLE task_deps (
            needs_id TEXT NOT NULL REFERENCES tasks (id),  -- the task waited for
            task_id  TEXT NOT NULL REFERENCES tasks (id),  -- the dependent that waits
            PRIMARY KEY (needs_id, task_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE task_events (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- global order, never reused
            task_id     TEXT NOT NULL,
            workflow_id TEXT NOT NULL,
            at          REAL NOT NULL,
            kind        TEXT NOT NULL,
            attempt     INTEGER NOT NULL,
            from_status TEXT,
            to_status   TEXT,
            agent_id    TEXT,
            detail      TEXT NOT NULL                       -- JSON object
        )
        """,
        "CREATE INDEX task_events_task ON task_events (task_id, seq)",
        "CREATE INDEX task_events_workflow ON task_events (workflow_id, seq)",
        """
        CREATE TABLE commands (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order breaks ties
            id          TEXT NOT NULL UNIQUE,
            action      TEXT NOT NULL,
            target      TEXT NOT NULL,
            created_at  REAL NOT NULL,
            actor       TEXT NOT NULL,
            args        TEXT NOT NULL,                      -- JSON object
            status      TEXT NOT NULL,
            result      TEXT NOT NULL,
            finished_at REAL
        )
        """,
        "CREATE INDEX commands_pending ON commands (created_at, seq) WHERE status = 'pending'",
        "CREATE INDEX commands_created ON commands (created_at, seq)",
        "CREATE TABLE fence (name TEXT PRIMARY KEY, token INTEGER NOT NULL)",
    ),
    # 2: usage per attempt, budgets and the reason a workflow is held.
    (
        """
        CREATE TABLE attempt_usage (
            task_id                     TEXT NOT NULL,
            workflow_id                 TEXT NOT NULL,
            attempt                     INTEGER NOT NULL,
            model                       TEXT,
            input_tokens                INTEGER NOT NULL,
            output_tokens               INTEGER NOT NULL,
            cache_creation_input_tokens INTEGER NOT NULL,
            cache_read_input_tokens     INTEGER NOT NULL,
            cost_usd                    REAL,             -- NULL: not known
            at                          REAL NOT NULL,
            PRIMARY KEY (task_id, attempt)
        )
        """,
        "CREATE INDEX attempt_usage_workflow ON attempt_usage (workflow_id, at)",
        "CREATE INDEX attempt_usage_at ON attempt_usage (at)",
        "ALTER TABLE workflows ADD COLUMN budget TEXT",  # JSON object or NULL
        "ALTER TABLE workflows ADD COLUMN hold_reason TEXT",
    ),
    # 3: no index of the events by workflow, as PostgreSQL's version 5: each event paid an
    # entry for a query (events_since by workflow) nothing in agentdeck makes.
    ("DROP INDEX IF EXISTS task_events_workflow",),
)


def latest_version() -> int:
    """The schema version this code writes."""
    return len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, now: float, where: str) -> None:
    """Bring the schema to :func:`latest_version` inside the caller's write transaction.

    The caller holds ``BEGIN IMMEDIATE``, so a second process migrating at the same moment
    waits, then finds nothing left to do. Raises ConfigError when the database was written
    by a newer agentdeck (``where`` names it in the message).
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    latest = latest_version()
    if current > latest:
        raise ConfigError(
            f"SQLite database {where} has schema version {current}, newer than version "
            f"{latest} that this agentdeck knows; upgrade agentdeck to use it"
        )
    for version in range(current + 1, latest + 1):
        for statement in MIGRATIONS[version - 1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, now))
