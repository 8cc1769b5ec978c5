"""Per-minute activity for the console's chart: events accepted and delivered, failed attempts and
delivery latency (accepted to delivered, p50 and p99) per instance, read from the history tables.

Every query aggregates in SQLite with GROUP BY over an indexed time column (history.delivered_at,
attempts.at), so the answer stays small (minutes x instances x latency buckets) however many events
the window holds. Latency percentiles come from a histogram of two significant digits (at most 10%
off), which SQLite can count without sorting every delivery.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Final

import msgspec

from qbo_events.outbox import Outbox

MINUTE: Final = 60
MAX_HOURS: Final = 24


class Minute(msgspec.Struct, frozen=True, kw_only=True):
    """One minute with something in it; `t` is its start (unix seconds)."""

    t: float
    accepted: int = 0
    delivered: int = 0
    failed: int = 0  # attempts that did not get a 2xx
    p50_ms: float | None = None  # accepted to delivered, of the events delivered this minute
    p99_ms: float | None = None


class InstanceActivity(msgspec.Struct, frozen=True, kw_only=True):
    undelivered: int  # now: waiting or retrying
    dead: int  # now
    minutes: list[Minute]  # oldest first; minutes with nothing in them are left out


def window(hours: int, now: float) -> tuple[float, float]:
    """The first minute's start and the end of the current minute."""
    end = (now // MINUTE + 1) * MINUTE
    return end - hours * 3600, end


def percentile(buckets: Iterable[tuple[int, int]], fraction: float) -> float | None:
    """The value at `fraction` of (value_ms, count) buckets, or None when there are none."""
    ordered = sorted(buckets)
    total = sum(count for _, count in ordered)
    if not total:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for value, count in ordered:
        seen += count
        if seen >= rank:
            return float(value)
    return float(ordered[-1][0])


# The latency rounded down to two significant digits: 1234 ms -> 1200, 87 -> 87.
_BUCKET: Final = (
    "CASE WHEN ms < 100 THEN ms"
    " ELSE CAST(substr(ms, 1, 2) AS INTEGER)"
    " * CAST(substr('100000000000000', 1, length(ms) - 1) AS INTEGER) END"
)


def _read(conn: sqlite3.Connection, since: float, names: list[str]) -> dict[str, InstanceActivity]:
    minutes: dict[str, dict[float, dict[str, int]]] = {n: defaultdict(dict) for n in names}

    def add(instance: str, minute: float, key: str, count: int) -> None:
        if instance in minutes:
            slot = minutes[instance][minute]
            slot[key] = slot.get(key, 0) + count

    # An event accepted in the window was delivered in it too: the delivered_at index bounds both.
    for inst, minute, count in conn.execute(
        "SELECT instance, CAST(accepted_at / 60 AS INTEGER) * 60, COUNT(*) FROM history"
        " WHERE delivered_at >= ? AND accepted_at >= ? GROUP BY 1, 2",
        (since, since),
    ):
        add(inst, minute, "accepted", count)
    # Undelivered rows are few next to the history; the outbox has no accepted_at index to use.
    undelivered: dict[str, int] = defaultdict(int)
    dead: dict[str, int] = defaultdict(int)
    for inst, state, minute, count in conn.execute(
        "SELECT instance, state, CAST(accepted_at / 60 AS INTEGER) * 60, COUNT(*) FROM outbox"
        " GROUP BY 1, 2, 3"
    ):
        (dead if state == "dead" else undelivered)[inst] += count
        if minute >= since:
            add(inst, minute, "accepted", count)
    latency: dict[tuple[str, float], list[tuple[int, int]]] = defaultdict(list)
    for inst, minute, bucket, count in conn.execute(
        f"SELECT instance, minute, {_BUCKET}, COUNT(*) FROM ("
        " SELECT instance, CAST(delivered_at / 60 AS INTEGER) * 60 AS minute,"
        " CAST(MAX(delivered_at - accepted_at, 0) * 1000 AS INTEGER) AS ms"
        " FROM history WHERE delivered_at >= ?) GROUP BY 1, 2, 3",
        (since,),
    ):
        add(inst, minute, "delivered", count)
        latency[(inst, minute)].append((bucket, count))
    # Attempts carry no instance: a failed one's event is in the history or still in the outbox.
    for inst, minute, count in conn.execute(
        "SELECT coalesce((SELECT instance FROM history WHERE history.seq = attempts.seq),"
        " (SELECT instance FROM outbox WHERE outbox.seq = attempts.seq)),"
        " CAST(at / 60 AS INTEGER) * 60, COUNT(*) FROM attempts"
        " WHERE at >= ? AND error IS NOT NULL GROUP BY 1, 2",
        (since,),
    ):
        if inst is not None:
            add(inst, minute, "failed", count)
    found = {}
    for name in names:
        rows = []
        for minute, counts in sorted(minutes[name].items()):
            buckets = latency.get((name, minute), [])
            rows.append(
                Minute(
                    t=float(minute),
                    accepted=counts.get("accepted", 0),
                    delivered=counts.get("delivered", 0),
                    failed=counts.get("failed", 0),
                    p50_ms=percentile(buckets, 0.50),
                    p99_ms=percentile(buckets, 0.99),
                )
            )
        found[name] = InstanceActivity(undelivered=undelivered[name], dead=dead[name], minutes=rows)
    return found


def read(
    outbox: Outbox, names: list[str], hours: int, now: float | None = None
) -> tuple[float, float, dict[str, InstanceActivity]]:
    """(window start, window end, per configured instance its activity over the last `hours`)."""
    since, until = window(hours, time.time() if now is None else now)
    return since, until, outbox.query(lambda conn: _read(conn, since, names))
