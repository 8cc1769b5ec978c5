"""The console's activity counts: per instance and minute, from a real outbox and its history."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from qbo_events import activity
from qbo_events.outbox import Outbox

MINUTE = 1_800_000_000.0  # a minute's start
NOW = MINUTE + 30
SETTLE = 75.0
pytestmark = pytest.mark.anyio


def deliveries(rows: list[tuple[int, str, float, float]]) -> Callable[[sqlite3.Connection], None]:
    def op(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO history (seq, event_id, instance, object_key, event, accepted_at,"
            " delivered_at) VALUES (?, 'e' || ?, ?, 'k', x'00', ?, ?)",
            [
                (seq, seq, inst, accepted, accepted + latency)
                for seq, inst, accepted, latency in rows
            ],
        )

    return op


def undelivered(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO outbox (seq, event_id, instance, object_key, body, state, attempts,"
        " next_at, accepted_at) VALUES (600, 'e600', 'acme', 'k', x'00', 'dead', 3, 0, ?),"
        " (601, 'e601', 'acme', 'k', x'00', 'pending', 0, 0, ?)",
        (MINUTE + 2, MINUTE - 60),
    )
    conn.executemany(
        "INSERT INTO attempts (seq, at, endpoint, status, error, latency_ms) VALUES"
        " (?, ?, 'http://x/hook', ?, ?, 5)",
        [(600, MINUTE + 3, 500, "HTTP 500"), (600, MINUTE + 4, None, "timeout"),
         (1, MINUTE + 1, 200, None), (600, MINUTE - 600, 503, "HTTP 503")],
    )  # fmt: skip


def totals(found: dict[str, activity.InstanceActivity]) -> dict[str, tuple[int, int, int]]:
    return {
        name: (
            sum(m.accepted for m in a.minutes),
            sum(m.delivered for m in a.minutes),
            sum(m.failed for m in a.minutes),
        )
        for name, a in found.items()
    }


async def test_minutes_count_accepted_delivered_failed_and_latency(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        # 100 deliveries this minute, 10..1000 ms; one before the window; one of another instance.
        rows = [(i + 1, "acme", MINUTE + 1, (i + 1) / 100) for i in range(100)]
        rows += [(500, "acme", MINUTE - 3 * 3600, 1.0), (501, "other", MINUTE - 120, 0.5)]
        await outbox.execute(deliveries(rows))
        await outbox.execute(undelivered)
        reader = activity.ActivityReader()
        since, until, found = await reader.read(
            outbox, ["acme", "other", "idle"], 2, settle=SETTLE, now=NOW
        )
        assert (since, until) == (MINUTE + 60 - 7200, MINUTE + 60)
        acme = found["acme"]
        assert (acme.undelivered, acme.dead) == (1, 1)
        ten, earlier, now = acme.minutes
        assert (ten.t, ten.failed, ten.accepted) == (MINUTE - 600, 1, 0)
        assert (earlier.t, earlier.accepted, earlier.delivered) == (MINUTE - 60, 1, 0)
        assert (now.t, now.accepted, now.delivered, now.failed) == (MINUTE, 101, 100, 2)
        assert now.p50_ms == 500 and now.p99_ms == 990
        (other,) = found["other"].minutes
        assert (other.accepted, other.delivered, other.p50_ms) == (1, 1, 500)
        assert found["idle"].minutes == [] and found["idle"].dead == 0


async def test_settled_minutes_are_kept_and_nothing_is_counted_twice(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        # One delivery a minute for 3 hours, each accepted 90 s before it was delivered.
        rows = [(i + 1, "acme", MINUTE - 3 * 3600 + 60 * i, 90.0) for i in range(180)]
        rows.append((999, "acme", MINUTE - 10 * 3600, 1.0))  # beyond 6 hours
        await outbox.execute(deliveries(rows))
        kept = activity.ActivityReader()
        first = (await kept.read(outbox, ["acme"], 6, settle=SETTLE, now=NOW))[2]
        assert totals(first) == {"acme": (180, 180, 0)}
        # As time goes on, the same reader and a new one agree: every minute counted once.
        for later in (NOW + 45, NOW + 600, NOW + 3600):
            again = (await kept.read(outbox, ["acme"], 6, settle=SETTLE, now=later))[2]
            fresh = (
                await activity.ActivityReader().read(outbox, ["acme"], 6, settle=SETTLE, now=later)
            )[2]
            assert again == fresh
        # A wider window reads the older hours it had not read.
        wide = (await kept.read(outbox, ["acme"], 24, settle=SETTLE, now=NOW + 3600))[2]
        assert totals(wide) == {"acme": (181, 181, 0)}


def test_percentile_of_buckets() -> None:
    assert activity.percentile([], 0.5) is None
    assert activity.percentile([(10, 1)], 0.99) == 10
    assert activity.percentile([(30, 1), (10, 98), (20, 1)], 0.99) == 20
