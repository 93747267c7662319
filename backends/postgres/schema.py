"""The PostgreSQL store's schema: numbered migrations and the routine that applies them.

``MIGRATIONS[n - 1]`` upgrades schema version ``n - 1`` to ``n``; each version applied is a
row of ``schema_migrations``. Append new migrations; never edit one that shipped.

Why the tables look as they do:

- Times are ``double precision`` seconds since the epoch, as in :mod:`core.models`: they read
  back bit-for-bit equal, and every backend orders by the same numbers.
- JSON-shaped fields are ``jsonb`` (queryable, compact); ``needs`` is a ``text[]`` of keys.
  ``jsonb`` keeps numbers and strings exactly but not the order of an object's keys.
- ``task_deps`` (``needs_id`` -> ``task_id``) answers "who waits on this task" from its
  primary key, which is what releasing dependents asks on every success.
- No foreign keys: tasks, dependencies and created events are written in the transaction that
  writes their workflow, after checks in Python, and a foreign key would cost a lookup per row
  of a 10,000-task ``COPY``.
- Partial indexes keep the scheduler's hot queries (ready, retry due, deadline due)
  proportional to the rows they return, however many finished tasks the table holds.
- ``seq`` columns give insertion order where times tie (workflows, commands) and the global
  order of events.
"""

from __future__ import annotations

import asyncpg

from agentdeck.core.errors import ConfigError

__all__ = [
    "CREATE_ROLES_BY_HAND",
    "EVENTS_LOCK",
    "LOCK_NAMESPACE",
    "MIGRATE_LOCK",
    "MIGRATIONS",
    "NODE",
    "OPERATOR",
    "ROLES",
    "VIEWER",
    "latest_version",
    "migrate",
]

#: ``pg_advisory_xact_lock(LOCK_NAMESPACE, n)`` keys used by this store ("adk" in ASCII).
LOCK_NAMESPACE = 0x61646B
#: Held while migrating, so two nodes starting at once apply each migration once.
MIGRATE_LOCK = 1
#: Held from the first event a transaction inserts until it commits, so events commit in
#: ``seq`` order (see :mod:`backends.postgres.store`).
EVENTS_LOCK = 2

#: The group roles (NOLOGIN; a login user is granted one of them), from least to most power.
VIEWER, OPERATOR, NODE = "agentdeck_viewer", "agentdeck_operator", "agentdeck_node"
ROLES = (VIEWER, OPERATOR, NODE)

#: What a DBA runs once per cluster when the user that migrates may not create roles (roles
#: are cluster-wide; ``CREATE ROLE`` needs CREATEROLE or a superuser).
CREATE_ROLES_BY_HAND = "; ".join(f"CREATE ROLE {name} NOLOGIN" for name in ROLES)

# Roles are created if missing; two databases migrating at once may both try, and the loser's
# CREATE ROLE fails with one of the two errors caught (it waited on the catalog's index).
_CREATE_ROLES = f"""
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['{VIEWER}', '{OPERATOR}', '{NODE}'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name);
        IF NOT (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            RAISE EXCEPTION 'role % does not exist and user % may not create roles',
                name, current_user
                USING ERRCODE = 'insufficient_privilege',
                HINT = 'a superuser or a user with CREATEROLE runs once per cluster: '
                    || '{CREATE_ROLES_BY_HAND}';
        END IF;
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END
$$
"""

# Grants in the schema the store lives in (``search_path``). Default privileges extend them to
# every table and sequence later migrations create (as the same owner). The operator's only
# write is a command row; the node writes what the runtime writes, not the migration log.
_GRANT_ROLES = f"""
DO $$
DECLARE
    s text := quote_ident(current_schema());
BEGIN
    EXECUTE 'GRANT USAGE ON SCHEMA ' || s || ' TO {VIEWER}, {OPERATOR}, {NODE}';
    EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA ' || s || ' TO {VIEWER}, {OPERATOR}';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ' || s
        || ' TO {NODE}';
    EXECUTE 'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA ' || s || ' TO {NODE}';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA ' || s
        || ' GRANT SELECT ON TABLES TO {VIEWER}, {OPERATOR}';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA ' || s
        || ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {NODE}';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA ' || s
        || ' GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {NODE}';
    EXECUTE 'REVOKE INSERT, UPDATE, DELETE ON ' || s || '.schema_migrations FROM {NODE}';
    EXECUTE 'GRANT INSERT ON ' || s || '.commands TO {OPERATOR}';
    EXECUTE 'GRANT USAGE ON SEQUENCE ' || pg_get_serial_sequence(s || '.commands', 'seq')
        || ' TO {OPERATOR}';
END
$$
"""

# The actor of a command is the authenticated user (``session_user``: SET ROLE does not change
# it), whatever the client wrote, and it never changes afterwards. Only a user who can act as
# the table's owner keeps the actor it writes: it could drop this trigger anyway, and a
# snapshot restore must keep the recorded actors. A user that is not a node may queue only
# pending commands: the outcome is the scheduler's to write.
_COMMAND_ACTOR = f"""
CREATE FUNCTION agentdeck_command_actor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.actor := OLD.actor;
        RETURN NEW;
    END IF;
    NEW.actor := session_user;
    IF NOT pg_has_role(session_user, '{NODE}', 'USAGE')
        AND (NEW.status <> 'pending' OR NEW.result <> '' OR NEW.finished_at IS NOT NULL)
    THEN
        RAISE EXCEPTION 'user % may only queue pending commands', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$
"""
_COMMAND_ACTOR_TRIGGER = """
CREATE TRIGGER commands_actor BEFORE INSERT OR UPDATE ON commands
    FOR EACH ROW EXECUTE FUNCTION agentdeck_command_actor()
"""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE workflows (
            id          text PRIMARY KEY,
            seq         bigint GENERATED ALWAYS AS IDENTITY,  -- insertion order breaks ties
            name        text NOT NULL,
            status      text NOT NULL,
            created_at  double precision NOT NULL,
            updated_at  double precision NOT NULL,
            task_count  integer NOT NULL,
            finished_at double precision,
            labels      jsonb NOT NULL
        )
        """,
        "CREATE INDEX workflows_created ON workflows (created_at DESC, seq DESC)",
        "CREATE INDEX workflows_status ON workflows (status, created_at DESC, seq DESC)",
        """
        CREATE TABLE tasks (
            id            text PRIMARY KEY,
            workflow_id   text NOT NULL,
            key           text NOT NULL,
            capability    text NOT NULL,
            status        text NOT NULL,
            input         jsonb NOT NULL,
            needs         text[] NOT NULL,
            pending       integer NOT NULL,
            created_at    double precision NOT NULL,
            updated_at    double precision NOT NULL,
            timeout       double precision NOT NULL,
            attempt       integer NOT NULL,
            first_attempt integer NOT NULL,
            retry         jsonb,
            output        jsonb,
            error         jsonb,                          -- ErrorInfo.to_dict()
            agent_id      text,
            not_before    double precision,
            deadline      double precision,
            started_at    double precision,
            finished_at   double precision,
            UNIQUE (workflow_id, key)                     -- also the index by workflow
        )
        """,
        # The UI's listings: all tasks, by status, by capability, by agent (oldest first).
        "CREATE INDEX tasks_created ON tasks (created_at, key, id)",
        "CREATE INDEX tasks_status ON tasks (status, created_at, key)",
        "CREATE INDEX tasks_capability ON tasks (capability, status)",
        "CREATE INDEX tasks_agent ON tasks (agent_id) WHERE agent_id IS NOT NULL",
        # The scheduler's rounds.
        "CREATE INDEX tasks_ready ON tasks (created_at, id) WHERE status = 'ready'",
        "CREATE INDEX tasks_retry_due ON tasks (not_before) WHERE status = 'retrying'",
        """
        CREATE INDEX tasks_deadline_due ON tasks (deadline)
            WHERE status IN ('dispatched', 'running')
        """,
        """
        CREATE TABLE task_deps (
            needs_id text NOT NULL,  -- the task waited for
            task_id  text NOT NULL,  -- the dependent that waits
            PRIMARY KEY (needs_id, task_id)
        )
        """,
        """
        CREATE TABLE task_events (
            seq         bigserial PRIMARY KEY,  -- global order, in commit order (see store)
            task_id     text NOT NULL,
            workflow_id text NOT NULL,
            at          double precision NOT NULL,
            kind        text NOT NULL,
            attempt     integer NOT NULL,
            from_status text,
            to_status   text,
            agent_id    text,
            detail      jsonb NOT NULL
        )
        """,
        "CREATE INDEX task_events_task ON task_events (task_id, seq)",
        "CREATE INDEX task_events_workflow ON task_events (workflow_id, seq)",
        """
        CREATE TABLE commands (
            seq         bigserial PRIMARY KEY,  -- insertion order breaks ties
            id          text NOT NULL UNIQUE,
            action      text NOT NULL,
            target      text NOT NULL,
            created_at  double precision NOT NULL,
            actor       text NOT NULL,
            args        jsonb NOT NULL,
            status      text NOT NULL,
            result      text NOT NULL,
            finished_at double precision
        )
        """,
        "CREATE INDEX commands_pending ON commands (created_at, seq) WHERE status = 'pending'",
        "CREATE INDEX commands_created ON commands (created_at DESC, seq DESC)",
        "CREATE TABLE fence (name text PRIMARY KEY, token bigint NOT NULL)",
    ),
    # 2: usage per attempt (bigint counts: a sum over a fleet outgrows integer), budgets and
    # the reason a workflow is held.
    (
        """
        CREATE TABLE attempt_usage (
            task_id                     text NOT NULL,
            workflow_id                 text NOT NULL,
            attempt                     integer NOT NULL,
            model                       text,
            input_tokens                bigint NOT NULL,
            output_tokens               bigint NOT NULL,
            cache_creation_input_tokens bigint NOT NULL,
            cache_read_input_tokens     bigint NOT NULL,
            cost_usd                    double precision,  -- NULL: not known
            at                          double precision NOT NULL,
            PRIMARY KEY (task_id, attempt)
        )
        """,
        "CREATE INDEX attempt_usage_workflow ON attempt_usage (workflow_id, at)",
        "CREATE INDEX attempt_usage_at ON attempt_usage (at)",
        "ALTER TABLE workflows ADD COLUMN budget jsonb",
        "ALTER TABLE workflows ADD COLUMN hold_reason text",
    ),
    # 3: roles enforced by the engine (docs/security.md): three NOLOGIN group roles, their grants,
    # and the trigger that records the authenticated user as a command's actor.
    (_CREATE_ROLES, _GRANT_ROLES, _COMMAND_ACTOR, _COMMAND_ACTOR_TRIGGER),
    # 4: the open tasks by workflow and status, so "has this workflow finished?" (asked after
    # every round that finished tasks) probes only the tasks not yet final, not every row of a
    # 10,000-task workflow. The list must stay the text of backends.sql.reads.OPEN_STATUSES_SQL.
    # With the status in the key, a ready-tasks plan made from stale statistics (a nested loop
    # from the running workflows) reads only their ready tasks, never all their open ones.
    (
        """
        CREATE INDEX tasks_open ON tasks (workflow_id, status)
            WHERE status IN ('blocked', 'ready', 'dispatched', 'running', 'retrying')
        """,
    ),
    # 5: no index of the events by workflow. Every event (three a task: created, dispatched,
    # succeeded) paid an entry in it, and only events_since(workflow_id=...) could read it,
    # which nothing in agentdeck calls: watchers and snapshots read every workflow's events by
    # seq, through the primary key (docs/performance.md, "PostgreSQL's cost per transition").
    # Dropping an index unlinks its files: instant whatever the table holds, once the
    # transactions writing events at that moment have ended (it needs the table's lock).
    ("DROP INDEX IF EXISTS task_events_workflow",),
)


def latest_version() -> int:
    """The schema version this code writes."""
    return len(MIGRATIONS)


async def migrate(conn: asyncpg.Connection, now: float, where: str) -> list[int]:
    """Bring the schema to :func:`latest_version`; returns the versions applied (often none).

    Runs in one transaction under an advisory lock, so a second node migrating at the same
    moment waits, then finds nothing left to do; a failing migration leaves the schema as it
    was. Raises ConfigError when the database was written by a newer agentdeck (``where``
    names it in the message).
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, MIGRATE_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        latest = latest_version()
        if current > latest:
            raise ConfigError(
                f"PostgreSQL database {where} has schema version {current}, newer than version "
                f"{latest} that this agentdeck knows; upgrade agentdeck to use it"
            )
        applied = list(range(current + 1, latest + 1))
        for version in applied:
            for statement in MIGRATIONS[version - 1]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version, now)
        return applied
