"""Fuzz the reading of polled objects: a well-formed Change or ValueError, whatever the object."""

from __future__ import annotations

import re
from typing import Any

from fuzzing import JSON, TIMES, _mutated, fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st
from qbo_events import qbtime
from qbo_events.events import Change, EventType, Source
from qbo_events.normalize import change_from_object

SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@st.composite
def polled_objects(draw: st.DrawFn) -> Any:
    """QuickBooks objects as CDC and Query return them, fields mutated or left out."""
    meta = {
        "CreateTime": draw(_mutated(TIMES)),
        "LastUpdatedTime": draw(_mutated(TIMES)),
    }
    obj: dict[str, Any] = {
        "Id": draw(_mutated(st.from_regex(r"[1-9][0-9]{0,5}", fullmatch=True))),
        "SyncToken": "0",
        "MetaData": draw(_mutated(st.just(meta))),
    }
    if draw(st.booleans()):
        obj["status"] = draw(_mutated(st.just("Deleted")))
    if draw(st.booleans()):
        obj["Active"] = draw(_mutated(st.booleans()))
    doomed = draw(st.sets(st.sampled_from(sorted(obj)), max_size=1))
    return {k: v for k, v in obj.items() if k not in doomed}


def usable_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and value != ""


def readable_time(obj: dict[str, Any]) -> bool:
    meta = obj.get("MetaData")
    if not isinstance(meta, dict):
        return False
    try:
        qbtime.parse(meta.get("LastUpdatedTime"))
    except ValueError:
        return False
    return True


@fuzz_settings(400)
@given(st.one_of(polled_objects(), JSON.filter(lambda v: isinstance(v, dict))))
@example({"Id": "1", "MetaData": {"LastUpdatedTime": "2026-01-01T00:00:00Z", "CreateTime": []}})
@example({"Id": True, "MetaData": {"LastUpdatedTime": "2026-01-01T00:00:00Z"}})
@example({"Id": "1", "MetaData": {"LastUpdatedTime": 1e300}})
def test_a_polled_object_is_a_change_or_value_error(obj: dict[str, Any]) -> None:
    try:
        change = change_from_object("310687", "Invoice", obj)
    except ValueError as exc:
        assert str(exc)
        # Only for want of an Id or of a LastUpdatedTime: a change is never dropped for a
        # CreateTime, which only tells a create from an update.
        assert not (usable_id(obj.get("Id")) and readable_time(obj))
        return
    assert isinstance(change, Change)
    assert change.source is Source.POLLING
    assert change.realm_id == "310687" and change.entity == "Invoice"
    assert change.object_id == str(obj["Id"]) and change.object_id
    assert SECOND.fullmatch(change.date)
    assert change.event_type in (EventType.CREATED, EventType.UPDATED, EventType.DELETED)
    if obj.get("status") == "Deleted" or obj.get("Active") is False:
        assert change.event_type is EventType.DELETED
