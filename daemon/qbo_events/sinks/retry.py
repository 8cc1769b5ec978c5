"""Pure: when to try a failed delivery again, and what a `Retry-After` header asks for."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

JITTER: Final = 0.2
# The longest wait a Retry-After may ask for: a header saying "a year" (or 10^20 s) must not
# park an endpoint or a realm for ever. A day is past any schedule step and any real throttle.
MAX_RETRY_AFTER: Final = 86400.0
_DELTA_SECONDS: Final = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


def next_delay(
    attempts: int,
    schedule: Sequence[float],
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait after `attempts` failed attempts (1 = the first), or None to dead-letter.

    The schedule's step gets +-20 % jitter so that a receiver that failed for many events at once
    is not hit by all their retries in the same second; a `retry_after` is a floor, never cut short.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * (1.0 + JITTER * (2.0 * rand() - 1.0))
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return max(delay, 0.0)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now` (unix time): delta-seconds or an HTTP-date.

    None when absent or unreadable; a date in the past is 0; anything past MAX_RETRY_AFTER
    is MAX_RETRY_AFTER.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return min(seconds, MAX_RETRY_AFTER) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    # OverflowError: a year, hour or zone too long for the C datetime the parser builds.
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or an obsolete zone: HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER)
