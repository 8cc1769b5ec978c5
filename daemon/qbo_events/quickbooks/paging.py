"""Pure: reading every object of an entity with Query, a page at a time, in a way that resumes.

Pages go by MetaData.LastUpdatedTime, never by Id: each page after the first asks for the
objects updated at or after the newest time of the page before, and leaves out the ids it has
seen at exactly that time. An object that changes while the pages are read moves to the end
and is read again (with its new state) rather than shifting an unread one out of reach. Only
a page whose objects all share one second pages by offset (STARTPOSITION) within that second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Final

from qbo_events import qbtime
from qbo_events.quickbooks.client import format_changed_since
from qbo_events.resync_store import Position

PAGE: Final = 1000  # MAXRESULTS' ceiling


def statement(
    entity: str, position: Position, *, since: str | None, with_inactive: bool, page: int = PAGE
) -> str:
    """The Query of the page at `position`, of objects updated at or after `since` if given."""
    lower = position.after or since
    where = []
    if lower is not None:
        where.append(f"MetaData.LastUpdatedTime >= '{format_changed_since(qbtime.parse(lower))}'")
    if with_inactive:
        # Name-list records "deleted" in QuickBooks are inactive, which Query hides unless asked.
        where.append("Active IN (true, false)")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return (
        f"SELECT * FROM {entity}{clause} ORDERBY MetaData.LastUpdatedTime"
        f" STARTPOSITION {position.start} MAXRESULTS {page}"
    )


def advance(
    position: Position, objects: list[dict[str, Any]], page: int = PAGE
) -> tuple[list[dict[str, Any]], Position | None]:
    """The page's objects not read before, and the next page's position (None: the last page)."""
    after = _second(position.after) if position.after is not None else None
    seen = frozenset(position.seen)
    fresh = [o for o in objects if not (after is not None and _at(o) == after and _id(o) in seen)]
    if len(objects) < page:
        return fresh, None
    newest = max(_at(o) for o in objects)
    if after is not None and newest <= after:
        # A whole page of one second: on by offset, remembering what it held.
        return fresh, Position(position.after, position.start + page, _ids(seen, objects, newest))
    return fresh, Position(format_changed_since(newest), 1, _ids(frozenset(), objects, newest))


def _ids(
    seen: frozenset[str], objects: Iterable[dict[str, Any]], at: dt.datetime
) -> tuple[str, ...]:
    return tuple(sorted(seen | {_id(o) for o in objects if _at(o) == at}))


def _id(obj: dict[str, Any]) -> str:
    return str(obj.get("Id"))


def _at(obj: dict[str, Any]) -> dt.datetime:
    meta = obj.get("MetaData")
    try:
        return _second(meta.get("LastUpdatedTime") if isinstance(meta, dict) else None)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def _second(value: object) -> dt.datetime:
    return qbtime.parse(value).replace(microsecond=0)
