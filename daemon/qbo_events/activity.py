"""Per-minute activity for the console's chart: events accepted and delivered, failed attempts and
delivery latency (accepted to delivered, p50 and p99) per instance, from the history tables.

Cheap by construction, since the console asks every few seconds:
- History and attempts are read by ranges of their indexed time columns (history.delivered_at,
  attempts.at), a few minutes at a time, and aggregated in SQLite with GROUP BY. A delivered row
  adds to its delivery minute and to its acceptance minute, so no range reads a row twice.
- Minutes older than `settle` seconds no longer change (every attempt and delivery of them is
  committed), so their sums are kept: after the first answer, each one reads only the last few
  minutes of the history.
- Latency percentiles come from a histogram of two significant digits (at most 10% off), which
  SQLite counts without sorting the deliveries.
The outbox (undelivered rows: few while receivers keep up) is read whole each time, for its counts
and for when its rows were accepted.
"""

from __future__ import annotations

import asyncio
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
CHUNK: Final = 2 * MINUTE  # one read of history on the event loop covers at most this much


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


class _Sums:
    __slots__ = ("accepted", "buckets", "delivered", "failed")

    def __init__(self) -> None:
        self.accepted = 0
        self.delivered = 0
        self.failed = 0
        self.buckets: dict[int, int] = {}

    def add(self, other: _Sums) -> None:
        self.accepted += other.accepted
        self.delivered += other.delivered
        self.failed += other.failed
        for value, count in other.buckets.items():
            self.buckets[value] = self.buckets.get(value, 0) + count


# Per instance, per minute start.
Table = dict[str, dict[float, _Sums]]


def _table() -> Table:
    return defaultdict(lambda: defaultdict(_Sums))


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
    "CASE WHEN ms < 100 THEN ms ELSE CAST(substr(ms, 1, 2) AS INTEGER)"
    " * CAST(substr('100000000000000', 1, length(ms) - 1) AS INTEGER) END"
)


def _history(conn: sqlite3.Connection, start: float, end: float, into: Table) -> None:
    """Add what was delivered, and the attempts that failed, in [start, end)."""
    span = (start, end)
    for inst, minute, count in conn.execute(
        "SELECT instance, CAST(accepted_at / 60 AS INTEGER) * 60, COUNT(*) FROM history"
        " WHERE delivered_at >= ? AND delivered_at < ? GROUP BY 1, 2",
        span,
    ):
        into[inst][minute].accepted += count
    for inst, minute, bucket, count in conn.execute(
        f"SELECT instance, minute, {_BUCKET}, COUNT(*) FROM ("
        " SELECT instance, CAST(delivered_at / 60 AS INTEGER) * 60 AS minute,"
        " CAST(MAX(delivered_at - accepted_at, 0) * 1000 AS INTEGER) AS ms"
        " FROM history WHERE delivered_at >= ? AND delivered_at < ?) GROUP BY 1, 2, 3",
        span,
    ):
        sums = into[inst][minute]
        sums.delivered += count
        sums.buckets[bucket] = sums.buckets.get(bucket, 0) + count
    # Attempts carry no instance: a failed one's event is in the history or still in the outbox.
    for inst, minute, count in conn.execute(
        "SELECT coalesce((SELECT instance FROM history WHERE history.seq = attempts.seq),"
        " (SELECT instance FROM outbox WHERE outbox.seq = attempts.seq)),"
        " CAST(at / 60 AS INTEGER) * 60, COUNT(*) FROM attempts"
        " WHERE at >= ? AND at < ? AND error IS NOT NULL GROUP BY 1, 2",
        span,
    ):
        if inst is not None:
            into[inst][minute].failed += count


def _read_history(outbox: Outbox, start: float, end: float, into: Table) -> None:
    outbox.query(lambda conn: _history(conn, start, end, into))


def _outbox(conn: sqlite3.Connection) -> tuple[Table, dict[str, int], dict[str, int]]:
    """When the undelivered rows were accepted; per instance, how many wait, how many are dead."""
    accepted = _table()
    undelivered: dict[str, int] = defaultdict(int)
    dead: dict[str, int] = defaultdict(int)
    for inst, state, minute, count in conn.execute(
        "SELECT instance, state, CAST(accepted_at / 60 AS INTEGER) * 60, COUNT(*) FROM outbox"
        " GROUP BY 1, 2, 3"
    ):
        (dead if state == "dead" else undelivered)[inst] += count
        accepted[inst][minute].accepted += count
    return accepted, undelivered, dead


class ActivityReader:
    """Keeps the sums of settled minutes between answers; one per daemon."""

    def __init__(self) -> None:
        self._settled = _table()
        self._from: float | None = None  # the settled sums cover history delivered in
        self._until = 0.0  # [_from, _until)
        self._lock = asyncio.Lock()

    async def _add(self, outbox: Outbox, start: float, end: float, into: Table) -> None:
        while start < end:
            stop = min(start + CHUNK, end)
            _read_history(outbox, start, stop, into)
            start = stop
            if start < end:
                await asyncio.sleep(0)  # let the loop turn between chunks of a first read

    async def read(
        self,
        outbox: Outbox,
        names: list[str],
        hours: int,
        *,
        settle: float,
        now: float | None = None,
    ) -> tuple[float, float, dict[str, InstanceActivity]]:
        """(window start, window end, per instance in `names` its activity over the last
        `hours`). Minutes older than `settle` seconds are kept, not read again."""
        now = time.time() if now is None else now
        since, until = window(hours, now)
        settled = min((now - settle) // MINUTE * MINUTE, until)
        async with self._lock:
            if self._from is None:
                self._from = self._until = max(since, settled)
            if since < self._from:
                await self._add(outbox, since, self._from, self._settled)
                self._from = since
            if self._until < settled:
                await self._add(outbox, self._until, settled, self._settled)
                self._until = settled
            self._forget(now - MAX_HOURS * 3600 - 3600)
            fresh = _table()
            await self._add(outbox, self._until, until, fresh)
            accepted, undelivered, dead = outbox.query(_outbox)
            found = {}
            for name in names:
                merged: dict[float, _Sums] = defaultdict(_Sums)
                for table in (self._settled, fresh, accepted):
                    for minute, sums in table.get(name, {}).items():
                        if since <= minute < until:
                            merged[minute].add(sums)
                found[name] = InstanceActivity(
                    undelivered=undelivered.get(name, 0),
                    dead=dead.get(name, 0),
                    minutes=[_minute(minute, sums) for minute, sums in sorted(merged.items())],
                )
        return since, until, found

    def _forget(self, before: float) -> None:
        for minutes in self._settled.values():
            for minute in [m for m in minutes if m < before]:
                del minutes[minute]
        if self._from is not None and self._from < before:
            self._from = before


def _minute(t: float, sums: _Sums) -> Minute:
    buckets = list(sums.buckets.items())
    return Minute(
        t=float(t),
        accepted=sums.accepted,
        delivered=sums.delivered,
        failed=sums.failed,
        p50_ms=percentile(buckets, 0.50),
        p99_ms=percentile(buckets, 0.99),
    )
