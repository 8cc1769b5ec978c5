"""The refresh token's hard expiry: which instances to warn about today.

Intuit's refresh tokens end for good five years after the consent (x_refresh_token_hard_expires_in);
only a new connect gives another. From `quickbooks.reconnect_warning_days` before that moment an
instance is warned about once a UTC day: a log line and an `expiring` connection event.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

DAY = 86400.0


def day_of(moment: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


def due(
    now: float,
    hard_expiries: Mapping[str, float],
    warning_days: float,
    warned: Mapping[str, str],
) -> dict[str, float]:
    """The instances to warn now, each with its days left: a known hard expiry within the
    window, and no warning yet this UTC day."""
    today = day_of(now)
    return {
        name: max(0.0, (at - now) / DAY)
        for name, at in sorted(hard_expiries.items())
        if at > 0 and at - now <= warning_days * DAY and warned.get(name) != today
    }
