"""The API calls the sandbox answered, by kind and realm, as QuickBooks meters them."""

from __future__ import annotations

from collections import Counter, deque
from datetime import datetime
from typing import Final

import msgspec

from .clock import utc_now, utc_z

KINDS: Final = ("batch", "cdc", "query", "read", "token", "write")
_KIND_OF_ROUTE: Final = {
    "batch": "batch",
    "cdc": "cdc",
    "query": "query",
    "query-post": "query",
    "read": "read",
    "token": "token",
    "write": "write",
}
_KEPT: Final = 10_000  # calls kept for /_sandbox/calls; the counts cover every call


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One answered call: what a test reads to count the calls of one poll cycle."""

    seq: int
    at: str  # 2026-11-27T13:04:47.123Z
    realm_id: str | None  # None for a token call whose grant named no known realm
    kind: str
    status: int


class CallLog:
    """Counts every call by kind, overall and per realm, and keeps the latest ones in order."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str | None, str]] = Counter()
        self._recent: deque[Call] = deque(maxlen=_KEPT)
        self._seq = 0

    def record(
        self, route: str, realm_id: str | None, status: int, now: datetime | None = None
    ) -> None:
        """Count a call of the route; control, discovery and unmatched routes are not calls."""
        kind = _KIND_OF_ROUTE.get(route)
        if kind is None:
            return
        self._seq += 1
        self._counts[(realm_id, kind)] += 1
        at = utc_z(now or utc_now(), 3)
        self._recent.append(Call(seq=self._seq, at=at, realm_id=realm_id, kind=kind, status=status))

    def by_kind(self) -> dict[str, int]:
        totals = dict.fromkeys(KINDS, 0)
        for (_, kind), count in self._counts.items():
            totals[kind] += count
        return totals

    def by_realm(self) -> dict[str, dict[str, int]]:
        realms: dict[str, dict[str, int]] = {}
        for (realm_id, kind), count in sorted(self._counts.items(), key=str):
            if realm_id is not None:
                realms.setdefault(realm_id, dict.fromkeys(KINDS, 0))[kind] += count
        return realms

    def calls(self, realm_id: str | None = None, after: int = 0) -> list[Call]:
        """The kept calls numbered above `after`, of one realm or all."""
        return [
            c
            for c in self._recent
            if c.seq > after and (realm_id is None or c.realm_id == realm_id)
        ]
