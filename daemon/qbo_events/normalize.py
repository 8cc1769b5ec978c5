"""Pure: QuickBooks webhook bodies and polled objects -> Change values, and their timestamps."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from .errors import QboEventsError
from .events import Change, EventType, Source
from .quickbooks.resources import canonical_entity

# QuickBooks reads a time without an offset as Pacific time, and so do we.
PACIFIC: Final = ZoneInfo("America/Los_Angeles")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_ISO: Final = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?"
    r"(?P<offset>[Zz]|(?P<sign>[+-])(?P<off_hours>\d{2})(?::?(?P<off_minutes>\d{2}))?)?",
    re.ASCII,
)
_EPOCH_MS: Final = re.compile(r"[+-]?\d+(?:\.\d+)?", re.ASCII)

# operation word, lower-cased -> (QuickBooks' own spelling, event type)
_OPERATIONS: Final = {
    "create": ("Create", EventType.CREATED),
    "update": ("Update", EventType.UPDATED),
    "delete": ("Delete", EventType.DELETED),
    "merge": ("Merge", EventType.UPDATED),
    "void": ("Void", EventType.UPDATED),
    "emailed": ("Emailed", EventType.UPDATED),
}
# CloudEvents verb -> legacy operation; both "void" and "voided" are seen in the wild.
_VERBS: Final = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "void": "Void",
    "voided": "Void",
    "emailed": "Emailed",
}
_CLOUDEVENT_TYPE: Final = re.compile(
    r"qbo\.(?P<entity>[A-Za-z][A-Za-z0-9_]*)\.(?P<verb>[A-Za-z_]+)\.v\d+", re.ASCII
)
_ENTITY_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*", re.ASCII)


class WebhookPayloadError(QboEventsError, ValueError):
    """A correctly signed webhook body that is not a notification we understand; quarantine it."""


def _instant(value: str | int | float) -> datetime:
    """The exact instant of a QuickBooks timestamp, aware, to the microsecond."""
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        return _from_epoch_ms(Decimal(value), value)
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip()
    if _EPOCH_MS.fullmatch(text):
        return _from_epoch_ms(Decimal(text), value)
    match = _ISO.fullmatch(text)
    if match is None:
        raise ValueError(f"not an ISO-8601 date-time or epoch milliseconds: {value[:64]!r}")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    if match["offset"] is None:
        tz: timezone | ZoneInfo = PACIFIC
    elif match["sign"] is None:
        tz = UTC
    else:
        minutes = int(match["off_hours"]) * 60 + int(match["off_minutes"] or 0)
        if minutes >= 24 * 60 or int(match["off_minutes"] or 0) >= 60:
            raise ValueError(f"offset out of range: {value[:64]!r}")
        tz = timezone(timedelta(minutes=-minutes if match["sign"] == "-" else minutes))
    return datetime(
        int(match["year"]),
        int(match["month"]),
        int(match["day"]),
        int(match["hour"]),
        int(match["minute"]),
        int(match["second"] or 0),
        int(fraction),
        tzinfo=tz,
    )


def _from_epoch_ms(ms: Decimal, original: object) -> datetime:
    if not ms.is_finite():
        raise ValueError(f"not a timestamp: {original!r}")
    micros = int((ms * 1000).to_integral_value(rounding=ROUND_FLOOR))
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"epoch milliseconds out of range: {original!r}") from None


def utc_second(value: str | int | float) -> str:
    """`2025-10-07T12:59:07.0343-07:00`, a bare Pacific time or epoch ms -> `2025-10-07T19:59:07Z`.

    Truncated, not rounded, so that `.999` stays in its second as QuickBooks' own second does.
    Raises ValueError for anything else.
    """
    try:
        utc = _instant(value).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp out of range: {value!r}") from None
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    )


def parse_webhook(body: bytes) -> list[Change]:
    """Every entity change of a legacy (`eventNotifications`) or CloudEvents (array) body.

    All or nothing: any structural problem raises WebhookPayloadError, so the caller keeps the
    whole body in quarantine rather than delivering part of it.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WebhookPayloadError(f"body is not JSON: {exc}") from None
    if isinstance(document, dict):
        if "eventNotifications" not in document:
            raise WebhookPayloadError("JSON object without eventNotifications")
        return list(_legacy(document["eventNotifications"]))
    if isinstance(document, list):
        return list(_cloudevents(document))
    raise WebhookPayloadError(f"body is a JSON {type(document).__name__}, not an object or array")


def _legacy(notifications: object) -> Iterator[Change]:
    for n, notification in enumerate(_list(notifications, "eventNotifications")):
        where = f"eventNotifications[{n}]"
        notification = _dict(notification, where)
        realm_id = _ident(notification.get("realmId"), f"{where}.realmId")
        event = _dict(notification.get("dataChangeEvent"), f"{where}.dataChangeEvent")
        entities = _list(event.get("entities"), f"{where}.dataChangeEvent.entities")
        for e, entry in enumerate(entities):
            here = f"{where}.dataChangeEvent.entities[{e}]"
            entry = _dict(entry, here)
            received = entry.get("operation")
            if not isinstance(received, str) or not received.strip():
                raise WebhookPayloadError(f"{here}.operation: missing or not a string")
            raw = {"realmId": realm_id, **{k: v for k, v in entry.items() if k != "realmId"}}
            yield from _changes(
                realm_id=realm_id,
                name=_name(entry.get("name"), f"{here}.name"),
                object_id=_ident(entry.get("id"), f"{here}.id"),
                operation=received,
                date=_date(entry.get("lastUpdated"), f"{here}.lastUpdated"),
                deleted_id=_optional_ident(entry.get("deletedId"), f"{here}.deletedId"),
                raw=raw,
            )


def _cloudevents(events: list[Any]) -> Iterator[Change]:
    for i, event in enumerate(events):
        where = f"[{i}]"
        event = _dict(event, where)
        for attribute in ("specversion", "type"):
            if not isinstance(event.get(attribute), str):
                raise WebhookPayloadError(f"{where}.{attribute}: missing; not a CloudEvent")
        match = _CLOUDEVENT_TYPE.fullmatch(event["type"])
        if match is None:
            raise WebhookPayloadError(
                f"{where}.type: {event['type'][:64]!r} is not qbo.<entity>.<operation>.v<n>"
            )
        data = event.get("data")
        if data is not None and not isinstance(data, dict):
            raise WebhookPayloadError(f"{where}.data: not an object")
        verb = match["verb"]
        deleted = next((v for k, v in (data or {}).items() if k.lower() == "deletedid"), None)
        yield from _changes(
            realm_id=_ident(event.get("intuitaccountid"), f"{where}.intuitaccountid"),
            name=match["entity"],
            object_id=_ident(event.get("intuitentityid"), f"{where}.intuitentityid"),
            operation=_VERBS.get(verb.lower(), verb),
            date=_date(event.get("time"), f"{where}.time"),
            deleted_id=_optional_ident(deleted, f"{where}.data.deletedId"),
            raw=event,
        )


def _changes(
    *,
    realm_id: str,
    name: str,
    object_id: str,
    operation: str,
    date: str,
    deleted_id: str | None,
    raw: dict[str, Any],
) -> Iterator[Change]:
    spelling, event_type = _OPERATIONS.get(operation.lower(), (operation, EventType.UNKNOWN))
    entity = canonical_entity(name)
    yield Change(
        realm_id=realm_id,
        entity=entity,
        object_id=object_id,
        event_type=event_type,
        date=date,
        source=Source.WEBHOOK,
        raw=raw,
        operation=spelling,
        deleted_id=deleted_id,
    )
    # The merged-away record gets no notification of its own; without this it would never be
    # reported gone.
    if spelling == "Merge" and deleted_id is not None:
        yield Change(
            realm_id=realm_id,
            entity=entity,
            object_id=deleted_id,
            event_type=EventType.DELETED,
            date=date,
            source=Source.WEBHOOK,
            raw=raw,
            operation=spelling,
        )


def change_from_object(realm_id: str, entity: str, obj: dict[str, Any]) -> Change:
    """A polled object (or CDC tombstone) -> its Change, judged from the object alone.

    Raises ValueError when the object has no Id or no usable MetaData.LastUpdatedTime.
    """
    object_id = obj.get("Id")
    if isinstance(object_id, bool) or not isinstance(object_id, str | int) or object_id == "":
        raise ValueError(f"{entity} object without an Id")
    meta = obj.get("MetaData")
    updated = meta.get("LastUpdatedTime") if isinstance(meta, dict) else None
    if not isinstance(updated, str | int | float) or isinstance(updated, bool):
        raise ValueError(f"{entity} {object_id}: no MetaData.LastUpdatedTime")
    date = utc_second(updated)
    if obj.get("status") == "Deleted" or obj.get("Active") is False:
        # Name-list records are never hard-deleted: QuickBooks deactivates them and its webhooks
        # call that a Delete.
        event_type = EventType.DELETED
    else:
        created = meta.get("CreateTime") if isinstance(meta, dict) else None
        same = created is not None and _instant(created) == _instant(updated)
        event_type = EventType.CREATED if same else EventType.UPDATED
    return Change(
        realm_id=realm_id,
        entity=canonical_entity(entity),
        object_id=str(object_id),
        event_type=event_type,
        date=date,
        source=Source.POLLING,
        raw=obj,
    )


def _dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"{where}: expected an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise WebhookPayloadError(f"{where}: expected an array")
    return value


def _ident(value: object, where: str) -> str:
    # Ids are strings in every sample, but a number is unambiguous enough to accept.
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise WebhookPayloadError(f"{where}: missing or empty")


def _optional_ident(value: object, where: str) -> str | None:
    return None if value is None or value == "" else _ident(value, where)


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not _ENTITY_NAME.fullmatch(value):
        raise WebhookPayloadError(f"{where}: missing or not an entity name")
    return value


def _date(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise WebhookPayloadError(f"{where}: missing or not a timestamp")
    try:
        return utc_second(value)
    except ValueError as exc:
        raise WebhookPayloadError(f"{where}: {exc}") from None
