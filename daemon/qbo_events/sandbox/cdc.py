"""Change Data Capture as QuickBooks answers it: 30 days back, 1000 objects, no promised order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, Final

from . import catalog
from .clock import pacific_ms, parse_timestamp
from .company import Company
from .responses import Fault

MAX_AGE: Final = timedelta(days=30)
_KNOWN: Final = {e.lower(): e for e in catalog.API_ENTITIES}


def _entities(text: str) -> list[str]:
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        entity = _KNOWN.get(name.lower())
        if entity is None:
            raise Fault(
                "Invalid Request Parameters", f"Invalid entity name for cdc: {name}", code="4000"
            )
        if entity in catalog.CDC_REFUSED:
            raise Fault(
                "Unsupported Operation", f"Operation cdc is not supported for {entity}", code="500"
            )
        if entity not in names:
            names.append(entity)
    if not names:
        raise Fault(
            "Invalid Request Parameters", "Required parameter entities is missing", code="4000"
        )
    return names


def _since(text: str | None, now: datetime) -> datetime:
    if not text:
        raise Fault(
            "Invalid Request Parameters", "Required parameter changedSince is missing", code="4000"
        )
    try:
        since = parse_timestamp(text)
    except ValueError:
        raise Fault(
            "Invalid Request Parameters", f"Invalid changedSince date: {text}", code="4000"
        ) from None
    if since < now - MAX_AGE:
        message = (
            f"Operation cdc with changedSince date {text} which is older than fixed days "
            f"is not supported."
        )
        raise Fault(message, message, code="500")
    return since


def cdc_response(
    company: Company,
    entities: str,
    changed_since: str | None,
    *,
    now: datetime,
    cap: int,
    rng: random.Random,
) -> dict[str, Any]:
    """The whole answer; at most `cap` objects across all entities, in shuffled order.

    Which objects a saturated answer keeps is arbitrary, as in QuickBooks: a client has to notice
    that it got `cap` objects and read the window again some other way.
    """
    names = _entities(entities)
    since = _since(changed_since, now)
    found = [(entity, obj) for entity in names for obj in company.changed_since(entity, since)]
    rng.shuffle(found)
    kept = found[:cap]
    blocks: list[dict[str, Any]] = []
    for entity in names:
        rows = [obj for name, obj in kept if name == entity]
        if rows:
            size = len(rows)
            blocks.append(
                {entity: rows, "startPosition": 1, "maxResults": size, "totalCount": size}
            )
        else:
            blocks.append({})
    return {"CDCResponse": [{"QueryResponse": blocks}], "time": pacific_ms(now)}
