"""The monthly API call budget: how far poll intervals stretch so that the month stays within it.

Intuit meters data-out calls per app and blocks them all for the rest of the month once the tier's
allowance is spent, so the budget is app-wide. The plan spreads what is left of it over what is
left of the month: hybrid instances are stretched first (their webhooks carry the changes, polling
only backs them up), polling-only instances after them, webhook-only instances never (they make no
calls). The plan is a pure function; the keeper recomputes it as the month's count grows and hands
the factors to the polling loops.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import msgspec
import structlog

from qbo_events.config import Config, Instance
from qbo_events.poll_budget import calls_per_minute

# Plan for this share of what is left: paging past 1,000 rows, retries and cap fallbacks cost
# calls that the configured intervals do not show.
SPEND_SHARE: Final = 0.9
# Hybrid polling is a safety net: it may stretch this far (15 minutes -> 24 hours) before a
# polling-only instance, whose polls are its only source of changes, is slowed at all.
HYBRID_MAX_STRETCH: Final = 96.0
# How often the plan is recomputed: the count moves a little with every poll.
REPLAN_INTERVAL: Final = 60.0

log = structlog.get_logger("qbo_events.budget")


class Stretch(msgspec.Struct, frozen=True):
    """Factors on the configured poll intervals; `math.inf` pauses polling until the month turns."""

    hybrid: float = 1.0
    polling: float = 1.0

    @property
    def stretched(self) -> bool:
        return self.hybrid > 1.0 or self.polling > 1.0

    def for_instance(self, instance: Instance) -> float:
        if not instance.polls:
            return 1.0
        return self.hybrid if instance.takes_webhooks else self.polling


NO_STRETCH: Final = Stretch()


def seconds_left_in_month(moment: float) -> float:
    """Seconds from `moment` to the start of the next UTC calendar month (at least 1)."""
    at = dt.datetime.fromtimestamp(moment, dt.UTC)
    days = calendar.monthrange(at.year, at.month)[1]
    end = dt.datetime(at.year, at.month, 1, tzinfo=dt.UTC) + dt.timedelta(days=days)
    return max((end - at).total_seconds(), 1.0)


def plan(
    *, budget: int, used: int, seconds_left: float, hybrid_rate: float, polling_rate: float
) -> Stretch:
    """The least stretching that keeps the month's projected calls within `budget`.

    Rates are calls per second at the configured intervals. Stretching a group by f divides its
    rate by f: hybrid first up to HYBRID_MAX_STRETCH, then polling-only up to the same, then both
    alike; nothing left to spend pauses both.
    """
    if budget <= 0:
        return NO_STRETCH
    hybrid, polling = hybrid_rate, polling_rate
    allowed = SPEND_SHARE * (budget - used) / seconds_left
    if hybrid + polling <= allowed:
        return NO_STRETCH
    if allowed <= 0:
        return Stretch(math.inf if hybrid else 1.0, math.inf if polling else 1.0)
    cap = HYBRID_MAX_STRETCH
    if polling + hybrid / cap <= allowed:
        return Stretch(hybrid / (allowed - polling), 1.0)
    if (polling + hybrid) / cap <= allowed:
        return Stretch(cap if hybrid else 1.0, polling / (allowed - hybrid / cap))
    both = (polling + hybrid) / allowed
    return Stretch(both if hybrid else 1.0, both if polling else 1.0)


def rates(instances: Iterable[Instance]) -> tuple[float, float]:
    """Calls per second at the configured intervals: (hybrid instances, polling-only ones)."""
    hybrid = polling = 0.0
    for inst in instances:
        if not (inst.polls and inst.event.notification.enabled):
            continue
        rate = calls_per_minute(inst) / 60.0
        if inst.takes_webhooks:
            hybrid += rate
        else:
            polling += rate
    return hybrid, polling


class MeteredCount(Protocol):
    month: str

    def metered_total(self) -> int: ...


class BudgetKeeper:
    """Recomputes the plan every REPLAN_INTERVAL and on demand, and tells the loops."""

    def __init__(
        self,
        meter: MeteredCount,
        apply: Callable[[Stretch], None],
        *,
        on_change: Callable[[Stretch], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._meter = meter
        self._apply = apply
        self._on_change = on_change
        self._clock = clock
        self._config: Config | None = None
        self._wakeup = asyncio.Event()
        self._halted = False
        self.stretch = NO_STRETCH
        self.since: float | None = None  # when the current stretching began
        self.projection = 0

    def configure(self, config: Config) -> None:
        self._config = config
        self._wakeup.set()

    @property
    def budget(self) -> int:
        return self._config.quickbooks.monthly_call_budget if self._config else 0

    def replan(self) -> Stretch:
        config = self._config
        if config is None:
            return self.stretch
        now = self._clock()
        used = self._meter.metered_total()
        hybrid, polling = rates(config.instances)
        left = seconds_left_in_month(now)
        self.projection = round(used + (hybrid + polling) * left)
        new = plan(
            budget=self.budget,
            used=used,
            seconds_left=left,
            hybrid_rate=hybrid,
            polling_rate=polling,
        )
        if _same(new, self.stretch):
            return self.stretch
        old, self.stretch = self.stretch, new
        if new.stretched:
            self.since = self.since if old.stretched else now
            log.warning(
                "quickbooks.budget_stretch",
                budget=self.budget,
                month=self._meter.month,
                used=used,
                projection=self.projection,
                hybrid_factor=_show(new.hybrid),
                polling_factor=_show(new.polling),
            )
        else:
            self.since = None
            log.info(
                "quickbooks.budget_back_to_configured",
                budget=self.budget,
                month=self._meter.month,
                used=used,
            )
        self._apply(new)
        if self._on_change is not None:
            self._on_change(new)
        return new

    def halt(self) -> None:
        self._halted = True
        self._wakeup.set()

    async def run(self) -> None:
        """Replan until halted: every REPLAN_INTERVAL, and at once after a `configure`."""
        while not self._halted:
            self._wakeup.clear()
            self.replan()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPLAN_INTERVAL):
                    await self._wakeup.wait()

    def stats(self) -> dict[str, Any]:
        return {
            "monthly_call_budget": self.budget or None,
            "used": self._meter.metered_total(),
            "projection": self.projection,
            "stretched": self.stretch.stretched,
            "stretch": {
                "hybrid": _show(self.stretch.hybrid),
                "polling": _show(self.stretch.polling),
            },
            "since": _iso(self.since) if self.since is not None else None,
        }


def _same(a: Stretch, b: Stretch) -> bool:
    """Equal within 5%: a count that moves by a few calls must not re-time every loop."""

    def close(x: float, y: float) -> bool:
        if math.isinf(x) or math.isinf(y):
            return x == y
        return abs(x - y) <= 0.05 * max(x, y)

    return close(a.hybrid, b.hybrid) and close(a.polling, b.polling)


def _show(factor: float) -> float | str:
    return "paused" if math.isinf(factor) else round(factor, 2)


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
