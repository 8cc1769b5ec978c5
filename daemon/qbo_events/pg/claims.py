"""Deliveries shared by several processes: accept with dedupe, claim in batches through the
per-object heads, then complete, retry or dead-letter by claim token.

Only an object's head (its first undelivered event) is ever claimable, so per-object order holds
across processes however deep an object's queue is. A claim is a lease, not a held transaction:
it moves the head's `run_at` to the lease's end, so a claim whose process died becomes claimable
again by itself, and a new claim's token makes the old one's completion a no-op.

Lock order, to keep concurrent writers free of deadlocks: heads before events, heads in
object_key order. Claims take heads with SKIP LOCKED and never wait.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final, LiteralString

import msgspec

from qbo_events.pg import Connection
from qbo_events.pg.leases import Cursor, write_cursor

LEASE: Final = 30.0  # seconds a claim lasts: longer than a delivery's timeout
# The first key of the transaction-scoped lock that serialises claims for one endpoint.
_ENDPOINT_LOCK_CLASS: Final = 0x71B1


class NewEvent(msgspec.Struct, frozen=True):
    """An event to store: rows, not QuickBooks types. Events sharing an object_key are
    delivered in the order they were accepted."""

    event_id: str
    instance: str
    endpoint: str
    object_key: str
    body: bytes


class Claim(msgspec.Struct, frozen=True):
    """A claimed event: this process may deliver it until the lease ends; its token is the
    proof of the claim that completion, retry and dead-lettering ask for."""

    id: int
    token: uuid.UUID
    event_id: str
    instance: str
    endpoint: str
    object_key: str
    body: bytes
    attempts: int
    accepted_at: float  # seconds since the epoch, by the database's clock


# -- intake -----------------------------------------------------------------------------------


async def accept(
    conn: Connection,
    events: Sequence[NewEvent],
    *,
    cursor: Cursor | None = None,
    dedupe: bool = True,
) -> int:
    """Store the events not seen before (their event ids are the dedupe keys) and, when given,
    the poll cursor under its lease, in one transaction; returns how many were new. A cursor
    whose lease is not current raises LeaseLost and stores none of the events either.

    `dedupe=False` stores every event even if seen before (a resync delivers again)."""
    if dedupe:
        firsts: dict[str, NewEvent] = {}
        for e in events:
            firsts.setdefault(e.event_id, e)
        events = list(firsts.values())
    async with conn.transaction():
        if cursor is not None:
            # First, so that the share lock on the lease is held before any row is written.
            await write_cursor(conn, cursor.lease, cursor.resource, cursor.value)
        if not events:
            return 0
        cur = await conn.execute(
            _ACCEPT_DEDUPED if dedupe else _ACCEPT_ALL,
            {
                "ids": [e.event_id for e in events],
                "instances": [e.instance for e in events],
                "endpoints": [e.endpoint for e in events],
                "keys": [e.object_key for e in events],
                "bodies": [e.body for e in events],
            },
        )
        row = await cur.fetchone()
        return 0 if row is None else int(row[0])


_INPUT: Final = """
    input AS (
        SELECT * FROM unnest(%(ids)s::text[], %(instances)s::text[], %(endpoints)s::text[],
                             %(keys)s::text[], %(bodies)s::bytea[])
            WITH ORDINALITY AS i(event_id, instance, endpoint, object_key, body, n)
    )"""
# The heads upsert locks an existing head without changing it (DO UPDATE ... WHERE false locks
# the row): a completion that is about to drop the head then waits for this commit and sees the
# new event, or this insert waits for the drop and makes the new event the head.
_ADD_AND_HEAD: Final = """
    added AS (
        INSERT INTO events (event_id, instance, endpoint, object_key, body)
        SELECT i.event_id, i.instance, i.endpoint, i.object_key, i.body FROM input i
        {where}
        ORDER BY i.n
        RETURNING id, instance, endpoint, object_key, run_at
    ),
    headed AS (
        INSERT INTO heads AS h (object_key, event, run_at, instance, endpoint)
        SELECT DISTINCT ON (object_key) object_key, id, run_at, instance, endpoint
        FROM added ORDER BY object_key, id
        ON CONFLICT (object_key) DO UPDATE SET event = h.event WHERE false
    )
    SELECT count(*) FROM added"""
_ACCEPT_DEDUPED: Final = (
    "WITH"
    + _INPUT
    + """,
    fresh AS (
        INSERT INTO dedupe (event_id) SELECT event_id FROM input
        ON CONFLICT (event_id) DO NOTHING RETURNING event_id
    ),"""
    + _ADD_AND_HEAD.format(where="WHERE i.event_id IN (SELECT event_id FROM fresh)")
)
_ACCEPT_ALL: Final = (
    "WITH"
    + _INPUT
    + """,
    seen AS (
        INSERT INTO dedupe (event_id) SELECT DISTINCT event_id FROM input
        ON CONFLICT (event_id) DO UPDATE SET seen_at = now()
    ),"""
    + _ADD_AND_HEAD.format(where="")
)


async def prune_dedupe(conn: Connection, window: float, limit: int = 1000) -> int:
    """Forget up to `limit` dedupe keys seen more than `window` seconds ago; returns how many.
    One short transaction a call, skipping rows another pruner holds: call again until it
    returns less than `limit`, so the table never bloats behind one long delete."""
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM dedupe WHERE event_id IN ("
            " SELECT event_id FROM dedupe WHERE seen_at < now() - make_interval(secs => %s)"
            " ORDER BY seen_at LIMIT %s FOR UPDATE SKIP LOCKED)",
            (window, limit),
        )
        return cur.rowcount


# -- claiming ---------------------------------------------------------------------------------


async def claim(
    conn: Connection,
    owner: str,
    *,
    limit: int = 50,
    lease: float = LEASE,
    instances: Iterable[str] | None = None,
    endpoint_cap: int | None = None,
) -> list[Claim]:
    """Claim up to `limit` due heads (of `instances`, or all), oldest due first, for `lease`
    seconds. With `endpoint_cap`, no endpoint gets more live claims than that, counting every
    process's: the claims of one endpoint are serialised by a transaction-scoped lock, which
    a claimer that finds taken skips rather than waits for."""
    only = None if instances is None else sorted(set(instances))
    params: dict[str, Any] = {"owner": owner, "lease": lease, "instances": only}
    async with conn.pipeline(), conn.transaction():
        await _no_fsync(conn)
        if endpoint_cap is None:
            params["limit"] = limit
            cur = await conn.execute(_CLAIM_DUE_ALL if only is None else _CLAIM_DUE_OF, params)
            return [_claim(row) for row in await cur.fetchall()]

        params["limit"] = limit * 4  # room to pass over the heads of endpoints at their cap
        cur = await conn.execute(_DUE_LOCKED_ALL if only is None else _DUE_LOCKED_OF, params)
        due = await cur.fetchall()
        if not due:
            return []
        # A new statement, so a new snapshot: it counts the claims that each endpoint's
        # previous lock holder committed.
        cur = await conn.execute(
            _CLAIM_PICKED,
            {
                **params,
                "keys": [k for k, _, _ in due],
                "ids": [e for _, e, _ in due],
                "endpoints": [p for _, _, p in due],
                "cap": endpoint_cap,
                "limit": limit,
            },
        )
        return [_claim(row) for row in await cur.fetchall()]


_DUE: Final = """
    SELECT object_key, event, endpoint, run_at FROM heads
    WHERE run_at <= now() {only}
    ORDER BY run_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED"""
_ONLY: Final = "AND instance = ANY(%(instances)s)"
_DUE_ALL: Final = _DUE.format(only="")
_DUE_OF: Final = _DUE.format(only=_ONLY)
# Heads store their event's id, so each head's event is one primary-key lookup (LATERAL would
# add nothing). MATERIALIZED keeps the planner from re-running the locking scan per row, which
# can claim more rows than the limit.
_TAKE: Final = """
    claimed AS (
        UPDATE events e SET lease_owner = %(owner)s, claim_token = gen_random_uuid(),
            lease_until = now() + make_interval(secs => %(lease)s)
        FROM due WHERE e.id = due.event AND e.state = 'pending'
        RETURNING e.id, e.claim_token, e.event_id, e.instance, e.endpoint, e.object_key,
            e.body, e.attempts, extract(epoch FROM e.accepted_at)::float8
    ),
    moved AS (
        UPDATE heads h SET run_at = now() + make_interval(secs => %(lease)s)
        FROM due WHERE h.object_key = due.object_key
    )
    SELECT * FROM claimed ORDER BY id"""
_CLAIM_DUE_ALL: Final = "WITH due AS MATERIALIZED (" + _DUE_ALL + ")," + _TAKE
_CLAIM_DUE_OF: Final = "WITH due AS MATERIALIZED (" + _DUE_OF + ")," + _TAKE
# The due heads, locked, of the endpoints whose claim lock this transaction got. A try-lock
# never waits, so the order the endpoints are tried in cannot deadlock; a claimer that finds an
# endpoint's lock taken passes over its heads.
_DUE_LOCKED: Final = """
    WITH due AS MATERIALIZED ({due})
    SELECT object_key, event, endpoint FROM due
    WHERE pg_try_advisory_xact_lock({lock_class}, hashtext(current_schema() || endpoint))
    ORDER BY run_at"""
_DUE_LOCKED_ALL: Final = _DUE_LOCKED.format(due=_DUE_ALL, lock_class=_ENDPOINT_LOCK_CLASS)
_DUE_LOCKED_OF: Final = _DUE_LOCKED.format(due=_DUE_OF, lock_class=_ENDPOINT_LOCK_CLASS)
# Of those heads (already locked by this transaction), oldest first, as many per endpoint as
# its live claims across every process leave room for.
_CLAIM_PICKED: Final = (
    """WITH d AS (
        SELECT * FROM unnest(%(keys)s::text[], %(ids)s::bigint[], %(endpoints)s::text[])
            WITH ORDINALITY AS d(object_key, event, endpoint, n)
    ),
    live AS (
        SELECT endpoint, count(*) AS busy FROM events
        WHERE endpoint IN (SELECT endpoint FROM d)
          AND claim_token IS NOT NULL AND lease_until > now()
        GROUP BY endpoint
    ),
    due AS MATERIALIZED (
        SELECT object_key, event FROM (
            SELECT d.object_key, d.event, d.n, coalesce(live.busy, 0)
                + row_number() OVER (PARTITION BY d.endpoint ORDER BY d.n) AS place
            FROM d LEFT JOIN live USING (endpoint)
        ) ranked
        WHERE place <= %(cap)s ORDER BY n LIMIT %(limit)s
    ),"""
    + _TAKE
)


def _claim(row: tuple[Any, ...]) -> Claim:
    id_, token, event_id, instance, endpoint, key, body, attempts, accepted_at = row
    return Claim(
        int(id_),
        token,
        str(event_id),
        str(instance),
        str(endpoint),
        str(key),
        bytes(body),
        int(attempts),
        float(accepted_at),
    )


# -- outcomes ---------------------------------------------------------------------------------


async def complete(conn: Connection, claims: Sequence[Claim]) -> int:
    """Delete the delivered events whose claims are still theirs (a claim that expired and was
    taken again is refused) and move each object's head to its next event; returns how many
    were completed."""
    if not claims:
        return 0
    async with conn.pipeline(), conn.transaction():
        await _no_fsync(conn)
        await _lock_heads(conn, (c.object_key for c in claims))
        cur = await conn.execute(
            "WITH done AS ("
            " DELETE FROM events e"
            " USING unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS t(id, token)"
            " WHERE e.id = t.id AND e.claim_token = t.token"
            " RETURNING e.id, e.object_key)," + _ADVANCE,
            {"ids": [c.id for c in claims], "tokens": [c.token for c in claims]},
        )
        row = await cur.fetchone()
        return 0 if row is None else int(row[0])


async def retry(conn: Connection, claim: Claim, *, delay: float, error: str) -> bool:
    """Give the claim back to be tried again in `delay` seconds: the same row, so the object's
    later events keep waiting behind it. False if the claim was no longer this one."""
    async with conn.pipeline(), conn.transaction():
        await _no_fsync(conn)
        await _lock_heads(conn, (claim.object_key,))
        cur = await conn.execute(
            "WITH r AS ("
            " UPDATE events SET attempts = attempts + 1, last_error = %(error)s,"
            "  run_at = now() + make_interval(secs => %(delay)s),"
            "  lease_owner = NULL, lease_until = NULL, claim_token = NULL"
            " WHERE id = %(id)s AND claim_token = %(token)s"
            " RETURNING id, object_key, run_at),"
            " moved AS (UPDATE heads h SET run_at = r.run_at FROM r"
            "  WHERE h.object_key = r.object_key AND h.event = r.id)"
            " SELECT count(*) FROM r",
            {"id": claim.id, "token": claim.token, "delay": delay, "error": error[:500]},
        )
        row = await cur.fetchone()
        return row is not None and row[0] == 1


async def dead_letter(conn: Connection, claim: Claim, *, error: str) -> bool:
    """Keep the event as dead, out of the object's way: its next event becomes the head.
    False if the claim was no longer this one."""
    async with conn.pipeline(), conn.transaction():
        await _no_fsync(conn)
        await _lock_heads(conn, (claim.object_key,))
        cur = await conn.execute(
            "WITH done AS ("
            " UPDATE events SET state = 'dead', attempts = attempts + 1, last_error = %(error)s,"
            "  lease_owner = NULL, lease_until = NULL, claim_token = NULL"
            " WHERE id = %(id)s AND claim_token = %(token)s"
            " RETURNING id, object_key)," + _ADVANCE,
            {"id": claim.id, "token": claim.token, "error": error[:500]},
        )
        row = await cur.fetchone()
        return row is not None and row[0] == 1


async def _no_fsync(conn: Connection) -> None:
    """This transaction's commit does not wait for the WAL to reach the disk. Only for delivery
    bookkeeping: what a server crash loses of it is delivered again, as when a process dies
    (at least once, as the SQLite outbox's acknowledgements). Intake and fenced writes keep
    the server's setting: a webhook is answered, a token used, only once they are durable."""
    await conn.execute("SET LOCAL synchronous_commit = off")


async def _lock_heads(conn: Connection, keys: Iterable[str]) -> None:
    """Lock the heads in key order before the statement that reads the objects' next events:
    that statement's snapshot then includes every event whose accept locked the head first."""
    await conn.execute(
        "SELECT 1 FROM heads WHERE object_key = ANY(%s) ORDER BY object_key FOR UPDATE",
        (sorted(set(keys)),),
    )


# Given `done` (id, object_key): the events that leave their object's queue (the statement's
# snapshot still shows them as pending, hence NOT IN done), each object's head moves to its
# next pending event or goes.
_ADVANCE: LiteralString = """
    next AS (
        SELECT d.object_key, d.id AS done_id, n.id AS next_id, n.run_at
        FROM done d LEFT JOIN LATERAL (
            SELECT p.id, p.run_at FROM events p
            WHERE p.object_key = d.object_key AND p.state = 'pending'
              AND p.id NOT IN (SELECT id FROM done)
            ORDER BY p.id LIMIT 1
        ) n ON true
    ),
    moved AS (
        UPDATE heads h SET event = next.next_id, run_at = next.run_at FROM next
        WHERE h.object_key = next.object_key AND h.event = next.done_id
          AND next.next_id IS NOT NULL
    ),
    gone AS (
        DELETE FROM heads h USING next
        WHERE h.object_key = next.object_key AND h.event = next.done_id AND next.next_id IS NULL
    )
    SELECT count(*) FROM done"""


# -- reading ----------------------------------------------------------------------------------


async def next_due(conn: Connection) -> float | None:
    """Seconds until the earliest head falls due (0 or less: due now); None without heads."""
    cur = await conn.execute("SELECT extract(epoch FROM min(run_at) - now())::float8 FROM heads")
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def in_flight(conn: Connection) -> dict[str, int]:
    """Live claims per endpoint, across every process."""
    cur = await conn.execute(
        "SELECT endpoint, count(*) FROM events"
        " WHERE claim_token IS NOT NULL AND lease_until > now() GROUP BY endpoint"
    )
    return {str(e): int(n) for e, n in await cur.fetchall()}
