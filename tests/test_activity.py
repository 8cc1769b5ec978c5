"""The console's activity counts: per instance and minute, from real outbox and history tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from qbo_events import activity
from qbo_events.history import SCHEMA as HISTORY_SCHEMA
from qbo_events.outbox import _SCHEMA as OUTBOX_SCHEMA

NOW = 1_800_000_030.0  # 30 s into a minute


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    db.executescript(OUTBOX_SCHEMA + HISTORY_SCHEMA)
    yield db
    db.close()


def delivered(db: sqlite3.Connection, seq: int, inst: str, accepted: float, latency: float) -> None:
    db.execute(
        "INSERT INTO history (seq, event_id, instance, object_key, event, accepted_at,"
        " delivered_at) VALUES (?, ?, ?, 'k', x'00', ?, ?)",
        (seq, f"evt_{seq}", inst, accepted, accepted + latency),
    )


def test_minutes_count_accepted_delivered_failed_and_latency(conn: sqlite3.Connection) -> None:
    minute = NOW // 60 * 60
    for i in range(100):  # 100 deliveries this minute, latencies 10..1000 ms
        delivered(conn, i + 1, "acme", minute + 1, (i + 1) / 100)
    delivered(conn, 500, "acme", minute - 3 * 3600, 1)  # before the window: not counted
    delivered(conn, 501, "other", minute - 120, 0.5)
    conn.execute(
        "INSERT INTO outbox (seq, event_id, instance, object_key, body, state, attempts,"
        " next_at, accepted_at) VALUES (600, 'e600', 'acme', 'k', x'00', 'dead', 3, 0, ?),"
        " (601, 'e601', 'acme', 'k', x'00', 'pending', 0, 0, ?)",
        (minute + 2, minute - 60),
    )
    conn.executemany(
        "INSERT INTO attempts (seq, at, endpoint, status, error, latency_ms) VALUES"
        " (?, ?, 'http://x/hook', ?, ?, 5)",
        [(600, minute + 3, 500, "HTTP 500"), (600, minute + 4, None, "timeout"),
         (1, minute + 1, 200, None)],
    )  # fmt: skip
    since, until = activity.window(2, NOW)
    found = activity._read(conn, since, ["acme", "other", "idle"])
    assert (since, until) == (minute + 60 - 7200, minute + 60)
    acme = found["acme"]
    assert (acme.undelivered, acme.dead) == (1, 1)
    earlier, now = acme.minutes
    assert (earlier.t, earlier.accepted, earlier.delivered) == (minute - 60, 1, 0)
    assert (now.t, now.accepted, now.delivered, now.failed) == (minute, 101, 100, 2)
    assert now.p50_ms == 500 and now.p99_ms == 990
    (other,) = found["other"].minutes
    assert (other.accepted, other.delivered, other.p50_ms) == (1, 1, 500)
    assert found["idle"].minutes == [] and found["idle"].dead == 0


def test_percentile_of_buckets() -> None:
    assert activity.percentile([], 0.5) is None
    assert activity.percentile([(10, 1)], 0.99) == 10
    assert activity.percentile([(30, 1), (10, 98), (20, 1)], 0.99) == 20
