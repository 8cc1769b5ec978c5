"""Pure: QuickBooks webhook bodies and polled objects -> Change values."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import orjson

from . import qbtime
from .errors import QboEventsError
from .events import Change, EventType, Source
from .qbtime import utc_second
from .quickbooks.resources import canonical_entity

__all__ = ["WebhookPayloadError", "change_from_object", "parse_webhook", "utc_second"]

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
        event_type = EventType.CREATED if _created_at(meta, updated) else EventType.UPDATED
    return Change(
        realm_id=realm_id,
        entity=canonical_entity(entity),
        object_id=str(object_id),
        event_type=event_type,
        date=date,
        source=Source.POLLING,
        raw=obj,
    )


def _created_at(meta: dict[str, Any] | None, updated: object) -> bool:
    """Whether the object was last updated when it was created. An unreadable CreateTime says
    no: it only tells a create from an update, so it must not cost the change itself."""
    try:
        return qbtime.parse((meta or {}).get("CreateTime")) == qbtime.parse(updated)
    except ValueError:
        return False


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
