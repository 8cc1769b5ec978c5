"""Pure: the body of one delivery, in the Open Connectors shape or as a structured CloudEvent;
a change's, a connection status's (eventType CONNECTION) or a resync's end (eventType RESYNC)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

from ..events import Connection, Event, Resync

ELEMENT_KEY: Final = "quickbooks"
FORMATS: Final = ("open-connectors", "cloudevents")


CONNECTION_EVENT_TYPE: Final = "CONNECTION"
CONNECTION_SOURCE: Final = "connection"
RESYNC_EVENT_TYPE: Final = "RESYNC"
RESYNC_SOURCE: Final = "resync"


def message(event: Event, *, instance_name: str, tags: Sequence[str]) -> dict[str, Any]:
    """The Open Connectors `message` object of one event."""
    change = event.change
    if event.resync is not None:
        return _resync_message(event, event.resync, instance_name, tags)
    if change is None:
        assert event.connection is not None
        return _connection_message(event, event.connection, instance_name, tags)
    item: dict[str, Any] = {
        "eventType": change.event_type.value,
        "objectType": event.object_type,
        "objectId": change.object_id,
        "elementKey": ELEMENT_KEY,
        "date": change.date,
        "entity": change.entity,
    }
    if change.operation is not None:
        item["operation"] = change.operation
    if change.deleted_id is not None:
        item["deletedId"] = change.deleted_id
    return {
        "eventId": event.event_id,
        "instanceId": instance_name,
        "instanceName": instance_name,
        "instanceTags": list(tags),
        "elementKey": ELEMENT_KEY,
        "companyId": change.realm_id,
        "realmId": change.realm_id,
        "source": change.source.value,
        "events": [item],
        "raw": change.raw,
    }


def _connection_message(
    event: Event, connection: Connection, instance_name: str, tags: Sequence[str]
) -> dict[str, Any]:
    """A connection status in the envelope of a change: receivers that read `events[0]` find an
    eventType no change has, and the realm where a change's is."""
    item: dict[str, Any] = {
        "eventType": CONNECTION_EVENT_TYPE,
        "status": connection.status.value,
        "objectType": event.object_type,
        "objectId": instance_name,
        "elementKey": ELEMENT_KEY,
        "date": connection.date,
        "realmId": connection.realm_id,
    }
    if connection.company_name is not None:
        item["companyName"] = connection.company_name
    if connection.connect_url is not None:
        item["connectUrl"] = connection.connect_url
    return {
        "eventId": event.event_id,
        "instanceId": instance_name,
        "instanceName": instance_name,
        "instanceTags": list(tags),
        "elementKey": ELEMENT_KEY,
        "companyId": connection.realm_id,
        "realmId": connection.realm_id,
        "source": CONNECTION_SOURCE,
        "events": [item],
        "raw": {},
    }


def _resync_message(
    event: Event, resync: Resync, instance_name: str, tags: Sequence[str]
) -> dict[str, Any]:
    """A resync's end in the envelope of a change, as a connection status is."""
    item: dict[str, Any] = {
        "eventType": RESYNC_EVENT_TYPE,
        "status": resync.status.value,
        "objectType": event.object_type,
        "objectId": resync.resync_id,
        "elementKey": ELEMENT_KEY,
        "date": resync.finished,
        "realmId": resync.realm_id,
        "resyncId": resync.resync_id,
        "resources": list(resync.resources),
        "objects": resync.objects,
        "since": resync.since,
        "started": resync.started,
        "finished": resync.finished,
    }
    return {
        "eventId": event.event_id,
        "instanceId": instance_name,
        "instanceName": instance_name,
        "instanceTags": list(tags),
        "elementKey": ELEMENT_KEY,
        "companyId": resync.realm_id,
        "realmId": resync.realm_id,
        "source": RESYNC_SOURCE,
        "events": [item],
        "raw": {},
    }


def render(event: Event, *, instance_name: str, tags: Sequence[str], fmt: str) -> tuple[bytes, str]:
    """(body, Content-Type) of the delivery of `event` in `delivery.format` `fmt`."""
    body = message(event, instance_name=instance_name, tags=tags)
    if fmt == "open-connectors":
        return orjson.dumps({"message": body}), "application/json"
    if fmt == "cloudevents":
        item = body["events"][0]
        if event.connection is not None:
            kind, subject = event.connection.status.value, instance_name
        elif event.resync is not None:
            kind, subject = event.resync.status.value, event.resync.resync_id
        else:
            kind, subject = item["eventType"].lower(), item["objectId"]
        cloudevent = {
            "specversion": "1.0",
            "id": event.event_id,
            "source": f"qbo-events/{instance_name}",
            "type": f"com.quickbooks.{event.object_type}.{kind}",
            "subject": subject,
            "time": item["date"],
            "datacontenttype": "application/json",
            "data": body,
        }
        return orjson.dumps(cloudevent), "application/cloudevents+json"
    raise ValueError(f"unknown delivery format {fmt!r}; known: {', '.join(FORMATS)}")
