"""The fuzz suite's shared settings and strategies: JSON values and near-valid webhook bodies."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Derandomized, so CI sees the same examples on every run and a failure reproduces; no example
# database, so nothing is written into the work tree. QBO_FUZZ_SCALE=10 searches ten times longer.
SCALE = max(1, int(os.environ.get("QBO_FUZZ_SCALE", "1")))


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=True,
        database=None,
        # The fixtures fuzz tests take (a directory of secret files) are read, never changed.
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


# --- JSON values -----------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what orjson can write
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=25,
)

# --- QuickBooks timestamps -------------------------------------------------------------------

OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
INSTANTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
)


def _offset_text(tz: timezone, style: int) -> str:
    delta = tz.utcoffset(None)
    total = int(delta.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    if style == 0:
        return f"{sign}{hours:02d}:{minutes:02d}"
    if style == 1:
        return f"{sign}{hours:02d}{minutes:02d}"
    return "Z" if total == 0 else f"{sign}{hours:02d}:{minutes:02d}"


@st.composite
def qbo_times(draw: st.DrawFn) -> tuple[str, datetime]:
    """A timestamp in one of the forms QuickBooks sends, and the instant it means (to the µs)."""
    instant = draw(INSTANTS)
    tz = draw(OFFSETS)
    local = instant.astimezone(tz)
    digits = draw(st.integers(min_value=0, max_value=12))
    micros = f"{local.microsecond:06d}"
    extra = draw(st.text("0123456789", min_size=max(0, digits - 6), max_size=max(0, digits - 6)))
    fraction = (micros + extra)[:digits]
    expected = instant.replace(microsecond=int(fraction[:6].ljust(6, "0")) if digits else 0)
    body = local.replace(microsecond=0, tzinfo=None).isoformat() + (
        f".{fraction}" if digits else ""
    )
    return body + _offset_text(tz, draw(st.integers(0, 2))), expected


LEGACY_OPERATIONS = ["Create", "Update", "Delete", "Merge", "Void", "Emailed"]
CLOUDEVENT_VERBS = ["created", "updated", "deleted", "merged", "void", "voided", "emailed"]
ENTITIES = ["Invoice", "Customer", "Account", "JournalEntry", "Currency", "Vendor", "Bill"]


def _mutated(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's valid values most of the time, else anything: wrong types, huge numbers,
    odd dates, unicode, nesting."""
    odd = st.one_of(
        JSON,
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.sampled_from(
            [
                "",
                " ",
                "0001-01-01T00:00:00+23:59",
                "9999-12-31T23:59:59-23:59",
                "2025-02-29T00:00:00Z",
                "2025-01-01T00:00:00.Z",
                "1" * 30,
                "1e400",
                "-0",
                "NaN",
                "٢٠٢٥-01-01T00:00:00Z",
                "qbo.invoice.created.v1",
                "\uff29\uff4e\uff56\uff4f\uff49\uff43\uff45",  # fullwidth "Invoice"
                "\u0000",
            ]
        ),
    )
    return st.one_of(valid, valid, valid, odd)


def _maybe_drop(fields: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    doomed = draw(st.sets(st.sampled_from(sorted(fields)), max_size=1))
    return {k: v for k, v in fields.items() if k not in doomed}


IDS = st.one_of(st.from_regex(r"[1-9][0-9]{0,6}", fullmatch=True), st.integers(1, 10**9))
# The realms of the Intuit samples, which the listener tests' instances serve, and any other.
REALMS = st.one_of(st.sampled_from(["310687", "4620816365"]), IDS)
TIMES = st.one_of(qbo_times().map(lambda pair: pair[0]), st.integers(0, 2**45))


@st.composite
def legacy_bodies(draw: st.DrawFn) -> Any:
    """`eventNotifications` documents, mostly valid, with fields mutated or dropped."""
    notifications = []
    for _ in range(draw(st.integers(1, 3))):
        entities = []
        for _ in range(draw(st.integers(0, 3))):
            entity = {
                "name": draw(_mutated(st.sampled_from(ENTITIES))),
                "id": draw(_mutated(IDS)),
                "operation": draw(_mutated(st.sampled_from(LEGACY_OPERATIONS))),
                "lastUpdated": draw(_mutated(TIMES)),
            }
            if draw(st.booleans()):
                entity["deletedId"] = draw(_mutated(IDS))
            if draw(st.integers(0, 4)) == 0:
                entity = _maybe_drop(entity, draw)
            entities.append(entity)
        notification = {
            "realmId": draw(_mutated(REALMS)),
            "dataChangeEvent": draw(_mutated(st.just({"entities": entities}))),
        }
        if draw(st.integers(0, 4)) == 0:
            notification = _maybe_drop(notification, draw)
        notifications.append(notification)
    return {"eventNotifications": draw(_mutated(st.just(notifications)))}


@st.composite
def cloudevent_bodies(draw: st.DrawFn) -> Any:
    """CloudEvents arrays, mostly valid, with fields mutated or dropped."""
    events = []
    for _ in range(draw(st.integers(0, 3))):
        entity = draw(st.sampled_from(ENTITIES)).lower()
        verb = draw(st.sampled_from(CLOUDEVENT_VERBS))
        data: Any = {}
        if verb == "merged" or draw(st.integers(0, 3)) == 0:
            key = draw(st.sampled_from(["deletedId", "deletedid", "DeletedID"]))
            data = {key: draw(_mutated(IDS))}
        event = {
            "specversion": draw(_mutated(st.just("1.0"))),
            "id": draw(st.uuids()).hex,
            "source": "intuit.fuzz",
            "type": draw(_mutated(st.just(f"qbo.{entity}.{verb}.v1"))),
            "datacontenttype": "application/json",
            "time": draw(_mutated(TIMES)),
            "intuitentityid": draw(_mutated(IDS)),
            "intuitaccountid": draw(_mutated(REALMS)),
            "data": draw(_mutated(st.just(data))),
        }
        if draw(st.integers(0, 4)) == 0:
            event = _maybe_drop(event, draw)
        events.append(event)
    return events


WEBHOOK_DOCUMENTS = st.one_of(legacy_bodies(), cloudevent_bodies(), JSON)
