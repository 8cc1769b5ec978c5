"""Versioned schema migrations: numbered SQL steps, applied once each, recorded in
`schema_version`, under a lock that lives only as long as the migrating transaction."""

from __future__ import annotations

from typing import Final

from qbo_events.pg import Connection

# The first key of the two-key advisory lock; the second is the schema's name, so that
# databases holding several schemas (the tests) migrate each on its own.
_LOCK_CLASS: Final = 0x71B0

# Append-only: a released step is never edited, a change is a new step. Times are the database's
# (timestamptz, `now()`), so that processes whose clocks disagree still agree on expiry.
STEPS: Final[tuple[str, ...]] = (
    # 1: the outbox, the heads it is claimed through, dedupe keys, cursors, tokens, ownership.
    """
    CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id text NOT NULL,
        instance text NOT NULL,
        endpoint text NOT NULL,
        object_key text NOT NULL,
        body bytea NOT NULL,
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        run_at timestamptz NOT NULL DEFAULT now(),
        accepted_at timestamptz NOT NULL DEFAULT now(),
        lease_owner text,
        lease_until timestamptz,
        claim_token uuid,
        last_error text
    );
    -- An object's next undelivered event, when its head is delivered or dead-lettered.
    CREATE INDEX events_object ON events (object_key, id) WHERE state = 'pending';
    -- Live claims per endpoint, for max_in_flight_per_endpoint across processes.
    CREATE INDEX events_leased ON events (endpoint, lease_until) WHERE claim_token IS NOT NULL;
    CREATE INDEX events_dead ON events (instance, id) WHERE state = 'dead';

    -- One row per object with undelivered events: its first one, and when it may be claimed.
    -- A claim moves run_at to the claim's expiry, so an abandoned claim comes back by itself.
    CREATE TABLE heads (
        object_key text PRIMARY KEY,
        event bigint NOT NULL,
        run_at timestamptz NOT NULL,
        instance text NOT NULL,
        endpoint text NOT NULL
    );
    CREATE INDEX heads_due ON heads (run_at);
    CREATE INDEX heads_instance_due ON heads (instance, run_at);

    CREATE TABLE dedupe (
        event_id text PRIMARY KEY,
        seen_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX dedupe_seen ON dedupe (seen_at);

    CREATE TABLE cursors (
        instance text NOT NULL,
        resource text NOT NULL,
        cursor text NOT NULL,
        epoch bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (instance, resource)
    );
    CREATE TABLE tokens (
        instance text PRIMARY KEY,
        body bytea NOT NULL,
        epoch bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );

    -- Who polls an instance's company and refreshes its tokens; epoch is the fencing token.
    CREATE TABLE company_leases (
        instance text PRIMARY KEY,
        owner text NOT NULL,
        epoch bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE TABLE members (
        process text PRIMARY KEY,
        started_at timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now()
    );
    """,
)


async def migrate(conn: Connection, steps: tuple[str, ...] = STEPS) -> int:
    """Bring the connection's schema (its search_path's first) up to date; returns the version.

    A transaction-scoped advisory lock serialises migrating processes: it is released at commit
    or rollback, so it neither outlives a dead process on a half-open connection nor breaks
    behind PgBouncer's transaction pooling, as a session lock would. The second process waits,
    then finds the steps applied and does nothing."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_LOCK_CLASS,)
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await version(conn)
        for number, sql in enumerate(steps, start=1):
            if number <= current:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
            current = number
        return current


async def version(conn: Connection) -> int:
    """The highest step applied; 0 for an empty schema."""
    cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    exists = await cur.fetchone()
    if exists is None or not exists[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])
