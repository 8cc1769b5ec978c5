"""The switches that make the API misbehave on purpose, and the per-realm rate limits."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class FaultSwitches:
    """Counters run down one per API call; `slow` delays every API answer while it is set."""

    throttle: int = 0  # answer 429 to the next N API calls
    errors: int = 0  # answer `error_status` to the next N API calls
    error_status: int = 503
    slow: float = 0.0
    # Seconds sent as `Retry-After` with every 429; None sends none, as QuickBooks does (its
    # documentation says only "wait 60 seconds"). Lets tests see a throttled client recover fast.
    retry_after: float | None = None

    def take(self) -> int | None:
        """The status to refuse this call with, if a switch is on."""
        if self.errors > 0:
            self.errors -= 1
            return self.error_status
        if self.throttle > 0:
            self.throttle -= 1
            return 429
        return None

    def state(self) -> dict[str, Any]:
        return asdict(self)


class RateLimiter:
    """Sliding windows per realm: at most `per_second` calls in any second, `per_minute` in 60 s.

    Refused calls do not count, so a client that backs off is served again.
    """

    def __init__(
        self, per_second: int, per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = per_second
        self.per_minute = per_minute
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}
        self.refused = 0

    def admit(self, realm_id: str) -> bool:
        now = self._clock()
        calls = self._calls.setdefault(realm_id, deque())
        while calls and calls[0] <= now - 60.0:
            calls.popleft()
        last_second = 0
        for moment in reversed(calls):
            if moment <= now - 1.0:
                break
            last_second += 1
        if last_second >= self.per_second or len(calls) >= self.per_minute:
            self.refused += 1
            return False
        calls.append(now)
        return True
