"""Where the outbox's commits run: on the event loop while they are quick, on a helper thread
while the storage is slow, with hysteresis so that a noisy disk does not flip it back and forth."""

from __future__ import annotations

from collections import deque

import structlog

log = structlog.get_logger("qbo_events.outbox")

# Seconds, moving average, above which commits leave the loop. A quick SSD commits in 0.2-0.4 ms;
# under a heavy webhook load on two cores, with checkpoints, the average reaches 2-3 ms, and
# committing on the loop still takes in a quarter more webhooks a second than the thread does.
SLOW_COMMIT = 0.005
# Commits move by the median of the last SLOW_SAMPLES commit times, not by their average: a single
# fsync that a busy disk holds up for 50 ms lifts an average past SLOW_COMMIT for several commits,
# which on an idle machine flipped the placement back and forth about twenty times in 14 minutes.
SLOW_SAMPLES = 9
QUICK_FOR = 60.0  # seconds the median must stay below half of SLOW_COMMIT before commits return
_WEIGHT = 0.2  # of the newest commit in the moving average


class Placement:
    """Where commits run: on the loop while they are quick, on the helper thread while slow."""

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.quick = slow / 2
        self.average = 0.0  # reported as the commit time
        self.threaded = False
        self._recent: deque[float] = deque(maxlen=SLOW_SAMPLES)
        self._quick_since: float | None = None

    def record(self, took: float, now: float) -> None:
        self.average += _WEIGHT * (took - self.average)
        self._recent.append(took)
        if len(self._recent) < SLOW_SAMPLES:
            return
        median = sorted(self._recent)[SLOW_SAMPLES // 2]
        if not self.threaded:
            if median > self.slow:
                self.threaded = True
                self._quick_since = None
                log.warning(
                    "outbox commits are slow; committing on a helper thread",
                    median_ms=round(1000 * median, 3),
                )
        elif median >= self.quick:
            self._quick_since = None
        elif self._quick_since is None:
            self._quick_since = now
        elif now - self._quick_since >= QUICK_FOR:
            self.threaded = False
            log.info("outbox commits are quick again; committing on the event loop")
