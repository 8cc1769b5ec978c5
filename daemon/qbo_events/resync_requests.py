"""Asking for a resync: the checks and the job row, shared by `qbo-events resync` and the
admin API so that both refuse and record alike."""

from __future__ import annotations

import time
from collections.abc import Sequence

from qbo_events import deliveries
from qbo_events.config import Instance
from qbo_events.quickbooks.resources import BY_NAME
from qbo_events.resync_store import Job, ResyncStore


def resources_of(instance: Instance, named: Sequence[str] | None) -> tuple[str, ...]:
    """The resources asked for (default: the instance's); ValueError naming unknown ones."""
    resources = (
        tuple(r.strip() for r in named if r.strip())
        if named
        else tuple(instance.event.poller.resources)
    )
    unknown = [r for r in resources if r not in BY_NAME]
    if unknown or not resources:
        raise ValueError(f"unknown resources: {', '.join(unknown) or '(none given)'}")
    return resources


def since_of(text: str | None) -> str | None:
    """`--since` as the job keeps it (RFC 3339 UTC); None for a full resync."""
    if not text:
        return None
    moment = deliveries.parse_time(text)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


async def request(
    store: ResyncStore,
    instance: Instance,
    *,
    resources: Sequence[str] | None,
    since: str | None,
    full: bool,
) -> Job:
    """Record a job. ValueError for bad input; ResyncError while the instance has one."""
    if full == bool(since):
        raise ValueError("give exactly one of since and full")
    return await store.create(
        instance.name, resources_of(instance, resources), since_of(since), time.time()
    )
