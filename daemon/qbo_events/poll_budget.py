"""Warnings for a valid config that polls faster than QuickBooks' request limits serve well."""

from __future__ import annotations

from typing import Final

from qbo_events.config import Config, Instance
from qbo_events.quickbooks.resources import BY_NAME

# Polling may take only this share of a realm's per-minute limit: the rest is for paging past
# 1,000 rows, retries after a 401 or a 5xx, and whatever else calls the same company.
HEADROOM: Final = 0.5
# Below this, each poll mostly finds nothing; webhooks (or hybrid) hear of a change sooner.
SHORTEST_SENSIBLE_MINUTES: Final = 1.0


def calls_per_minute(instance: Instance) -> float:
    """What a poll with little news costs: the CDC resources of an instance share one call at
    the shortest of their intervals (the others join it when due), and each resource that CDC
    refuses makes one Query at its own interval."""
    poller = instance.event.poller
    cdc = [poller.interval_for(name) for name in poller.resources if BY_NAME[name].cdc]
    query = [poller.interval_for(name) for name in poller.resources if not BY_NAME[name].cdc]
    return sum(60.0 / seconds for seconds in query) + (60.0 / min(cdc) if cdc else 0.0)


def warnings(config: Config) -> list[str]:
    """Each problem a line, keyed like the config errors; empty when polling is within limits."""
    found: list[str] = []
    by_realm: dict[str, list[Instance]] = {}
    for index, inst in enumerate(config.instances):
        if not inst.polls:
            continue
        by_realm.setdefault(inst.realm_id, []).append(inst)
        minutes = inst.event.poller.interval_seconds / 60.0
        if minutes < SHORTEST_SENSIBLE_MINUTES:
            found.append(
                f"instances[{index}].event.poller.refresh_interval: {minutes:g} minutes is "
                "shorter than QuickBooks serves well (1 minute or more); most polls would find "
                "nothing, and webhooks (vendor type hybrid) bring changes sooner"
            )
    limit = config.quickbooks.requests_per_minute
    budget = limit * HEADROOM
    for realm, instances in by_realm.items():
        rate = sum(calls_per_minute(inst) for inst in instances)
        if rate > budget:
            names = ", ".join(inst.name for inst in instances)
            found.append(
                f"realm {realm} ({names}): polling makes about {rate:.0f} QuickBooks calls a "
                f"minute, more than {budget:.0f} (half of quickbooks.requests_per_minute = "
                f"{limit}); polls would queue behind the limit and fall behind. Poll fewer "
                "resources (event.poller.urls) or less often (event.poller.refresh_interval)"
            )
    allowance = config.quickbooks.monthly_call_budget
    polled = [i for i in config.instances if i.polls and i.event.notification.enabled]
    month = sum(calls_per_minute(inst) for inst in polled) * 60 * 24 * 30
    if allowance and month > allowance:
        found.append(
            f"quickbooks.monthly_call_budget: polling at the configured intervals makes about "
            f"{month:,.0f} calls in 30 days, more than the budget of {allowance:,}; the daemon "
            "will stretch the intervals (hybrid instances first) to stay within it"
        )
    return found
