"""Each realm's request budget: Intuit's per-minute and per-second windows, concurrency, pauses."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

# Intuit's per-second limit per realm and app, which holds whatever the per-minute setting says.
REQUESTS_PER_SECOND: Final = 10
# Each window is counted this much longer than Intuit's, because the clock here starts a request
# a little before QuickBooks sees it arrive, and network jitter can bunch arrivals together; one
# 429 costs the realm a minute, a tenth of a second per window costs almost nothing.
WINDOW_MARGIN: Final = 0.1


class _Window:
    """Start times of the requests made within the last `span` seconds, at most `limit` of them."""

    def __init__(self, limit: int, span: float) -> None:
        self.limit = limit
        self.span = span
        self.starts: collections.deque[float] = collections.deque()

    def delay(self, now: float) -> float:
        # The same sum as the delay below, so a start is dropped exactly when its wait is over.
        while self.starts and self.starts[0] + self.span <= now:
            self.starts.popleft()
        return 0.0 if len(self.starts) < self.limit else self.starts[0] + self.span - now


class RealmLimiter:
    """One realm's budget: requests per minute and per second, requests in flight, 429 pauses.

    Sliding windows rather than a token bucket, so no 60 s span ever holds more than
    `requests_per_minute` starts, which is how Intuit counts.
    """

    def __init__(
        self,
        *,
        requests_per_minute: int,
        max_concurrent_requests: int,
        requests_per_second: int = REQUESTS_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_concurrent_requests = max_concurrent_requests
        self._minute = _Window(requests_per_minute, 60.0 + WINDOW_MARGIN)
        self._second = _Window(requests_per_second, 1.0 + WINDOW_MARGIN)
        self._slots = asyncio.Semaphore(max_concurrent_requests)
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        """After a 429: no request of this realm starts for `seconds`."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self.pauses += 1

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    @property
    def paused_until(self) -> float:
        """When the last pause ends, on the limiter's clock (time.monotonic by default)."""
        return self._paused_until

    def stats(self) -> dict[str, object]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "paused_for": round(self.paused_for, 3),
            "pauses": self.pauses,
        }

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the realm's request slots, started within its rate and outside any pause."""
        async with self._slots:
            while True:
                now = self._clock()
                wait = max(
                    self._paused_until - now, self._minute.delay(now), self._second.delay(now)
                )
                if wait <= 0:
                    break
                # Sleep exactly until the earliest moment the budget allows, then look again:
                # a 429 elsewhere in the realm may have moved that moment meanwhile.
                await self._sleep(wait)
            self._minute.starts.append(now)
            self._second.starts.append(now)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1
