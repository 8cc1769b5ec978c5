"""Metering of QuickBooks API calls per instance, kind and calendar month (UTC), kept durably."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, Protocol

import structlog

from qbo_events.errors import OutboxError

KINDS: Final = ("cdc", "query", "read", "batch", "token")
# What Intuit meters ("CorePlus": data out); OAuth calls are free.
METERED: Final = frozenset(("cdc", "query", "read", "batch"))
# Counts reach the disk this often; a crash loses at most this many seconds of them.
FLUSH_INTERVAL: Final = 5.0
# Rows older than this many months are pruned; a year back, plus the month under way.
KEEP_MONTHS: Final = 13

log = structlog.get_logger("qbo_events.meter")

Key = tuple[str, str]  # (instance, kind)


class CallStore(Protocol):
    """Durable home of the counts; the outbox is one."""

    async def load_api_calls(self, month: str) -> dict[Key, int]: ...

    async def save_api_calls(
        self, rows: list[tuple[str, str, str, int]], *, prune_before: str, durable: bool
    ) -> None: ...


def kind_of(path: str) -> str:
    """The metered kind of an accounting API path below `/v3/company/<realm>/`."""
    head = path.split("?", 1)[0].split("/", 1)[0].lower()
    return head if head in ("cdc", "query", "batch") else "read"


def month_of(moment: float) -> str:
    """`2026-12` for a unix time, in UTC: Intuit meters by calendar month."""
    return time.strftime("%Y-%m", time.gmtime(moment))


def elapsed_fraction(moment: float) -> float:
    """How much of its UTC calendar month `moment` has run through, in (0, 1]."""
    at = dt.datetime.fromtimestamp(moment, dt.UTC)
    start = dt.datetime(at.year, at.month, 1, tzinfo=dt.UTC)
    days = calendar.monthrange(at.year, at.month)[1]
    return max((at - start).total_seconds(), 1.0) / (days * 86400)


def projection(total: int, moment: float) -> int:
    """The month's total if calls go on at the rate seen so far."""
    return round(total / elapsed_fraction(moment))


def months_back(month: str, count: int) -> str:
    year, number = map(int, month.split("-"))
    index = year * 12 + number - 1 - count
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


class CallMeter:
    """The current month's calls per (instance, kind), loaded at start and flushed in batches."""

    def __init__(
        self,
        store: CallStore,
        *,
        on_count: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._on_count = on_count
        self._clock = clock
        self.month = month_of(clock())
        self._counts: Counter[Key] = Counter()
        self._unsaved: dict[tuple[str, str, str], int] = {}  # (month, instance, kind) -> count
        self._logged_day = ""
        self._metered = 0  # this month's calls of the METERED kinds, kept as they are counted
        # App-wide, as Intuit meters: 0 is no budget. Calls past it are refused before they leave.
        self.budget = 0

    async def load(self) -> None:
        """Continue the month under way from the counts stored by an earlier run."""
        self.month = month_of(self._clock())
        stored = await self._store.load_api_calls(self.month)
        for key, count in stored.items():
            self._counts[key] = max(self._counts[key], count)
        self._metered = sum(c for (_, kind), c in self._counts.items() if kind in METERED)

    def count(self, instance: str, kind: str) -> None:
        """One request sent; a retried request is another one, as Intuit meters it."""
        self._roll()
        key = (instance, kind)
        self._counts[key] += 1
        if kind in METERED:
            self._metered += 1
        self._unsaved[(self.month, instance, kind)] = self._counts[key]
        if self._on_count is not None:
            self._on_count(kind)

    def _roll(self) -> None:
        month = month_of(self._clock())
        if month != self.month:
            # The old month's last counts are already in _unsaved; its rows stay in the store.
            ended = sum(self._counts.values())
            log.info("quickbooks.calls_month_ended", month=self.month, total=ended)
            self.month = month
            self._counts.clear()
            self._metered = 0

    async def flush(self, *, durable: bool = False) -> None:
        """Write the counts changed since the last flush; kept for the next one on failure."""
        self._roll()
        if not self._unsaved:
            return
        rows = [(m, i, k, c) for (m, i, k), c in self._unsaved.items()]
        self._unsaved = {}
        try:
            await self._store.save_api_calls(
                rows, prune_before=months_back(self.month, KEEP_MONTHS - 1), durable=durable
            )
        except BaseException:
            for m, i, k, c in rows:
                newer = self._unsaved.get((m, i, k), 0)
                self._unsaved[(m, i, k)] = max(newer, c)
            raise

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every FLUSH_INTERVAL and once more at `stop`; log the projection once a day."""
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL):
                    await stop.wait()
            # Read before the flush: a stop that comes during it still gets a last one.
            last = stop.is_set()
            self.log_daily()
            try:
                # The last flush waits for the disk: a clean stop must not lose counts.
                await self.flush(durable=last)
            except OutboxError as exc:
                # Once per outage, not every few seconds: the outbox reports the storage itself.
                if not failing:
                    log.warning("quickbooks.calls_not_saved", error=str(exc))
                failing = True
            else:
                if failing:
                    log.info("quickbooks.calls_saved_again")
                failing = False
            if last:
                return

    def log_daily(self) -> bool:
        """Log the month so far and its projection, the first time this is asked each UTC day."""
        now = self._clock()
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if day == self._logged_day:
            return False
        self._logged_day = day
        self._roll()
        log.info(
            "quickbooks.calls_month",
            month=self.month,
            total=self.total(),
            projection=projection(self.total(), now),
            by_kind=self.by_kind(),
        )
        return True

    def admits(self, kind: str) -> bool:
        """Whether a call of `kind` may leave now without passing the monthly budget."""
        if not self.budget or kind not in METERED:
            return True
        self._roll()
        return self._metered < self.budget

    def metered_total(self) -> int:
        """The month's calls that Intuit meters (all kinds but token)."""
        self._roll()
        return self._metered

    def total(self, instance: str | None = None) -> int:
        self._roll()
        return sum(c for (i, _), c in self._counts.items() if instance in (None, i))

    def by_kind(self, instance: str | None = None) -> dict[str, int]:
        self._roll()
        result: Counter[str] = Counter()
        for (i, kind), count in self._counts.items():
            if instance in (None, i):
                result[kind] += count
        return dict(sorted(result.items()))

    def instance_stats(self, instance: str) -> dict[str, Any]:
        """The `api_calls` of one instance in /status."""
        return {
            "month": self.month,
            "by_kind": self.by_kind(instance),
            "total": self.total(instance),
        }

    def stats(self) -> dict[str, Any]:
        """App-wide: Intuit meters per app, so the budget is the sum over instances."""
        total = self.total()
        return {
            "month": self.month,
            "total": total,
            "projection": projection(total, self._clock()),
            "by_kind": self.by_kind(),
        }

    def __repr__(self) -> str:
        return f"<CallMeter {self.month} total={self.total()}>"
