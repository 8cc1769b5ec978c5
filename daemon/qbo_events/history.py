"""Delivery history: every attempt (when, where, what answer, how long), and delivered events kept
for `outbox.history_days`. The SQL lives here; the outbox runs it inside its own transactions.

Durability: attempt rows and the move of a delivered row into `history` commit with the outcome
they belong to, which is not fsynced on its own (see Outbox.delivered): a power cut may lose the
last moments of history, and the events concerned are then only delivered again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

import msgspec

# Two indexes only (time, event id): every delivery writes a history row, and each index more is
# paid on every one. Listing by instance or object scans a time range, which the CLI bounds.
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    instance TEXT NOT NULL,
    object_key TEXT NOT NULL,
    event BLOB NOT NULL,
    body BLOB,
    accepted_at REAL NOT NULL,
    delivered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_delivered ON history (delivered_at);
CREATE INDEX IF NOT EXISTS history_event ON history (event_id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    endpoint TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    latency_ms REAL NOT NULL,
    response BLOB
);
CREATE INDEX IF NOT EXISTS attempts_seq ON attempts (seq);
CREATE INDEX IF NOT EXISTS attempts_at ON attempts (at);
"""

# The first this many bytes of a receiver's answer are kept with the attempt.
RESPONSE_HEAD: Final = 1024
# Rows deleted per pruning transaction: small enough that a commit beside it never waits long.
PRUNE_BATCH: Final = 500


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery attempt, as the sender saw it."""

    at: float  # unix time the request went out
    endpoint: str  # scheme://host[:port]/path of the callback, no query (it may hold secrets)
    latency_ms: float
    status: int | None = None  # the HTTP status, None when no answer came
    error: str | None = None  # why it failed; None for a 2xx
    response: bytes = b""  # the first RESPONSE_HEAD bytes of the answer


def insert_attempts(conn: sqlite3.Connection, rows: Iterable[tuple[int, Attempt]]) -> None:
    conn.executemany(
        "INSERT INTO attempts (seq, at, endpoint, status, error, latency_ms, response)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                seq,
                a.at,
                a.endpoint,
                a.status,
                a.error[:500] if a.error else None,
                round(a.latency_ms, 3),
                a.response[:RESPONSE_HEAD] or None,
            )
            for seq, a in rows
        ],
    )


def keep_delivered(
    conn: sqlite3.Connection, delivered: Iterable[tuple[int, bytes | None]], at: float
) -> None:
    """Copy delivered outbox rows (seq, the body as sent) into history before they are deleted."""
    conn.executemany(
        "INSERT OR REPLACE INTO history"
        " (seq, event_id, instance, object_key, event, body, accepted_at, delivered_at)"
        " SELECT seq, event_id, instance, object_key, body, ?, accepted_at, ?"
        " FROM outbox WHERE seq = ?",
        [(body, at, seq) for seq, body in delivered],
    )


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Delete one batch of history older than `before`, and the attempts of rows no longer kept
    anywhere; returns how many rows went, so the caller goes on while a batch is full."""
    gone = conn.execute(
        "DELETE FROM history WHERE seq IN"
        " (SELECT seq FROM history WHERE delivered_at < ? ORDER BY delivered_at LIMIT ?)",
        (before, PRUNE_BATCH),
    ).rowcount
    # An attempt stays while its event is undelivered (a dead letter's, however old) or kept.
    gone += conn.execute(
        "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE at < ?"
        " AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.seq = attempts.seq)"
        " AND NOT EXISTS (SELECT 1 FROM history WHERE history.seq = attempts.seq)"
        " ORDER BY at LIMIT ?)",
        (before, PRUNE_BATCH),
    ).rowcount
    return gone
